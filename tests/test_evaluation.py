"""Evaluation, calibration, report and predict on a real (short) Fashion-MNIST run."""

import csv
import io
import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

import imgcls
from imgcls.cli import main
from imgcls.data.sources import load_source
from imgcls.utils import read_safetensors


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    r = imgcls.train(data="sample", epochs=2, out=str(out), name="r", precision="fp32",
                     channels_last="no", progress=False, log=lambda _: None)
    return r.path


@pytest.fixture(scope="module")
def evaluated(run):
    return imgcls.evaluate(run, reject_below=0.5, log=lambda _: None)


def test_eval_metrics_calibration_and_files(run, evaluated):
    r = evaluated
    assert r["n"] == 1000 and 0.6 < r["top1"] <= 1 and len(r["per_class"]) == 10
    assert sum(sum(row) for row in r["confusion"]) == 1000
    assert sum(p["support"] for p in r["per_class"]) == 1000
    cal = r["calibration"]
    assert cal["nll_after"] <= cal["nll_before"] + 1e-6
    _, meta = read_safetensors(run / "model.safetensors")
    assert meta["preprocess"]["temperature"] == pytest.approx(cal["temperature"])
    assert 0 < r["open_set"]["coverage"] <= 1
    for name in ("curves", "confusion", "reliability", "per_class", "errors"):
        assert (run / "eval-test" / f"{name}.png").stat().st_size > 5000, name
    assert json.loads((run / "eval-test" / "metrics.json").read_text())["n"] == 1000
    card = (run / "model_card.md").read_text()
    assert "Intended use" in card and "Limits" in card and f"{r['top1']:.4f}" in card
    html = (run / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5 and "Most confused pairs" in html


def test_predictions_use_the_stored_temperature(run, evaluated):
    clf = imgcls.load(run)
    t = evaluated["calibration"]["temperature"]
    assert clf.preprocess.temperature == pytest.approx(t)
    test = load_source("sample").test
    x = test.images[:8]
    probs = clf.predict(x)
    with torch.no_grad():
        logits = clf.model(clf.preprocess.normalize(x))
    assert np.allclose(probs, (logits / t).softmax(1).numpy(), atol=1e-5)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium not installed")
def test_report_renders_in_headless_chromium(run, evaluated, tmp_path):
    shot = tmp_path / "shot.png"
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,4200",
         f"--screenshot={shot}", (run / "report.html").as_uri()],
        check=True, timeout=120, capture_output=True)
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape[:2] == (4200, 1280)
    # matplotlib's default blue and orange only appear if the embedded plots were drawn
    blue = (np.abs(img - [31, 119, 180]).sum(2) < 30).sum()
    orange = (np.abs(img - [255, 127, 14]).sum(2) < 30).sum()
    assert blue > 2000 and orange > 2000, (blue, orange)
    assert (img.sum(2) < 200).sum() > 10000  # text and figures, not a blank page


def mixed_folder(tmp_path):
    """Real Fashion-MNIST test images saved as PNG, JPEG, grayscale, RGBA and a big photo-like
    upscale, plus a corrupt file."""
    test = load_source("sample").test
    d = tmp_path / "imgs"
    d.mkdir()
    arr = [test.images[i, 0].numpy() for i in range(4)]
    Image.fromarray(arr[0], "L").save(d / "a_gray.png")
    Image.fromarray(arr[1], "L").convert("RGB").save(d / "b_rgb.jpg", quality=95)
    Image.fromarray(arr[2], "L").convert("RGBA").save(d / "c_rgba.png")
    Image.fromarray(arr[3], "L").resize((280, 200)).convert("RGB").save(d / "d_big.jpg")
    (d / "e_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return d, test.labels[:4].tolist()


def test_predict_folder_with_a_corrupt_file(run, evaluated, tmp_path, capsys):
    d, labels = mixed_folder(tmp_path)
    recs = imgcls.predict(run, [str(d)], top_k=3)
    assert len(recs) == 5 and "error" in recs[4] and "e_corrupt.png" in recs[4]["error"]
    assert set(recs[4]) == {"file", "error"}
    names = imgcls.load(run).classes
    good = [r for r in recs if "error" not in r]
    for r in good:  # one shape: the API's, predict's JSON and CSV, the server's /predict
        assert set(r) == {"file", "label", "probability", "top_k"}
        assert [set(c) for c in r["top_k"]] == [{"label", "probability"}] * 3
        assert r["top_k"][0]["probability"] >= r["top_k"][1]["probability"]
        assert r["label"] == r["top_k"][0]["label"]
        assert r["probability"] == r["top_k"][0]["probability"]
    assert sum(r["label"] == names[y] for r, y in zip(good, labels)) >= 2
    out = tmp_path / "p.csv"
    assert main(["predict", str(run), str(d), "--format", "csv", "-o", str(out)]) == 0
    # only the predicted files count as written predictions; the unreadable one is named
    assert "wrote 4 prediction(s)" in capsys.readouterr().err
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert list(rows[0]) == ["file", "label", "probability", "top_k", "error"]
    assert len(rows) == 5 and rows[4]["error"] and rows[0]["label"] in names
    top = json.loads(rows[0]["top_k"])  # the same list of {label, probability} as JSON's
    assert [set(c) for c in top] == [{"label", "probability"}] * 5  # the default top k
    assert float(rows[0]["probability"]) == top[0]["probability"]
    assert rows[0]["label"] == top[0]["label"]
    assert main(["predict", str(run), str(d / "*.png"), "--format", "json", "--top-k", "3",
                 "-o", str(tmp_path / "p.json")]) == 0
    printed = capsys.readouterr()
    data = json.loads((tmp_path / "p.json").read_text())
    assert [r["file"].split("/")[-1] for r in data] == ["a_gray.png", "c_rgba.png", "e_corrupt.png"]
    assert data[0] == recs[0]  # the CLI's JSON is the API's records
    assert "wrote 2 prediction(s)" in printed.err and "1 file(s) could not be read" in printed.err
    assert "cannot read" in printed.err and "2 predicted, 1 unreadable" in printed.err
    assert main(["predict", str(run), str(d / "table_of_nothing")]) == 2
    # one path on its own, as a str or a Path
    one = imgcls.predict(run, d / "a_gray.png", top_k=3)
    assert one == imgcls.predict(run, str(d / "a_gray.png"), top_k=3) == recs[:1]


def test_cli_eval(run, capsys):
    assert main(["eval", str(run), "--format", "json", "--no-report", "--split", "val"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["split"] == "val" and r["n"] == 500


def test_tta_views_mirror_and_move_the_image_by_one_pixel():
    from imgcls.runtime.forward import tta_views

    x = torch.zeros(1, 1, 7, 7)
    x[0, 0, 3, 2] = 1.0  # one bright pixel, left of the centre and off the edges
    spots = [torch.nonzero(v[0, 0]).tolist() for v in tta_views(x, "shift")]
    assert spots == [[[3, 2]], [[3, 4]],  # the image and its mirror image
                     [[4, 2]], [[2, 2]], [[3, 3]], [[3, 1]],  # moved down, up, right, left
                     [[4, 4]], [[2, 4]], [[3, 5]], [[3, 3]]]  # the mirror image, the same
    assert len(tta_views(x, "flip")) == 2 and len(tta_views(x, "none")) == 1
    with pytest.raises(ValueError, match="tta must be one of none, flip, shift"):
        tta_views(x, "rotate")


def test_cli_eval_with_shift_tta(run, capsys):
    for flags, mode in ((["--tta"], "flip"), (["--tta", "shift"], "shift")):
        assert main(["eval", str(run), "--format", "json", "--no-report", *flags]) == 0
        r = json.loads(capsys.readouterr().out)
        assert r["tta"] == mode and r["n"] == 1000 and r["top1"] > 0.6


# --------------------------------------------------------------------------- report plots
@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions draw, kept open (the functions close them)."""
    from imgcls.report import plots

    figs = []
    monkeypatch.setattr(plots.plt, "close", figs.append)
    return figs


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_legends_leave_bars_and_points_uncovered(tmp_path, drawn):
    from imgcls.report import plots

    per_class = [{"class": f"class {i}", "recall": 1.0, "f1": 0.97} for i in range(10)]
    plots.per_class_bars(per_class, tmp_path / "bars.png")
    bins = {"confidence": [0.15, 0.25, 0.35, 0.55, 0.75, 0.95], "count": [5] * 6,
            "accuracy": [0.9, 0.95, 1.0, 0.2, 0.1, 0.05]}  # points in every corner
    plots.reliability_plot(bins, bins, tmp_path / "rel.png", (0.1, 0.1))
    for fig in drawn:
        fig.canvas.draw()
        ax = fig.axes[0]
        legend = ax.get_legend().get_window_extent()
        marks = [p.get_window_extent() for p in ax.patches if p.get_height()]
        for line in ax.get_lines()[1:]:  # the data, not the diagonal
            for x, y in ax.transData.transform(line.get_xydata()):
                marks.append(type(legend).from_bounds(x - 3, y - 3, 6, 6))
        assert marks and not any(_overlaps(legend, m) for m in marks)


def test_epoch_axes_have_whole_numbers_only(tmp_path, drawn):
    from imgcls.report import plots

    records = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1 / e, "train_top1": 0.5,
                "val_top1": 0.5, "lr": 0.1} for e in (1, 2, 3)]
    plots.training_curves(records, tmp_path / "curves.png")
    for ax in drawn[0].axes:
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(t == int(t) for t in ticks), ticks


def test_error_grid_titles_keep_clear_of_the_row_above(tmp_path, drawn):
    from imgcls.report import plots

    images = torch.randint(0, 255, (30, 1, 8, 8), dtype=torch.uint8)
    labels = torch.arange(30) % 10
    probs = torch.full((30, 10), 0.05).index_fill_(1, torch.tensor([3]), 0.55)
    plots.error_grid(images, labels, probs, [f"class {i}" for i in range(10)],
                     tmp_path / "errors.png")
    fig = drawn[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    grid = np.array(fig.axes).reshape(-1, 6)
    for row in range(1, len(grid)):
        for above, ax in zip(grid[row - 1], grid[row]):
            gap = above.get_window_extent().y0 - ax.title.get_window_extent(renderer).y1
            assert gap >= 3, (row, gap)
    top = max(ax.title.get_window_extent(renderer).y1 for ax in grid[0])
    assert fig._suptitle.get_window_extent(renderer).y0 > top


# --------------------------------------------------------------------------- other data
@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    from conftest import train_digits

    return train_digits(tmp_path_factory)


def digit_folder(root, classes, n=12):
    """Test digits of ``classes`` as PNG files in class folders named as the model's."""
    test = load_source("digits").test
    for c in classes:
        idx = torch.nonzero(test.labels == int(c)).flatten()[:n]
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in idx.tolist():
            Image.fromarray(test.images[i, 0].numpy(), "L").save(root / c / f"{i}.png")
    return root


def test_eval_on_a_folder_of_some_of_the_classes(digits_run, tmp_path, capsys):
    folder = digit_folder(tmp_path / "holdout", ["3", "7"])
    r = imgcls.evaluate(digits_run, data=str(folder), log=lambda _: None)
    assert r["n"] == 24 and r["split"] == "all"
    support = {p["class"]: p["support"] for p in r["per_class"]}
    assert support == {str(i): 12 if i in (3, 7) else 0 for i in range(10)}
    assert r["absent_classes"] == ["0", "1", "2", "4", "5", "6", "8", "9"]
    present = [p for p in r["per_class"] if p["support"]]
    for k in ("precision", "recall", "f1"):  # over the classes present
        assert r["macro"][k] == pytest.approx(np.mean([p[k] for p in present]))
    # the folder's classes are the model's class indices, not the folder's own 0 and 1
    files = sorted(folder.rglob("*.png"))
    pred = imgcls.load(digits_run).predict([str(f) for f in files]).argmax(1)
    assert r["top1"] == pytest.approx(np.mean(pred == [int(f.parent.name) for f in files]))
    assert main(["eval", str(digits_run), "--data", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "absent from these data (support 0): 0, 1, 2, 4, 5, 6, 8, 9" in out
    (folder / "cat").mkdir()
    Image.new("L", (8, 8)).save(folder / "cat" / "0.png")
    with pytest.raises(imgcls.DataError, match="'cat' unknown to the model"):
        imgcls.evaluate(digits_run, data=str(folder), log=lambda _: None)


def test_each_evaluation_keeps_its_own_report(digits_run, tmp_path, capsys):
    own = imgcls.evaluate(digits_run, log=lambda _: None)
    run_report = (digits_run / "report.html").read_bytes()
    assert own["files"]["report"] == str(digits_run / "eval-test" / "report.html")
    assert (digits_run / "eval-test" / "report.html").read_bytes() == run_report
    folder = digit_folder(tmp_path / "holdout", ["1", "2"], n=4)
    assert main(["eval", str(digits_run), "--data", str(folder)]) == 0
    report = digits_run / "eval-holdout-all" / "report.html"
    assert f"report: {report}\n" in capsys.readouterr().out
    assert "holdout" in report.read_text() and (report.parent / "metrics.json").exists()
    assert (digits_run / "report.html").read_bytes() == run_report  # the run's, kept
    assert json.loads((digits_run / "eval-test" / "metrics.json").read_text())["split"] == "test"
