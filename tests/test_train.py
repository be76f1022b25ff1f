import json
import os
import platform
import re
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

import imgcls
from imgcls.cli import main
from imgcls.data.sources import load_source
from imgcls.engine import budget as budget_mod
from imgcls.engine.budget import Budget
from imgcls.engine.schedules import progressive_scale
from imgcls.engine.trainer import Callback
from imgcls.utils import read_safetensors

FAST = dict(precision="fp32", channels_last="no", progress=False)


def test_short_real_training_beats_chance_and_writes_the_run(tmp_path):
    r = imgcls.train(data="sample", epochs=1, out=str(tmp_path), name="s", **FAST)
    assert r.test["top1"] > 0.5  # 10 classes: chance is 0.1
    for f in ("config.yaml", "metrics.jsonl", "split.csv", "model.safetensors",
              "checkpoints/last.safetensors", "summary.json"):
        assert (r.path / f).exists(), f
    rec = r.run.read_metrics()[0]
    assert rec["epoch"] == 1 and rec["val_top1"] > 0.5
    _, meta = read_safetensors(r.path / "model.safetensors")
    assert meta["model"] == "fastnet_s"  # the default, chosen for 28 px images
    assert meta["preprocess"]["class_names"][0] == "T-shirt/top"
    assert meta["preprocess"]["image_size"] == 28 and meta["preprocess"]["channels"] == 1
    # the split manifest holds the stratified 10% of the sample's training images
    rows = (r.path / "split.csv").read_text().splitlines()
    assert rows[0] == "index,label,split" and sum(x.endswith(",val") for x in rows) == 500
    clf = imgcls.load(r.path)
    test = load_source("sample").test
    acc = clf.evaluate(test.images, test.labels, tta=True)["top1"]  # train used flip TTA
    assert acc == pytest.approx(r.test["top1"], abs=1e-6)


def test_progressive_resizing_trains_small_first_and_ends_at_full_size(tmp_path):
    seen = []

    class Sizes(Callback):
        def on_step_end(self, trainer):
            if trainer.state.batch == 1:
                seen.append(next(iter(trainer.train_loader))[0].shape[-1])

    r = imgcls.train(data="digits", image_size=16, epochs=4, progressive_resize=0.5,
                     out=str(tmp_path), name="p", callbacks=[Sizes()], log=lambda _: None,
                     **FAST)
    # the ramp ends at 3 of 4 epochs: 8, 11, 13 pixels, then 16
    assert seen == [8, 11, 13, 16]
    scales = [rec.get("train_scale") for rec in r.history]
    assert scales[:3] == pytest.approx([0.5, 2 / 3, 5 / 6]) and scales[3] is None
    assert r.test["top1"] > 0.5


@pytest.mark.parametrize("budget_s", [37.0, 100.0, 300.0])
def test_a_budget_counts_the_cheaper_epochs_of_progressive_resizing(monkeypatch, budget_s):
    """Epochs at scale s take s^2 of a full-size epoch: the plan fills the budget without
    overrunning it, although its first epochs are four times faster than its last."""
    clock = [0.0]
    monkeypatch.setattr(budget_mod.time, "perf_counter", lambda: clock[0])
    t = SimpleNamespace(loop=SimpleNamespace(progressive_resize=0.5), epochs=4,
                        state=SimpleNamespace(epoch=0), val_loader=None, steps_per_epoch=10,
                        train_loader=SimpleNamespace(batch_size=8))
    t.set_epochs = lambda n: setattr(t, "epochs", n)
    b = Budget(budget_s, "budget", log=lambda _: None)
    b.on_train_start(t)
    while t.state.epoch < t.epochs:
        clock[0] += 10 * progressive_scale(t.state.epoch, t.epochs, 0.5) ** 2
        b.step_end = clock[0]
        t.state.epoch += 1
        b.on_epoch_end(t, {})
    assert 0.75 * budget_s <= clock[0] <= budget_s, (clock[0], t.epochs)


class Interrupt(Callback):
    def __init__(self, at_step):
        self.at_step = at_step

    def on_step_end(self, trainer):
        if trainer.state.step == self.at_step:
            raise KeyboardInterrupt


def planned_epochs(r):
    """The number of epochs a --budget run planned in the end (summary.json records it)."""
    return json.loads((r.path / "summary.json").read_text())["epochs"]


def final_weights(path):
    tensors, _ = read_safetensors(path / "checkpoints" / "last.safetensors")
    return {k: v for k, v in tensors.items() if k.startswith(("model.", "ema."))}


def test_resume_mid_epoch_is_exact(tmp_path):
    cfg = dict(data="digits", epochs=2, batch_size=64, ema=0.9, checkpoint_every=7,
               deterministic=True, out=str(tmp_path), **FAST)
    straight = imgcls.train(name="straight", **cfg)
    with pytest.raises(KeyboardInterrupt):
        imgcls.train(name="cut", callbacks=[Interrupt(at_step=30)], **cfg)
    cut = tmp_path / "cut"
    assert json.loads((cut / "metrics.jsonl").read_text().splitlines()[0])["epoch"] == 1
    resumed = imgcls.train(imgcls.TrainConfig(resume=str(cut), epochs=2, progress=False))
    assert resumed.path == cut
    a, b = final_weights(straight.path), final_weights(cut)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["epoch"] for r in resumed.run.read_metrics()] == [1, 2]
    assert resumed.test["top1"] == straight.test["top1"]


def test_folder_training_skips_bad_files(color_folder, tmp_path):
    r = imgcls.train(data=str(color_folder), model="seed_keras_cnn", epochs=6, lr=0.05,
                     batch_size=8, image_size=16, val_split=0.25, out=str(tmp_path), **FAST)
    skipped = (r.path / "skipped.txt").read_text().splitlines()
    assert len(skipped) == 3 and any("noise.jpg" in s for s in skipped)
    assert r.run.read_metrics()[-1]["val_top1"] == 1.0  # solid colours: a known answer
    clf = imgcls.load(r.path)
    files = [str(color_folder / c / "1.jpg") for c in ("blue", "green", "red")]
    assert clf.predict(files).argmax(1).tolist() == [0, 1, 2]


def test_keras_like_fit_evaluate_predict(tmp_path):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0)[..., None].astype(np.float32)  # (N, 8, 8, 1) floats in 0..1
    y = d.target
    clf = imgcls.Classifier("seed_keras_cnn", **FAST)
    hist = clf.fit(x[:1500], y[:1500], epochs=4, batch_size=32, validation_split=0.1,
                   out=str(tmp_path), verbose=False, augment="none", image_size=16)
    assert len(hist.history["loss"]) == 4 and "val_accuracy" in hist.history
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    with pytest.raises(imgcls.ModelError, match="at least 10 pixels"):
        imgcls.Classifier("seed_keras_cnn").fit(x[:50], y[:50], epochs=1, out=str(tmp_path))
    res = clf.evaluate(x[1500:], y[1500:])
    assert res["top1"] > 0.8
    probs = clf.predict(x[1500:1510])
    assert probs.shape == (10, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_fit_takes_string_labels_and_predict_one_file(tmp_path):
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0)[..., None].astype(np.float32)
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                      "nine"])
    y = names[d.target]  # string labels, as Keras users often hold them
    clf = imgcls.Classifier("seed_keras_cnn", **FAST)
    clf.fit(x[:1500], y[:1500], epochs=3, batch_size=32, out=str(tmp_path), verbose=False,
            augment="none", image_size=16, validation_data=(x[1500:1600], y[1500:1600]))
    assert clf.classes == sorted(names.tolist())  # sorted distinct names
    res = clf.evaluate(x[1600:], y[1600:])  # string labels here too
    assert res["top1"] > 0.7
    assert res == clf.evaluate(x[1600:], [clf.classes.index(v) for v in y[1600:]])
    with pytest.raises(imgcls.DataError, match="'ten' are not among the classes"):
        clf.evaluate(x[:1], ["ten"])
    # one image file, as a str or a Path: probabilities of shape (1, classes)
    path = tmp_path / "digit.png"
    Image.fromarray((x[1600, ..., 0] * 255).round().astype(np.uint8)).save(path)
    one = clf.predict(str(path))
    assert one.shape == (1, 10)
    np.testing.assert_allclose(clf.predict(path), one)
    np.testing.assert_allclose(clf.predict([str(path)]), one)
    np.testing.assert_allclose(clf.predict(x[1600:1601]), one, atol=1e-6)


def test_a_second_fit_continues_from_the_current_weights(tmp_path):
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = d.images[:600, None].astype(np.float32) / 16.0, d.target[:600]
    clf = imgcls.Classifier("seed_keras_cnn", **FAST)
    clf.fit(x, y, epochs=2, batch_size=32, out=str(tmp_path), verbose=False, augment="none",
            image_size=16, validation_split=0.1)
    first = clf.run_path
    trained = {k: v.clone() for k, v in clf.model.state_dict().items()}
    # a learning rate too small to move a weight: what the second fit ends with is what it
    # started from, the first fit's weights (a fresh model would end at its initialisation)
    clf.fit(x, y, epochs=1, batch_size=32, out=str(tmp_path), verbose=False, augment="none",
            image_size=16, validation_split=0.1, lr=1e-12)
    assert clf.run_path != first  # a new run folder, trained from the first one's weights
    cfg = yaml.safe_load((clf.run_path / "config.yaml").read_text())
    assert cfg["pretrained"] == str(first)
    now = clf.model.state_dict()
    for k, v in trained.items():
        torch.testing.assert_close(now[k], v, atol=1e-6, rtol=0, msg=k)


def test_cli_train_eval_and_data_info(tmp_path, capsys):
    rc = main(["train", "--data", "digits", "--epochs", "1", "--out", str(tmp_path),
               "--name", "cli", "--precision", "fp32", "--channels-last", "no",
               "--progress", "false"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and str(tmp_path / "cli") in out
    # the command's phases: start-up (from the process's start) + steps + final passes
    summary = json.loads((tmp_path / "cli" / "summary.json").read_text())
    phases = summary["startup_s"] + summary["train_s"] + summary["teardown_s"]
    assert all(summary[k] > 0 for k in ("startup_s", "train_s", "teardown_s"))
    assert summary["seconds"] <= phases <= summary["seconds"] + 60  # + imports before train()
    assert f"start-up {summary['startup_s']:.1f} s, training" in out
    assert main(["eval", str(tmp_path / "cli"), "--data", "digits", "--format", "json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["n"] == 359 and m["top1"] > 0.3
    assert main(["data", "info", "digits", "--grid", str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g.png").stat().st_size > 1000
    assert main(["train", "--data", "nope"]) == 2
    assert "no such data set name or path" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing"), "--data", "digits"]) == 2
    (tmp_path / "cfg.yaml").write_text("data: digits\nepoch: 2\n")
    assert main(["train", "--config", str(tmp_path / "cfg.yaml")]) == 2
    assert "did you mean epochs" in capsys.readouterr().err


def test_unwritable_run_folder_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(imgcls.RunError, match="cannot create or write the run folder"):
        imgcls.train(data="digits", out=str(blocker / "runs"), **FAST)


def test_streaming_folder_training_uses_the_decode_cache(color_folder, tmp_path):
    """A folder 'too big for memory' streams through DataLoader workers; the second epoch
    reads the decoded-image cache, and bad files are dropped and listed."""
    import os
    from pathlib import Path

    r = imgcls.train(data=str(color_folder), model="seed_keras_cnn", epochs=3, lr=0.05,
                     batch_size=8, image_size=16, val_split=0.25, in_memory="no", workers=2,
                     out=str(tmp_path), **FAST)
    assert r.run.read_metrics()[-1]["val_top1"] == 1.0
    caches = list(Path(os.environ["IMGCLS_HOME"]).glob("stream/*/done.u8"))
    assert len(caches) == 2  # train and val
    done = np.load(caches[0])
    assert set(np.unique(done).tolist()) <= {1, 2}  # every image decoded once, bad ones marked
    skipped = (r.path / "skipped.txt").read_text().splitlines()
    assert len(skipped) == 3 and any("noise.jpg" in s for s in skipped)


def test_tensorboard_event_files(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    r = imgcls.train(data="digits", epochs=2, out=str(tmp_path), tensorboard=True, **FAST)
    acc = EventAccumulator(str(r.path / "tensorboard"))
    acc.Reload()
    assert {"train/loss", "train/top1", "val/top1", "misc/lr"} <= set(acc.Tags()["scalars"])
    vals = [e.value for e in acc.Scalars("val/top1")]
    assert vals == pytest.approx([m["val_top1"] for m in r.run.read_metrics()])


class SlowSteps(Callback):
    """Makes every step much slower than the bare steps the start-up estimate timed."""

    def on_step_end(self, trainer):
        time.sleep(0.05)


def test_budget_is_replanned_from_the_first_epochs(tmp_path):
    r = imgcls.train(data="digits", budget="6s", batch_size=128, out=str(tmp_path), name="b",
                     callbacks=[SlowSteps()], **FAST)
    epochs = planned_epochs(r)
    # 13 steps of >= 50 ms: an epoch takes over 0.65 s, so at most 9 fit in 6 s (5% spare),
    # where the bare-step estimate said dozens
    assert 2 <= epochs <= 9
    assert len(r.run.read_metrics()) == epochs == len(r.history)


class SlowFromEpoch3(Callback):
    def on_step_end(self, trainer):
        if trainer.state.epoch >= 2:
            time.sleep(0.05)


def test_budget_shrinks_when_the_machine_slows_down_mid_run(tmp_path):
    # epochs 1-2 take milliseconds, so dozens are planned; from epoch 3 each takes over
    # 0.65 s: without re-planning the run would train for half a minute
    r = imgcls.train(data="digits", budget="6s", batch_size=128, out=str(tmp_path), name="s",
                     callbacks=[SlowFromEpoch3()], **FAST)
    trained = sum(h["epoch_time_s"] for h in r.history)
    assert trained < 6 * 1.25 and len(r.history) > 3
    assert planned_epochs(r) == len(r.history)


class SimulatedClock(Callback):
    """The budget's clock, advanced by each step: 50 ms per step in the first three epochs,
    25 ms after them, so the test does not depend on the machine's speed."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now

    def on_step_end(self, trainer):
        self.now += 0.05 if trainer.state.epoch < 3 else 0.025


def test_budget_grows_when_the_machine_speeds_up_mid_run(tmp_path, monkeypatch):
    import imgcls.engine.budget as budget
    import imgcls.resolve as resolve

    clock = SimulatedClock()
    monkeypatch.setattr(budget, "time", clock)
    monkeypatch.setattr(resolve, "measure_step", lambda *a, **k: 0.05)
    lines = []
    r = imgcls.train(data="digits", budget="6s", batch_size=128, out=str(tmp_path), name="g",
                     callbacks=[clock], log=lines.append, **FAST)
    planned = {int(m[1]): int(m[2]) for m in (re.match(r"epoch\s+(\d+)/(\d+)", s)
                                              for s in lines) if m}
    # three epochs of 0.5 s each plan a few; the twice as fast ones after them add more
    assert len(r.history) > planned[3]
    assert clock.now < 6


def test_budget_planned_at_one_epoch_grows_when_time_is_left(tmp_path, monkeypatch):
    import imgcls.resolve as resolve

    # the start-up estimate believes 0.3 s per step: one epoch of ~13 steps fits in 6 s, two
    # do not; the real steps take milliseconds, so after epoch 1 more epochs are planned
    monkeypatch.setattr(resolve, "measure_step", lambda *a, **k: 0.3)
    r = imgcls.train(data="digits", budget="6s", batch_size=128, out=str(tmp_path), name="g",
                     **FAST)
    epochs = planned_epochs(r)
    assert epochs > 1 and len(r.history) == epochs


def test_budget_below_one_epoch_is_cut_to_what_the_first_steps_leave_room_for(tmp_path,
                                                                            monkeypatch):
    import imgcls.resolve as resolve
    from imgcls.engine.budget import PROBE_STEPS

    # the start-up estimate believes 20 ms per step: 43 of the sample's 70 batches fit in 1 s
    monkeypatch.setattr(resolve, "measure_step", lambda *a, **k: 0.02)
    r = imgcls.train(data="sample", budget="1s", batch_size=64, out=str(tmp_path), name="f",
                     callbacks=[SlowSteps()], **FAST)
    steps = r.history[0]["step"]
    assert len(r.history) == 1 and PROBE_STEPS <= steps < 30
    # the checkpoint rebuilds exactly that epoch on resume
    _, meta = read_safetensors(r.path / "checkpoints" / "last.safetensors")
    assert meta["state"]["steps_per_epoch"] == steps


def test_plan_timings_are_cached_per_model_and_its_layers(tmp_path, monkeypatch):
    from imgcls.models import create_model
    from imgcls.runtime import plan as precision

    monkeypatch.setenv("IMGCLS_HOME", str(tmp_path))
    timed = []
    monkeypatch.setattr(precision, "_time_steps", lambda m, plan, x, y, steps:
                        timed.append(plan) or 0.1 + 0.1 * plan.channels_last)
    example = (torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long))
    relu = create_model("fastnet_s", num_classes=2, channels=1, image_size=8)
    plan, timings = precision.choose_plan(relu, example, key="fastnet_s")
    assert len(timed) == len(timings) > 1 and not plan.channels_last  # the fastest
    assert precision.choose_plan(relu, example, key="fastnet_s") == (plan, timings)
    assert len(timed) == len(timings)  # the second time from the cache
    # same name, other layers (a builder's default changed): measured afresh
    gelu = create_model("fastnet_s", num_classes=2, channels=1, image_size=8, act="gelu")
    precision.choose_plan(gelu, example, key="fastnet_s")
    assert len(timed) == 2 * len(timings)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc malloc setting")
def test_the_cpu_plan_keeps_freed_memory_for_reuse():
    # a 64 MiB tensor made after a 128 MiB one was freed: glibc maps it afresh (16,384 page
    # faults of 4 KiB) unless choose_plan has told malloc to keep freed memory for reuse
    # (IMGCLS_MALLOC=system: it has not)
    code = """if True:
        import resource, torch
        from imgcls.runtime.plan import choose_plan
        from imgcls.models import create_model
        model = create_model("fastnet_s", num_classes=2, channels=1, image_size=8)
        choose_plan(model, (torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long)),
                    precision="fp32", channels_last="no")
        torch.ones(2**25)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.ones(2**24)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)"""
    faults = {}
    for mode in ("imgcls", "system"):
        env = {**os.environ, "IMGCLS_MALLOC": mode}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True).stdout
        faults[mode] = int(out)
    assert faults["system"] > 10_000 and faults["imgcls"] < 1_000, faults


def test_budget_estimate_is_timed_now_not_taken_from_the_plan_cache(tmp_path, monkeypatch):
    from imgcls.runtime import plan as precision

    # the plan cache says 10 s per step (measured at another hour, the machine much slower):
    # planning from it would fit no epoch in 6 s; the steps timed at start-up fit several
    monkeypatch.setattr(precision, "_cached_timings", lambda kind, key, model, shape,
                        candidates, measure: {precision.plan_name(c): 10.0 for c in candidates})
    lines = []
    r = imgcls.train(data="digits", budget="6s", batch_size=128, out=str(tmp_path), name="c",
                     precision="auto", channels_last="auto", progress=False, log=lines.append)
    estimate = next(s for s in lines if s.startswith("budget 6s"))
    ms = re.fullmatch(r"budget 6s: \d+ epoch\(s\) at (\d+) ms/step", estimate)
    assert ms and int(ms[1]) < 1000 and len(r.history) > 1, estimate


def _one_line_error(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


@pytest.mark.parametrize("layout", ["folder", "csv", "csv-other-class-only-in-test"])
def test_one_class_is_an_error_before_any_image_is_decoded(tmp_path, capsys, monkeypatch,
                                                           layout):
    from conftest import make_image

    import imgcls.data.prepare as prepare

    for i in range(5):
        make_image(tmp_path / "data" / "cat" / f"{i}.png", (200, 10 * i, 0))
    data = tmp_path / "data"
    if layout != "folder":
        rows = [f"cat/{i}.png,cat" for i in range(5)]
        if layout.endswith("test"):
            make_image(tmp_path / "data" / "dog" / "0.png", (0, 0, 200))
            rows.append("dog/0.png,dog,test")
        data = tmp_path / "data" / "list.csv"
        data.write_text("\n".join(rows) + "\n")
    monkeypatch.setattr(prepare, "materialize", lambda *a, **k: pytest.fail("decoded"))
    rc, err = _one_line_error(capsys, ["train", "--data", str(data), "--epochs", "1",
                                       "--out", str(tmp_path / "runs"), "--progress", "false"])
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("imgcls: error:") and "two classes or more" in err[0]
    assert "only the class 'cat' (5 image(s))" in err[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_one_readable_class_left_after_skipping_unreadable_images_is_an_error(tmp_path,
                                                                              capsys):
    from conftest import make_image

    for i in range(5):
        make_image(tmp_path / "data" / "cat" / f"{i}.png", (200, 10 * i, 0))
        (tmp_path / "data" / "dog").mkdir(exist_ok=True)
        (tmp_path / "data" / "dog" / f"{i}.png").write_bytes(b"not a png")
    rc, err = _one_line_error(capsys, ["train", "--data", str(tmp_path / "data"), "--epochs",
                                       "1", "--out", str(tmp_path / "runs"),
                                       "--progress", "false"])
    assert rc == 2 and len(err) == 1 and "two classes or more" in err[0]
    assert "once 5 unreadable image(s) are skipped" in err[0]


def test_ties_on_val_accuracy_go_to_the_lower_val_loss():
    from types import SimpleNamespace

    from imgcls.engine.callbacks import BestModel, EarlyStopping

    saved, logged = [], []
    best, stop = BestModel(lambda t: saved.append(t.state.epoch)), EarlyStopping(2, logged.append)
    t = SimpleNamespace(state=SimpleNamespace(epoch=0, stop=False))
    # (val top-1, val loss) per epoch: epoch 3 ties epoch 2's accuracy at a lower loss,
    # epoch 4 ties it at a higher one, epoch 5 has a better accuracy
    for top1, loss in [(0.90, 0.30), (0.95, 0.1712), (0.95, 0.0984), (0.95, 0.12),
                       (0.96, 0.2)]:
        t.state.epoch += 1
        record = {"epoch": t.state.epoch, "val_top1": top1, "val_loss": loss}
        best.on_epoch_end(t, record)
        stop.on_epoch_end(t, record)
        if t.state.epoch == 3:
            assert (best.epoch, best.top1, best.loss) == (3, 0.95, 0.0984)
            assert stop.bad_epochs == 0  # a tie at a lower loss is progress
    assert saved == [1, 2, 3, 5] and best.epoch == 5 and not t.state.stop
    # a resumed run keeps the tie-break, also from a checkpoint that has no loss yet
    again = BestModel(lambda t: None)
    again.load_state_dict(best.state_dict())
    assert (again.top1, again.loss, again.epoch) == (0.96, 0.2, 5)
    again.load_state_dict({"top1": 0.96, "epoch": 5})
    assert again.loss == float("inf")


def _files(folder):
    """Every file of ``folder`` with its modification time and contents."""
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_resuming_a_finished_run_says_so_and_changes_nothing(tmp_path, capsys):
    flags = ["--data", "digits", "--epochs", "1", "--precision", "fp32", "--channels-last",
             "no", "--progress", "false"]
    assert main(["train", *flags, "--out", str(tmp_path), "--name", "done"]) == 0
    run = tmp_path / "done"
    before = _files(run)
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"{run} is complete (1 epochs trained)" in out and "summary.json" in out
    assert "resumed" not in out and "test accuracy" in out and "run saved" not in out
    assert _files(run) == before  # no file written, none added, none removed
    r = imgcls.train(imgcls.TrainConfig(resume=str(run), epochs=1, progress=False))
    assert r.unchanged and len(r.history) == 1
    assert r.test == json.loads((run / "summary.json").read_text())["test"]
    assert _files(run) == before


def test_config_yaml_holds_the_epochs_a_budget_trained_and_repeats_them(tmp_path,
                                                                        monkeypatch):
    import imgcls.engine.budget as budget
    import imgcls.resolve as resolve

    clock = SimulatedClock()  # 0.5 s per epoch, then 0.25 s from the fourth: more fit
    monkeypatch.setattr(budget, "time", clock)
    monkeypatch.setattr(resolve, "measure_step", lambda *a, **k: 0.05)
    lines = []
    r = imgcls.train(data="digits", budget="3s", batch_size=128, model="seed_torch_cnn",
                     out=str(tmp_path), name="b", callbacks=[clock], log=lines.append, **FAST)
    first = next(int(m[1]) for m in (re.match(r"budget 3s: (\d+) epoch", s) for s in lines)
                 if m)
    epochs = planned_epochs(r)
    saved = imgcls.TrainConfig.from_yaml(r.path / "config.yaml")
    assert epochs != first and saved.epochs == epochs == len(r.history)
    assert saved.budget == "3s"
    # --config repeats the run: the epochs it trained, which the budget no longer re-plans
    monkeypatch.undo()
    again = imgcls.train(saved.replace(out=str(tmp_path), name="again"), log=lines.append)
    assert len(again.history) == epochs == planned_epochs(again)
    # a finished run extended on resume records the new number too
    more = imgcls.train(imgcls.TrainConfig(resume=str(r.path), epochs=epochs + 1,
                                           progress=False), log=lines.append)
    assert len(more.run.read_metrics()) == epochs + 1
    assert imgcls.TrainConfig.from_yaml(r.path / "config.yaml").epochs == epochs + 1


def test_an_early_stopped_run_killed_before_its_summary_does_not_train_on(tmp_path):
    """With a learning rate of ~0 the validation figures soon stop improving: early stopping
    (patience 1) ends the run before its 6 epochs. Killed in its final passes (no summary
    yet), the resumed run gives its final figures and trains no further epoch."""
    kw = dict(data="digits", epochs=6, early_stop=1, lr=1e-12, out=str(tmp_path), name="es",
              progress=False, precision="fp32", channels_last="no")
    r = imgcls.train(**kw, log=lambda _: None)
    trained = len(r.history)
    assert trained < 6
    (r.path / "summary.json").unlink()  # as if killed during the final passes
    lines = []
    again = imgcls.train(imgcls.TrainConfig(resume=str(r.path), progress=False),
                         log=lines.append)
    assert any("after its training ended: its final figures follow" in s for s in lines)
    assert len(again.run.read_metrics()) == trained and again.test is not None
    assert json.loads((r.path / "summary.json").read_text())["epochs"] == 6
