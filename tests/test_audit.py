"""The data audit: planted label errors, exact and near copies across and within splits and
planted outliers are found in generated data with a known answer; the user's files are
never touched; the margins every run records, Grad-CAM and the copy tests checked against
reference definitions."""

import csv
import hashlib
import io
import math
import os
import shutil

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import imgcls
from imgcls.audit import COLUMNS, ISSUES, audit
from imgcls.audit.copies import find_copies, match
from imgcls.audit.labels import area_under_margin, held_out_label_issues
from imgcls.cli import main
from imgcls.engine.callbacks import margins
from imgcls.errors import RunError

FAST = dict(precision="fp32", channels_last="no", progress=False, log=lambda _: None)
CLASSES = ("horizontal", "vertical", "square", "diagonal")


def pattern(kind: str, rng: np.random.Generator, size: int = 16) -> np.ndarray:
    """A grey image of ``kind`` with a random phase, contrast and noise."""
    y, x = np.mgrid[:size, :size]
    phase, period = rng.integers(0, 4), 4
    if kind == "horizontal":
        img = ((y + phase) % period < 2).astype(float)
    elif kind == "vertical":
        img = ((x + phase) % period < 2).astype(float)
    elif kind == "diagonal":
        img = ((x + y + phase) % period < 2).astype(float)
    else:
        c, r = size // 2 + rng.integers(-2, 3, 2), rng.integers(3, 6)
        img = ((abs(y - c[0]) < r) & (abs(x - c[1]) < r)).astype(float)
    # a random shading: distinct images of a class differ by more than their noise
    angle, amp = rng.uniform(0, 2 * np.pi), rng.uniform(20, 60)
    shade = amp * (x * np.cos(angle) + y * np.sin(angle)) / size
    img = 40 + img * rng.uniform(120, 160) + shade + rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """DATA/{train,test}/<class>/ with a known answer: 4 training images moved to a wrong
    class, 2 test images copied into train exactly and 2 as near copies (JPEG re-encoded,
    1-px crop), one training image duplicated within train, a noise image, a blank image and
    a broken file."""
    root = tmp_path_factory.mktemp("planted") / "data"
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 12)):
        for c in CLASSES:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(pattern(c, rng)).save(root / split / c / f"{c}{i}.png")
    moved = []
    for i, (src, dst) in enumerate(
        [
            ("horizontal", "vertical"),
            ("vertical", "square"),
            ("square", "diagonal"),
            ("diagonal", "horizontal"),
        ]
    ):
        f = root / "train" / src / f"{src}{i}.png"
        shutil.move(f, root / "train" / dst / f"moved{i}.png")
        moved.append((f"train/{dst}/moved{i}.png", src))
    leaks = []
    for i, c in enumerate(CLASSES):
        t = root / "test" / c / f"{c}{i}.png"
        copy = root / "train" / c / f"copy{i}.png"
        img = Image.open(t)
        if i < 2:
            shutil.copy(t, copy)  # exact
        elif c == "diagonal":
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=90)
            copy = copy.with_suffix(".jpg")
            copy.write_bytes(buf.getvalue())
        else:  # cropped a pixel a side: a square (2-px stripes cropped and resampled
            # at 16 px change beyond a copy's: benchmarks/audit.md)
            img.crop((1, 1, 15, 15)).resize((16, 16), Image.BILINEAR).save(copy)
        leaks.append((f"train/{c}/{copy.name}", f"test/{c}/{t.name}"))
    shutil.copy(
        root / "train" / "square" / "square30.png", root / "train" / "square" / "square30-again.png"
    )
    noise = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    Image.fromarray(noise).save(root / "train" / "square" / "noise.png")
    Image.new("L", (16, 16), 128).save(root / "train" / "horizontal" / "blank.png")
    (root / "train" / "vertical" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return root, moved, leaks


def digest_tree(root):
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def audited(planted, tmp_path_factory, one_thread):
    root, moved, leaks = planted
    before = digest_tree(root)
    out = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMGCLS_HOME", str(tmp_path_factory.mktemp("home")))
        r = imgcls.train(
            data=str(root),
            model="fastnet_s",
            epochs=12,
            batch_size=16,
            val_split=0.0,
            out=str(out),
            name="planted",
            **FAST,
        )
        result = imgcls.load(r.path, device="cpu").audit(log=lambda _: None)
    return root, moved, leaks, before, r, result


def rel(root, name):
    return os.path.relpath(name, root) if os.path.isabs(name) else name


def test_planted_label_errors_copies_and_outliers_are_found(audited):
    root, moved, leaks, _, r, result = audited
    rows = list(csv.DictReader(open(r.path / "audit" / "audit.csv")))
    assert tuple(rows[0].keys()) == COLUMNS
    by = {i: [row for row in rows if row["issue"] == i] for i in ISSUES}
    label = {rel(root, row["file"]): row["suggested"] for row in by["label"]}
    for f, true in moved:
        assert label.get(f) == true, (f, label)
    assert len(label) <= 2 * len(moved)  # precise: at most as many again flagged
    pairs = {(rel(root, x["file"]), rel(root, x["other_file"])) for x in by["leak"]}
    assert set(leaks) <= pairs
    dup = {frozenset((rel(root, x["file"]), rel(root, x["other_file"]))) for x in by["duplicate"]}
    assert frozenset(("train/square/square30.png", "train/square/square30-again.png")) in dup
    assert len(pairs) + len(dup) == len(leaks) + 1  # no false pairs
    outliers = {rel(root, x["file"]) for x in by["outlier"]}
    assert {"train/square/noise.png", "train/vertical/broken.png"} <= outliers
    blank = [x for x in by["outlier"] if x["file"].endswith("blank.png")]
    assert len(blank) == 1 and blank[0]["score"] == "inf"
    # leaks first, then the other issues; each sorted by score, highest first
    order = [ISSUES.index(row["issue"]) for row in rows]
    assert order == sorted(order)
    for i in ISSUES:
        scores = [float(x["score"]) for x in by[i]]
        assert scores == sorted(scores, reverse=True)


def test_the_audit_never_touches_user_files(audited):
    root, _, _, before, _, _ = audited
    assert digest_tree(root) == before


def test_the_report_section_has_thumbnails_and_heatmaps(audited):
    _, _, _, _, r, result = audited
    page = (r.path / "audit" / "report.html").read_text()
    assert "Data audit" in page and "Grad-CAM" in page
    assert page.count("data:image/png;base64,") >= 10
    imgcls.evaluate(r.path, log=lambda _: None)  # the run's report includes the section
    assert "Data audit" in (r.path / "report.html").read_text()


def test_cli_audit_and_predict_explain(audited, tmp_path, capsys):
    root, _, _, _, r, _ = audited
    assert main(["audit", str(r.path), "--no-report", "--format", "json"]) == 0
    rows = __import__("json").loads(capsys.readouterr().out)
    assert {x["issue"] for x in rows} == set(ISSUES)
    cams = tmp_path / "cams"
    files = [str(root / "test" / c / f"{c}5.png") for c in CLASSES]
    assert main(["predict", str(r.path), *files, "--explain", str(cams)]) == 0
    written = sorted(p.name for p in cams.iterdir())
    assert len(written) == 4 and all(n.endswith(".gradcam.png") for n in written)


def test_audit_of_a_folder_that_is_not_a_run_says_so(tmp_path, capsys):
    with pytest.raises(RunError, match="no such run folder"):
        audit(tmp_path / "nothing")
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert main(["audit", str(tmp_path)]) == 2
    assert "config.yaml" in capsys.readouterr().err


def test_a_run_without_margins_is_audited_without_training_labels(audited, tmp_path):
    _, _, _, _, r, _ = audited
    old = tmp_path / "old-run"
    shutil.copytree(r.path, old, ignore=shutil.ignore_patterns("audit", "report.html"))
    (old / "train_margins.safetensors").unlink()
    said = []
    result = audit(old, report=False, log=said.append)
    assert "trained before imgcls recorded margins" in result.label_evidence
    assert all(f.split != "train" for f in result.of("label"))
    assert result.of("leak") and any("warning" in s for s in said)


# ---- reference definitions on random inputs


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 8), st.integers(2, 6), st.integers(0, 2**31 - 1))
def test_margins_match_the_definition(n, c, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g)
    labels = torch.randint(0, c, (n,), generator=g)
    m, other = margins(logits, labels)
    for i in range(n):
        rest = [(float(logits[i, k]), k) for k in range(c) if k != int(labels[i])]
        best, k = max(rest)
        assert float(m[i]) == pytest.approx(float(logits[i, labels[i]]) - best, abs=1e-6)
        assert int(other[i]) == k


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_area_under_margin_is_the_mean_over_seen_epochs(epochs, n, seed):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(epochs, n, generator=g)
    m[torch.rand(epochs, n, generator=g) < 0.3] = math.nan
    aum = area_under_margin(m)
    for i in range(n):
        seen = [float(v) for v in m[:, i] if not math.isnan(v)]
        if seen:
            assert float(aum[i]) == pytest.approx(sum(seen) / len(seen), abs=1e-5)
        else:
            assert math.isnan(aum[i])


def test_training_records_margins_of_every_image_every_epoch(tmp_path):
    from imgcls.audit.labels import read_margins

    r = imgcls.train(data="digits", epochs=2, out=str(tmp_path), name="m", **FAST)
    m = read_margins(r.path / "train_margins.safetensors")
    n = sum(1 for line in open(r.path / "split.csv") if line.endswith(",train\n"))
    bs = __import__("yaml").safe_load((r.path / "config.yaml").read_text())["batch_size"]
    assert m.margin.shape == (2, n)
    # every image of each epoch's full batches: the last, partial one is dropped
    assert (m.margin.isnan().sum(1) == n % bs).all()
    seen = ~m.margin.isnan()
    assert ((m.runner_up[seen] >= 0) & (m.runner_up[seen] < 10)).all()
    assert (m.runner_up[~seen] == -1).all()


def test_held_out_issues_follow_the_per_class_thresholds():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.85, 0.15], [0.6, 0.4]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    # thresholds: class 0 mean 0.85, class 1 mean (0.7+0.15+0.4)/3 = 0.4167
    issues = held_out_label_issues(probs, labels)
    assert [(i.index, i.suggested) for i in issues] == [(3, 0)]


def test_grad_cam_of_a_pooled_linear_head_is_the_class_activation_map():
    from imgcls.explain import grad_cam
    from imgcls.models import create_model

    torch.manual_seed(0)
    model = create_model("fastnet_s", num_classes=5, channels=1, image_size=16).eval()
    x = torch.randn(3, 1, 16, 16)
    target = torch.tensor([0, 3, 4])
    cams, _ = grad_cam(model, x, target)
    with torch.no_grad():
        fm = model.forward_features(x)
        w = model.head.fc.weight[target]  # (3, C): CAM of Zhou et al. 2016
        ref = torch.relu((w[:, :, None, None] * fm).sum(1))
        ref = ref / ref.flatten(1).max(1).values.clamp_min(1e-12)[:, None, None]
        ref = torch.nn.functional.interpolate(
            ref[:, None], size=(16, 16), mode="bilinear", align_corners=False
        )[:, 0]
    assert torch.allclose(cams, ref.clamp(0, 1), atol=1e-4)


def test_copies_are_found_and_distinct_images_are_not():
    rng = np.random.default_rng(1)
    base = [pattern(CLASSES[i % 4], rng, 28) for i in range(40)]
    jpeg = io.BytesIO()
    Image.fromarray(base[0]).save(jpeg, "JPEG", quality=85)
    brighter = np.clip(base[1].astype(int) * 0.9 + 15, 0, 255).astype(np.uint8)
    crop = Image.fromarray(base[2]).crop((1, 1, 27, 27)).resize((28, 28), Image.BILINEAR)
    extra = [np.array(Image.open(jpeg)), brighter, np.array(crop), base[3]]
    images = torch.from_numpy(np.stack(base + extra))[:, None]
    pairs = {(p.a, p.b): p.exact for p in find_copies(images)}
    assert pairs == {(0, 40): False, (1, 41): False, (2, 42): False, (3, 43): True}


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([1, 3]), st.sampled_from([20, 70]))
def test_an_image_matches_its_recoloured_self(seed, channels, size):
    rng = np.random.default_rng(seed)
    img = torch.from_numpy(rng.integers(0, 190, (2, channels, size, size), dtype=np.uint8))
    corr, patch = match(img, (img.float() * 1.2 + 20).round().to(torch.uint8))
    assert torch.allclose(corr, torch.ones(2), atol=1e-4)
    assert (patch < 1e-3).all()


def test_a_template_with_other_details_is_not_a_copy_but_its_crops_are():
    """Icons drawn on one template (a calendar with another day, a folder with another
    emblem) match as a whole; only their details differ, in one place."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:96, :96]
    template = np.stack([120 + 80 * np.sin(x / 9.0), 90 + 60 * np.cos(y / 11.0), 100 + x + 0 * y])
    icons = []
    for _ in range(8):
        icon = template.copy()
        icon[:, 60:84, 12:36] = rng.integers(0, 256, (3, 1, 1)) + rng.integers(0, 40, (3, 24, 24))
        icons.append(np.clip(icon, 0, 255).astype(np.uint8).transpose(1, 2, 0))
    crops = [  # 4% a side: no whole number of pixels of the 64 px comparison
        Image.fromarray(icons[0]).crop((4, 4, 92, 92)).resize((96, 96), Image.BILINEAR),
        Image.fromarray(icons[1]).resize((80, 80), Image.BILINEAR).resize((96, 96)),
    ]
    images = torch.from_numpy(np.stack(icons + [np.array(c) for c in crops])).permute(0, 3, 1, 2)
    assert {(p.a, p.b) for p in find_copies(images)} == {(0, 8), (1, 9)}


def test_cli_train_audit_audits_when_training_ends(tmp_path, one_thread):
    argv = ["train", "--data", "digits", "--epochs", "1", "--out", str(tmp_path), "--name",
            "a", "--precision", "fp32", "--channels-last", "no", "--progress", "false",
            "--audit"]  # fmt: skip
    assert main(argv) == 0
    run = tmp_path / "a"
    rows = list(csv.DictReader(open(run / "audit" / "audit.csv")))
    assert all(r["issue"] in ISSUES for r in rows)
    assert (run / "audit" / "report.html").exists() and (run / "audit" / "summary.json").exists()


def test_a_resumed_run_keeps_the_margins_of_its_first_epochs(tmp_path, one_thread):
    from imgcls.audit.labels import read_margins

    r = imgcls.train(data="digits", epochs=1, out=str(tmp_path), name="r", **FAST)
    first = read_margins(r.path / "train_margins.safetensors")
    imgcls.train(resume=str(r.path), epochs=2, progress=False, log=lambda _: None)
    both = read_margins(r.path / "train_margins.safetensors")
    assert both.margin.shape == (2, first.images)
    assert torch.equal(both.margin[0].nan_to_num(9), first.margin[0].nan_to_num(9))


def test_a_streamed_run_of_large_images_is_audited_with_small_images_in_memory(
    tmp_path, one_thread
):
    """A run on images larger than the copy check needs keeps them at 64 px in memory; the
    model sees them at the run's size, streamed from the files as the run read them."""
    from imgcls.audit.data import KEEP, run_data
    from imgcls.config import TrainConfig
    from imgcls.data.dataset import FileDataset
    from imgcls.run import load_run_model

    rng = np.random.default_rng(3)
    root = tmp_path / "big"
    for split, n in (("train", 10), ("test", 4)):
        for c in CLASSES:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                img = np.kron(pattern(c, rng, 24), np.ones((4, 4), np.uint8))  # 96 px
                Image.fromarray(img).save(root / split / c / f"{c}{i}.png")
    shutil.copy(root / "test" / "square" / "square0.png", root / "train" / "square" / "copy.png")
    near = Image.open(root / "test" / "square" / "square1.png").crop((4, 4, 92, 92))
    near.resize((96, 96), Image.BILINEAR).save(root / "train" / "square" / "near.png")
    r = imgcls.train(data=str(root), model="fastnet_s", epochs=2, image_size=80,
                     in_memory="no", val_split=0.0, out=str(tmp_path / "runs"), name="big",
                     **FAST)  # fmt: skip
    result = imgcls.load(r.path, device="cpu").audit(log=lambda _: None)
    leaks = {(os.path.basename(f.file), os.path.basename(f.other_file)) for f in result.of("leak")}
    assert {("copy.png", "square0.png"), ("near.png", "square1.png")} <= leaks
    assert (r.path / "audit" / "report.html").exists()
    _, pre, _ = load_run_model(r.path)
    parts = run_data(TrainConfig.from_yaml(r.path / "config.yaml"), pre).parts
    assert all(p.images.images.shape[-1] == KEEP < pre.image_size == 80 for p in parts)
    assert all(isinstance(p.model_input, FileDataset) for p in parts)  # streamed, as trained
