"""Each documented workflow behaves as a user expects: regressions of defects found by
trying them as a new user would."""

import json
import os

import pytest
import yaml

import imgcls
from imgcls.cli import main
from imgcls.report.html import _tta_note
from imgcls.utils import read_safetensors


def test_importing_imgcls_leaves_pillows_bomb_guard_alone(fresh_python):
    code = ("from PIL import Image; before = Image.MAX_IMAGE_PIXELS; import imgcls, "
            "imgcls.runtime.images, imgcls.prediction; print(Image.MAX_IMAGE_PIXELS == before "
            "and before is not None)")
    assert fresh_python(code) == "True"


def test_the_report_names_the_tta_that_was_used():
    assert _tta_note("none") == "" and _tta_note(False) == "" and _tta_note(None) == ""
    assert _tta_note(True) == ", flip TTA" and _tta_note("flip") == ", flip TTA"
    assert _tta_note("shift") == ", shift TTA"


def test_config_mistakes_are_one_line_errors(tmp_path, capsys):
    from imgcls.cli import main
    from imgcls.config import TrainConfig, parse_duration

    (tmp_path / "run.yaml").write_text("lr: 1e-2\nweight_decay: 5e-4\n")
    cfg = TrainConfig.from_yaml(tmp_path / "run.yaml")
    assert cfg.lr == 0.01 and cfg.weight_decay == 0.0005
    assert main(["train", "--lr", "-1", "--out", str(tmp_path)]) == 2
    assert "lr: must be positive" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["train", "--epocs", "3"])
    assert e.value.code == 2 and "did you mean --epochs?" in capsys.readouterr().err
    assert parse_duration("5min") == parse_duration("5 minutes") == parse_duration("5m") == 300
    assert parse_duration("1.5 hours") == 5400


def test_the_resolved_config_holds_what_the_run_used(tmp_path):
    r = imgcls.train(data="digits", epochs=1, out=str(tmp_path), progress=False)
    cfg = yaml.safe_load((r.path / "config.yaml").read_text())
    assert cfg["lr"] > 0 and cfg["label_smoothing"] == 0.1 and cfg["image_size"] == 8
    assert cfg["tta"] in ("none", "flip") and cfg["model"] and cfg["batch_size"]
    assert cfg["channels"] == 1 and isinstance(cfg["flip"], bool)


def test_resume_refuses_a_changed_key_and_applies_epochs(tmp_path):
    r = imgcls.train(data="digits", epochs=1, batch_size=64, out=str(tmp_path), name="a",
                     progress=False)
    with pytest.raises(imgcls.ConfigError, match="lr cannot change on --resume"):
        imgcls.train(resume=str(r.path), lr=0.5)
    more = imgcls.train(resume=str(r.path), epochs=2, progress=False)
    assert [m["epoch"] for m in more.run.read_metrics()] == [1, 2]


def test_a_run_that_fails_before_training_leaves_no_run_folder(tmp_path):
    with pytest.raises(imgcls.ModelError):
        imgcls.train(data="digits", model="no_such_model", out=str(tmp_path), progress=False)
    with pytest.raises(imgcls.DataError):
        imgcls.train(data=str(tmp_path / "missing"), out=str(tmp_path), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_evaluating_a_run_does_not_change_its_predictions(tmp_path):
    r = imgcls.train(data="digits", epochs=2, out=str(tmp_path), progress=False)
    _, meta = read_safetensors(r.path / "model.safetensors")
    fitted = meta["preprocess"]["temperature"]
    assert fitted != 1.0  # fitted on the validation split when training ended
    before = (r.path / "model.safetensors").read_bytes()
    result = imgcls.evaluate(r.path, report=False, log=lambda _: None)
    assert (r.path / "model.safetensors").read_bytes() == before
    assert result["calibration"]["temperature"] == pytest.approx(fitted)
    notes = []
    imgcls.evaluate(r.path, report=False, calibrate=True, log=notes.append)  # on purpose
    assert any("fitted on" in n and "stored in" in n for n in notes)


def test_a_resumed_search_does_not_repeat_its_trials(tmp_path):
    import optuna

    from imgcls.config import TrainConfig
    from imgcls.tune import tune

    base = TrainConfig(data="digits", epochs=1, progress=False, model="seed_torch_cnn")
    tune(base, tmp_path, trials=2, log=lambda _: None)
    tune(base, tmp_path, trials=4, log=lambda _: None)  # the same study, started again
    study = optuna.load_study(study_name="imgcls", storage=f"sqlite:///{tmp_path}/study.db")
    params = [t.params for t in study.trials]
    assert len(params) == 4 and params[2] != params[0] and params[3] != params[1]
    # any Optuna storage: a journal file here, an RDB URL across machines
    r = tune(base, tmp_path / "j", trials=1, storage=f"journal:{tmp_path / 'study.log'}",
             log=lambda _: None)
    assert r["trials"] == 1 and (tmp_path / "study.log").stat().st_size > 0


def test_one_colour_image_among_grayscale_ones_keeps_the_model_grayscale(tmp_path):
    from PIL import Image

    from imgcls.data.materialize import infer_channels
    from imgcls.data.sources import load_source

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(5):
            Image.new("L", (12, 12), 40 * i).save(tmp_path / c / f"{i}.png")
    Image.new("RGB", (12, 12), (200, 10, 10)).save(tmp_path / "a" / "colour.jpg")
    assert infer_channels(load_source(str(tmp_path)).train) == 1


def test_cli_help_and_listing(capsys):
    from imgcls.cli import build_parser, main
    from imgcls.models import list_models

    assert build_parser().description.endswith("for each command.")
    assert list_models(family="res*") and set(list_models(family="res*")) == set(
        list_models(family="resnet"))
    assert main(["models", "--family", "nope*", "--no-latency"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("imgcls: error: no model matches") and "resnet" in err
    import argparse

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    bare = [f"{name} {a.option_strings[0]}" for name, p in sub.choices.items()
            for a in p._actions if a.option_strings and a.help is None]
    assert bare == []  # every flag of every command says what it does


def test_unreadable_files_are_named_as_such(tmp_path):
    from PIL import Image

    from imgcls.runtime.images import ImageDecodeError, decode_image

    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageDecodeError, match="empty file"):
        decode_image(tmp_path / "empty.png", 1)
    for c in ("a", "b"):
        (tmp_path / "d" / c).mkdir(parents=True)
        for i in range(6):
            shade = 30 * i + 100 * (c == "b")
            Image.new("L", (10, 10), shade).save(tmp_path / "d" / c / f"{i}.png")
    (tmp_path / "d" / "a" / "broken.png").write_bytes(b"not an image")
    r = imgcls.train(data=str(tmp_path / "d"), epochs=1, out=str(tmp_path / "runs"),
                     progress=False, log=lambda _: None)
    rows = (r.path / "split.csv").read_text().splitlines()
    assert [row for row in rows if "broken.png" in row][0].endswith(",unreadable")
    assert sum(row.endswith((",train", ",val")) for row in rows) == 12


def test_model_speed_does_not_depend_on_the_order_and_listing_is_cached(tmp_path, monkeypatch):
    import time

    from imgcls.models.table import model_table

    monkeypatch.setenv("IMGCLS_HOME", str(tmp_path))
    names = ["seed_keras_cnn", "resnet56"]  # about 20x apart in arithmetic at 28 px
    kw = dict(image_size=28, channels=1, repeats=3, batch_size=8, threads=1)
    ab = {r["name"]: r["latency_ms"] for r in model_table(names, **kw)}
    ba = {r["name"]: r["latency_ms"] for r in model_table(names[::-1], **kw)}
    assert ab["seed_keras_cnn"] < ab["resnet56"] and ba["seed_keras_cnn"] < ba["resnet56"]
    t = time.perf_counter()
    rows = model_table(names, image_size=28, channels=1, latency=False)
    assert time.perf_counter() - t < 0.5 and all(r["flops"] > 0 for r in rows)  # cached


def test_a_flag_raises_the_pixel_limit(tmp_path, monkeypatch):
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / "d" / c).mkdir(parents=True)
        for i in range(6):
            shade = 20 * i + 120 * (c == "b")
            Image.new("L", (10, 10), shade).save(tmp_path / "d" / c / f"{i}.png")
    Image.new("L", (200, 200), 50).save(tmp_path / "d" / "a" / "big.png")  # 40,000 pixels
    kw = dict(data=str(tmp_path / "d"), epochs=1, image_size=10, progress=False,
              log=lambda _: None)
    monkeypatch.delenv("IMGCLS_NO_PROGRESS")  # set for the tests; progress=False must not
    ours = lambda: {k: v for k, v in os.environ.items() if k.startswith("IMGCLS_")}  # noqa: E731
    environ = ours()
    low = imgcls.train(out=str(tmp_path / "low"), max_pixels=10_000, **kw)
    assert "big.png" in (low.path / "skipped.txt").read_text()
    assert "over the limit of 10,000" in (low.path / "skipped.txt").read_text()
    high = imgcls.train(out=str(tmp_path / "high"), max_pixels=100_000, **kw)
    assert not (high.path / "skipped.txt").exists()
    # inference takes its own limit, as a parameter (the default: 50,000,000)
    big = tmp_path / "d" / "a" / "big.png"
    assert "label" in imgcls.predict(high.path, big)[0]
    low_limit = imgcls.predict(high.path, big, max_pixels=10_000)[0]
    assert "over the limit of 10,000" in low_limit["error"]
    assert main(["predict", str(high.path), str(big), "--max-pixels", "10000"]) == 1
    assert main(["predict", str(high.path), str(big), "--format", "json"]) == 0
    assert ours() == environ  # settings are parameters, not environment variables


# --------------------------------------------------------------------------- predict and API
@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    from conftest import train_digits

    return train_digits(tmp_path_factory)


def digit_pngs(folder, n=3, names="digit_{}.png"):
    """The first ``n`` digits test images as PNG files (8x8, grayscale)."""
    from PIL import Image

    from imgcls.data.sources import load_source

    folder.mkdir(parents=True, exist_ok=True)
    test = load_source("digits").test
    paths = [folder / names.format(i) for i in range(n)]
    for i, p in enumerate(paths):
        Image.fromarray(test.images[i, 0].numpy(), "L").save(p)
    return paths


def test_one_pil_image_is_one_row_whatever_its_mode(digits_run, tmp_path):
    import numpy as np
    from PIL import Image

    clf = imgcls.load(digits_run)
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (41, 41, 3), np.uint8))
    gray = np.asarray(rgb.convert("L"))
    images = {m: rgb.convert(m) for m in ("RGB", "RGBA", "LA", "P", "L", "1", "CMYK", "F")}
    images["I;16"] = Image.fromarray(gray.astype(np.uint16) * 257)
    assert images["I;16"].mode == "I;16"
    for mode, img in images.items():
        probs = clf.predict(img)
        assert probs.shape == (1, 10), mode
        assert np.allclose(probs.sum(1), 1, atol=1e-5), mode
    # the conversion rule of image files: the same image saved as a file gives the same row
    images["RGBA"].save(tmp_path / "x.png")
    np.testing.assert_allclose(clf.predict(images["RGBA"]), clf.predict(tmp_path / "x.png"),
                               atol=1e-6)
    assert clf.predict([images["LA"], images["P"], images["L"]]).shape == (3, 10)


def test_top_k_below_one_is_a_usage_error(digits_run, tmp_path, capsys):
    from imgcls.cli import main

    (png,) = digit_pngs(tmp_path, n=1)
    for k in ("0", "-1"):
        assert main(["predict", str(digits_run), str(png), "--top-k", k]) == 2
        err = capsys.readouterr().err
        assert err.startswith("imgcls: error: --top-k must be a whole number of at least 1")
    with pytest.raises(imgcls.ConfigError, match="top_k must be"):
        imgcls.predict(digits_run, png, top_k=0)
    # above the number of classes: every class, once, and as many columns
    assert [len(r["top_k"]) for r in imgcls.predict(digits_run, png, top_k=50)] == [10]
    assert main(["predict", str(digits_run), str(png), "--top-k", "50", "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)[0]["top_k"]) == 10
    assert main(["predict", str(digits_run), str(png), "--top-k", "50"]) == 0


def test_the_predict_table_shows_what_tells_the_files_apart(digits_run, tmp_path, capsys,
                                                            monkeypatch):
    from imgcls.cli import main

    monkeypatch.setenv("COLUMNS", "80")
    deep = tmp_path / ("a_long_folder_name_that_all_files_share_" * 2) / "holdout"
    paths = digit_pngs(deep, n=3, names="holdout_{}.png")
    assert main(["predict", str(digits_run), str(deep)]) == 0
    out = capsys.readouterr().out
    assert all(p.name in out for p in paths), out
    assert str(deep) in out.replace("\n", "")  # named once, above the table


def test_the_api_takes_folders_and_answers_each_file(digits_run, tmp_path):
    import inspect

    import numpy as np

    from imgcls.cli import build_parser
    from imgcls.results import TOP_K
    from imgcls.serve import create_app, load_predictor

    paths = digit_pngs(tmp_path / "d", n=3, names="{}_ok.png")
    (tmp_path / "d" / "1_bad.png").write_bytes(b"not an image")  # sorts second
    clf = imgcls.load(digits_run)
    with pytest.warns(UserWarning, match="1_bad.png"):
        probs = clf.predict(tmp_path / "d")  # a folder, as imgcls.predict takes it
    assert probs.shape == (4, 10) and np.isnan(probs[1]).all()
    np.testing.assert_allclose(probs[[0, 2, 3]], clf.predict(paths), atol=1e-6)
    with pytest.warns(UserWarning):
        assert clf.predict([str(tmp_path / "d" / "*.png")]).shape == (4, 10)  # a glob
    records = clf.predict_files(tmp_path / "d")
    assert records == imgcls.predict(digits_run, tmp_path / "d")
    assert set(records[1]) == {"file", "error"} and "1_bad.png" in records[1]["error"]
    # one top-k default everywhere: the CLI, the API and the server's /predict
    assert len(records[0]["top_k"]) == TOP_K
    assert build_parser().parse_args(["predict", "run", "x.png"]).top_k == TOP_K
    for f in (imgcls.predict, clf.predict_files):
        assert inspect.signature(f).parameters["top_k"].default == TOP_K
    schema = create_app(load_predictor(digits_run)).openapi()
    (param,) = schema["paths"]["/predict"]["post"]["parameters"]
    assert param["name"] == "top_k" and param["schema"]["default"] == TOP_K


def test_predict_names_the_open_set_score_as_eval_does(digits_run, tmp_path):
    """``ood_score`` in imgcls.predict and Classifier.predict_files, as in imgcls.evaluate and
    the --ood-score flag; the old keyword ``score`` still works, with a DeprecationWarning."""
    paths = digit_pngs(tmp_path / "d", n=2)
    clf = imgcls.load(digits_run)
    kept = imgcls.predict(digits_run, paths, reject_below=-1e9, ood_score="energy")
    assert [r["label"] for r in kept] == [r["label"] for r in imgcls.predict(digits_run, paths)]
    # every image's negative free energy is below this: all rejected
    assert all(r["label"] == "unknown" for r in imgcls.predict(
        digits_run, paths, reject_below=1e9, ood_score="energy"))
    for f in (lambda **k: imgcls.predict(digits_run, paths, **k),
              lambda **k: clf.predict_files(paths, **k)):
        with pytest.warns(DeprecationWarning, match="'score' is now 'ood_score'"):
            old = f(reject_below=1e9, score="energy")
        assert old == f(reject_below=1e9, ood_score="energy")


@pytest.mark.parametrize("call", ["as_uint8_images(np.zeros((2, 8, 8), np.uint8))",
                                  "_labels(np.array([0, 1]), 2)"])
def test_read_only_arrays_are_taken_without_a_warning(fresh_python, call):
    """np.asarray of a PIL image and np.frombuffer give read-only arrays, which torch will
    not share (it warns once per process, hence a fresh one for each)."""
    arg = call[call.index("(") + 1:call.rindex(")")].rsplit(", 2", 1)[0]
    code = ("import warnings, numpy as np; from imgcls.api import as_uint8_images, _labels; "
            f"warnings.simplefilter('error'); a = {arg}; a.setflags(write=False); "
            f"{call.replace(arg, 'a')}; print('ok')")
    assert fresh_python(code) == "ok"
