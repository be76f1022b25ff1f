"""Defaults decided from the data, on generated data of known answer: flips off where a
mirror image changes the class, enough steps for a tiny set, class weights for a large
imbalance, a warning (and a restart) for a run that does not learn, and a held-out figure
and an evaluation for a folder without a test split."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import imgcls
from imgcls.config import TrainConfig
from imgcls.data.dataset import ArrayDataset
from imgcls.defaults import flips_keep_class, training_defaults

FAST = dict(precision="fp32", channels_last="no", progress=False)


def arrows(n: int, seed: int = 0, symmetric: bool = False) -> ArrayDataset:
    """16x16 arrows pointing left (class 0) or right (class 1), at random heights and
    lengths; ``symmetric``: bars (0) and crosses (1) instead, which a mirror keeps."""
    g = np.random.default_rng(seed)
    images = np.zeros((n, 1, 16, 16), np.uint8)
    labels = np.arange(n) % 2
    for i, c in enumerate(labels):
        y, a, b = g.integers(4, 12), g.integers(1, 4), g.integers(12, 15)
        images[i, 0, y, a:b] = 255
        if symmetric:
            if c:
                images[i, 0, y - 3:y + 4, (a + b) // 2] = 255
        else:
            tip = a if c == 0 else b - 1
            step = 1 if c == 0 else -1
            for k in range(1, 4):
                images[i, 0, y - k, tip + step * k] = images[i, 0, y + k, tip + step * k] = 255
    noise = g.integers(0, 40, images.shape, dtype=np.uint8)
    return ArrayDataset(torch.from_numpy(np.maximum(images, noise)), torch.from_numpy(labels),
                        ["left", "right"] if not symmetric else ["bar", "cross"])


def test_flips_are_off_where_a_mirror_image_changes_the_class():
    keep, why = flips_keep_class(arrows(400))
    assert keep is False and "keep" in why
    keep, _ = flips_keep_class(arrows(400, symmetric=True))
    assert keep is True


def test_flips_undecided_near_chance():
    noise = ArrayDataset(torch.randint(0, 256, (300, 1, 8, 8), dtype=torch.uint8),
                         torch.arange(300) % 3, ["a", "b", "c"])
    keep, why = flips_keep_class(noise)
    assert keep is None and "too close to chance" in why


def test_a_tiny_set_gets_enough_steps_and_a_large_one_not_hours():
    cfg = TrainConfig()
    tiny, decisions = training_defaults(cfg, [30] * 10, 28)
    assert tiny["batch_size"] == 16 and tiny["epochs"] == 100  # not the 167 of 3,000 steps
    assert "past 100 passes" in next(d.reason for d in decisions if d.key == "epochs")
    small, _ = training_defaults(cfg, [150] * 10, 28)
    assert small["batch_size"] == 32 and small["epochs"] == 66  # 3,000 steps, 46 an epoch
    _, decisions = training_defaults(cfg, [3, 2], 8)
    why = next(d.reason for d in decisions if d.key == "batch_size")
    assert "40 steps per epoch or more" not in why and "1 step(s) per epoch" in why
    large, _ = training_defaults(cfg, [6000] * 10, 28)
    assert large["batch_size"] == 256 and 10 <= large["epochs"] <= 15
    given, decisions = training_defaults(TrainConfig(batch_size=64, epochs=3,
                                                     model="resnet20"), [30] * 10, 28)
    assert given == {"class_weights": "none", "depthwise_decay": True} and decisions == []


def test_a_family_name_trains_its_model_for_the_input_size_with_its_recipe():
    small, why = training_defaults(TrainConfig(model="mobilenet"), [300] * 10, 28)
    assert small["model"] == "mobilenet_mini" and small["depthwise_decay"] is False
    assert [d.key for d in why[:2]] == ["model", "depthwise_decay"]
    assert "MobileNet paper" in why[1].reason
    large, _ = training_defaults(TrainConfig(model="mobilenet"), [300] * 10, 96)
    assert large["model"] == "mobilenet_v2"
    given, _ = training_defaults(TrainConfig(model="xception_mini", depthwise_decay=True),
                                 [300] * 10, 28)
    assert "model" not in given and "depthwise_decay" not in given
    assert training_defaults(TrainConfig(model="resnet"), [300] * 10, 28)[0] == {
        "model": "resnet_mini", "batch_size": 64, "epochs": 66, "class_weights": "none",
        "depthwise_decay": True}


def test_a_large_imbalance_weighs_the_loss():
    changes, decisions = training_defaults(TrainConfig(), [400, 300, 70], 32)
    assert changes["class_weights"] == "auto" and "5.7x" in decisions[-1].reason
    assert training_defaults(TrainConfig(), [400, 300, 200], 32)[0]["class_weights"] == "none"


def write_folder(root, ds: ArrayDataset) -> None:
    for i, (img, y) in enumerate(zip(ds.images, ds.labels)):
        folder = root / ds.classes[int(y)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0].numpy()).save(folder / f"{i}.png")


def test_a_folder_run_decides_reports_and_evaluates_without_a_test_split(tmp_path):
    write_folder(tmp_path / "arrows", arrows(240))
    lines = []
    r = imgcls.train(data=str(tmp_path / "arrows"), epochs=4, out=str(tmp_path / "runs"),
                     log=lines.append, **FAST)
    text = "\n".join(lines)
    assert "defaults chosen from the data" in text and "flip False" in text
    saved = json.loads((r.path / "summary.json").read_text())
    assert saved["held_out"]["split"] == "val" and r.held_out[0] == "val"
    assert "no test split" in text
    # evaluation: the run's own data -> its validation split; another folder -> all of it
    write_folder(tmp_path / "more", arrows(60, seed=5))
    notes = []
    own = imgcls.evaluate(r.path, report=False, log=notes.append)
    other = imgcls.evaluate(r.path, str(tmp_path / "more"), report=False, log=notes.append)
    assert own["split"] == "val" and own["n"] == saved["held_out"]["n"]
    assert other["split"] == "all" and other["n"] == 60
    assert any("evaluating all its images" in n for n in notes)


def test_a_run_that_does_not_learn_says_so_and_starts_over(tmp_path):
    # random labels cannot be learnt in a few epochs: accuracy stays at chance
    g = torch.Generator().manual_seed(0)
    ds = ArrayDataset(torch.randint(0, 256, (256, 1, 8, 8), dtype=torch.uint8, generator=g),
                      torch.randint(0, 4, (256,), generator=g), list("abcd"))
    lines = []
    r = imgcls.train(source=imgcls_source(ds), data="noise", model="seed_torch_cnn",
                     epochs=4, batch_size=32, out=str(tmp_path), log=lines.append, **FAST)
    warnings = [s for s in lines if "not learning" in s]
    assert len(warnings) == 2 and "a tenth of the learning rate" in warnings[0]
    # a tenth of the rate learns random labels no better: back to the rate, no more checks
    assert "labels unrelated to the images" in warnings[-1]
    saved = json.loads((r.path / "summary.json").read_text())
    assert saved["restarts"] == 2 and saved["lr_factor"] == pytest.approx(1.0)
    assert len(r.run.read_metrics()) == 4  # the records of the last start only
    given = []
    imgcls.train(source=imgcls_source(ds), data="noise", model="seed_torch_cnn", epochs=4,
                 batch_size=32, lr=0.05, out=str(tmp_path), log=given.append, **FAST)
    assert [s for s in given if "not learning" in s and "try a lower --lr" in s]


def test_the_learning_check_tells_a_slow_start_from_a_rate_too_high():
    from types import SimpleNamespace

    from imgcls.engine.callbacks import LearningCheck

    def starts(losses: list[float], weighted: bool = False) -> tuple[list[float], list[str]]:
        """The restarts asked for when the successive starts reach ``losses`` at the check."""
        lines, asked = [], []
        t = SimpleNamespace(state=SimpleNamespace(restarts=0))

        def restart(factor: float) -> None:
            asked.append(factor)
            t.state.restarts += 1

        t.request_restart = restart
        check = LearningCheck([50, 20, 20, 10], lines.append, weighted=weighted, after=3,
                              restarts=2)
        for loss in losses:
            check.on_epoch_end(t, {"epoch": 3, "train_top1": 0.3 if loss > 1 else 0.9,
                                   "train_loss": loss})
        return asked, lines

    # a rate too high: the tenth learns better, the hundredth is tried too
    assert starts([1.40, 1.38, 1.30])[0] == [0.1, 0.1]
    # a slow start (hard images): the tenth is slower still, so back to the rate before,
    # and no check after that
    asked, lines = starts([1.37, 1.383, 1.37])
    assert asked == [0.1, 10.0] and "the rate is not the cause" in lines[-1]
    assert len(lines) == 2
    # learning: nothing asked
    assert starts([0.5])[0] == []
    # 30% right at a loss below chance (ln 4 = 1.386): under the largest class's share, but
    # a loss weighted by class does not favour that class; one in four is chance then
    assert starts([1.2])[0] == [0.1] and starts([1.2], weighted=True)[0] == []


def imgcls_source(ds: ArrayDataset):
    from imgcls.data.sources import Source

    return Source("noise", ds)
