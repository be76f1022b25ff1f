"""The data audit against planted answers: real folders with a known share of training
images moved to a wrong class (2%, 5%, 10%) and test images copied into train as exact and
near copies (re-encoded, resized, slightly cropped, recoloured). Measures, per set and noise
rate:

- label issues: precision and recall at the number planted (the N training images of lowest
  area under the margin) and of the audit's own list (AUM < 0); the same for cleanlab's
  ``find_label_issues`` and for the top N by self-confidence, both on 2-fold cross-fitted
  probabilities of the same model and epochs (two half-size runs: the same training budget
  as the audited run);
- leaks: planted copies found (exact, near by kind) and pairs reported among distinct images;
- the audit's cost relative to the training run it audits.

    pip install cleanlab                  # the benchmark's environment only
    python benchmarks/audit.py --sets digits,fashion,icons --noise 0.02,0.05,0.10
    python benchmarks/audit.py --sets fashion --noise 0.05 --no-cleanlab
    python benchmarks/audit.py --copies-only --copies 0.1 --sets digits,fashion,icons,lineart
    python benchmarks/audit.py --outliers 0.02 --sets digits,fashion,icons,lineart

Rows go to benchmarks/audit_results.jsonl (one per set and noise rate).
"""

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _record import append_row
from PIL import Image, ImageEnhance

import imgcls
from imgcls.audit import audit
from imgcls.audit.data import run_data
from imgcls.audit.labels import area_under_margin, read_margins
from imgcls.config import TrainConfig
from imgcls.data.prepare import make_loader
from imgcls.data.sources import Source, load_source
from imgcls.run import load_run_model
from imgcls.runtime.forward import predict_logits
from imgcls.runtime.plan import eval_plan

HERE = Path(__file__).parent
RESULTS = HERE / "audit_results.jsonl"
SUITE = Path(os.environ.get("IMGCLS_SUITE", Path.home() / ".cache" / "imgcls" / "suite"))
NEAR = ("reencode", "resize", "crop", "recolour")


def base_images(name, n_train, n_test, seed=0):
    """{split: [(PIL image, class)]}, classes: the set's real images."""
    rng = np.random.default_rng(seed)
    if name in ("digits", "fashion"):
        src = load_source("digits" if name == "digits" else "fashion-mnist")
        out = {}
        for split, ds, n in (("train", src.train, n_train), ("test", src.test, n_test)):
            idx = rng.permutation(len(ds))[: min(n, len(ds))]
            out[split] = [
                (Image.fromarray(ds.images[i, 0].numpy()), int(ds.labels[i])) for i in idx
            ]
        return out, list(src.train.classes)
    root = SUITE / name
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    out = {}
    for split, folder in (("train", root), ("test", SUITE / f"{name}-test")):
        items = [
            (f, classes.index(f.parent.name))
            for c in classes
            for f in sorted((folder / c).iterdir())
            if f.is_file()
        ]
        out[split] = [(Image.open(f), y) for f, y in items]
    return out, classes


def near_copy(img, kind):
    """(encoded bytes, extension) of a near copy of a PIL image."""
    w, h = img.size
    buf = io.BytesIO()
    if kind == "reencode":  # lossy: JPEG, or WebP for images with transparency
        fmt = "WEBP" if img.mode in ("RGBA", "LA", "P") else "JPEG"
        img.save(buf, fmt, quality=75)
        return buf.getvalue(), fmt.lower()
    if kind == "resize":  # to 85%
        img = img.resize((max(1, round(w * 0.85)), max(1, round(h * 0.85))), Image.BILINEAR)
    elif kind == "crop":  # 4% off each side (at least a pixel)
        c = max(1, round(0.04 * min(w, h)))
        img = img.crop((c, c, w - c, h - c))
    else:  # recolour: brighter, less contrast
        img = img.convert("RGBA") if img.mode in ("P", "LA") else img
        img = ImageEnhance.Contrast(ImageEnhance.Brightness(img).enhance(1.15)).enhance(0.9)
    img.save(buf, "PNG")
    return buf.getvalue(), "png"


def plant(name, root, noise, copies_share, seed=0, n_train=5000, n_test=1000):
    """Write the planted folder; returns (moved {file: true class}, planted pairs
    {(train copy, test file): kind})."""
    data, classes = base_images(name, n_train, n_test, seed)
    rng = np.random.default_rng(seed + 1)
    train = list(data["train"])
    n_noise = round(noise * len(train))
    flip = set(rng.choice(len(train), n_noise, replace=False).tolist())
    moved, pairs = {}, {}
    for split, items in (("train", train), ("test", data["test"])):
        for i, (img, y) in enumerate(items):
            label = y
            if split == "train" and i in flip:
                label = int(rng.choice([c for c in range(len(classes)) if c != y]))
            f = root / split / classes[label] / f"{split}{i}.png"
            f.parent.mkdir(parents=True, exist_ok=True)
            img.save(f)
            if label != y:
                moved[str(f)] = classes[y]
    n_copies = max(4, round(copies_share * len(data["test"])))
    chosen = rng.choice(len(data["test"]), 2 * n_copies, replace=False)
    for k, i in enumerate(chosen.tolist()):
        img, y = data["test"][i]
        test_file = str(root / "test" / classes[y] / f"test{i}.png")
        if k < n_copies:
            copy, kind = root / "train" / classes[y] / f"copy{i}.png", "exact"
            shutil.copy(test_file, copy)
        else:
            kind = NEAR[k % len(NEAR)]
            encoded, ext = near_copy(img, kind)
            copy = root / "train" / classes[y] / f"near{i}.{ext}"
            copy.write_bytes(encoded)
        pairs[(str(copy), test_file)] = kind
    return moved, pairs


def same_picture(a, b, size=128):
    """Whether two files show the same picture: grey, composited on white, at ``size`` px
    (more pixels than the audit compares), a mean absolute difference under 2 levels and
    99% of the pixels within 40. A set's own duplicates (the same icon under two names)
    are not false pairs; the check is independent of the audit's."""

    def pixels(f):
        im = Image.open(f).convert("RGBA").resize((size, size), Image.LANCZOS)
        white = Image.new("RGBA", im.size, "white")
        white.alpha_composite(im)
        return np.asarray(white.convert("L"), dtype=float)

    d = np.abs(pixels(a) - pixels(b))
    return d.mean() < 2 and np.quantile(d, 0.99) < 40


def pr(flagged, truth):
    tp = len(set(flagged) & set(truth))
    return {
        "precision": tp / max(len(flagged), 1),
        "recall": tp / max(len(truth), 1),
        "flagged": len(flagged),
    }


def crossfit_probs(cfg, part, epochs, out, log):
    """Out-of-sample probabilities of every training image: 2 folds, each model trained on
    one half for ``epochs`` and applied to the other (the budget of one full run)."""
    ds = part.images
    rng = np.random.default_rng(0)
    order = rng.permutation(len(ds))
    halves = [np.sort(order[: len(ds) // 2]), np.sort(order[len(ds) // 2 :])]
    probs = torch.zeros(len(ds), len(ds.classes))
    t0 = time.perf_counter()
    for k, (fit, held) in enumerate([(halves[0], halves[1]), (halves[1], halves[0])]):
        src = Source(f"fold{k}", ds.subset(fit))
        r = imgcls.train(
            threads=cfg.threads,
            source=src,
            data=f"fold{k}",
            model=cfg.model,
            epochs=epochs,
            batch_size=cfg.batch_size,
            image_size=cfg.image_size,
            channels=cfg.channels,
            val_split=0.0,
            seed=cfg.seed,
            out=str(out),
            name=f"fold{k}",
            progress=False,
            log=log,
        )
        model, pre, _ = load_run_model(r.path)
        loader = make_loader(ds.subset(held), pre, train=False, batch_size=256)
        logits, _ = predict_logits(model, loader, eval_plan("cpu"))
        probs[torch.from_numpy(held)] = logits.softmax(1)
    return probs.numpy(), time.perf_counter() - t0


def leak_figures(result, pairs, root):
    """Planted copies found (by kind) and pairs reported among distinct images."""
    found = {
        (str(Path(f.file).resolve()), str(Path(f.other_file).resolve()))
        for f in result.findings
        if f.issue in ("leak", "duplicate")
    }
    planted = {(str(Path(a).resolve()), str(Path(b).resolve())): k for (a, b), k in pairs.items()}
    by_kind = {}
    for pair, kind in planted.items():
        by_kind.setdefault(kind, []).append(pair in found or pair[::-1] in found)
    involved = {x for p in planted for x in p}
    unplanted = [
        p for p in found if not (p in planted or p[::-1] in planted) and not (set(p) & involved)
    ]
    false_pairs = [p for p in unplanted if not same_picture(*p)]
    return {
        "leaks": {k: f"{sum(v)}/{len(v)}" for k, v in by_kind.items()},
        "leak_recall": sum(sum(v) for v in by_kind.values()) / len(planted),
        "pairs_among_unplanted": len(unplanted),
        "pairs_among_distinct": len(false_pairs),
        "pairs_examples": [[os.path.relpath(x, root) for x in p] for p in false_pairs[:5]],
    }


def measure_copies(name, args):
    """Copies only: no label noise, a one-epoch run (the copy check does not use the model),
    ``args.copies`` of the test images planted exactly and as many again near."""
    work = Path(tempfile.mkdtemp(prefix=f"audit-copies-{name}-"))
    root = work / "data"
    _, pairs = plant(name, root, 0.0, args.copies, n_train=args.train, n_test=args.test)
    quiet = (lambda _: None) if not args.verbose else print
    r = imgcls.train(
        threads=args.threads, data=str(root), model=args.model, epochs=1,
        out=str(work / "runs"), name="run", seed=0, progress=False, log=quiet,
    )  # fmt: skip
    t0 = time.perf_counter()
    result = audit(r.path, report=False, log=quiet)
    row = {"set": name, "copies": args.copies, "counts": result.counts()}
    row.update(leak_figures(result, pairs, root))
    row["audit_s"] = time.perf_counter() - t0
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return row


def measure_outliers(name, args):
    """Foreign images (of another set: digits in Fashion-MNIST, Fashion-MNIST elsewhere),
    ``args.outliers`` of the training images, spread over the training classes; a run of
    ``args.epochs`` (outliers are judged by the model's features). Precision and recall of
    the audit's outlier rows of the training split, and how many it flags on the clean
    images."""
    work = Path(tempfile.mkdtemp(prefix=f"audit-outliers-{name}-"))
    root = work / "data"
    plant(name, root, 0.0, 0.0, n_train=args.train, n_test=args.test)
    classes = sorted(d.name for d in (root / "train").iterdir())
    n_train = sum(1 for _ in (root / "train").rglob("*.*"))
    foreign, _ = base_images("digits" if name == "fashion" else "fashion", 5000, 0, seed=3)
    planted = set()
    for i, (img, _) in enumerate(foreign["train"][: max(4, round(args.outliers * n_train))]):
        f = root / "train" / classes[i % len(classes)] / f"foreign{i}.png"
        img.save(f)
        planted.add(str(f.resolve()))
    quiet = (lambda _: None) if not args.verbose else print
    r = imgcls.train(
        threads=args.threads, data=str(root), model=args.model, epochs=args.epochs,
        out=str(work / "runs"), name="run", seed=0, progress=False, log=quiet,
    )  # fmt: skip
    result = audit(r.path, report=False, log=quiet)
    flagged = [str(Path(f.file).resolve()) for f in result.of("outlier") if f.split == "train"]
    row = {"set": name, "outliers": args.outliers, "epochs": args.epochs, "planted": len(planted)}
    row["found"] = pr(flagged, planted)
    row["clean_flagged"] = len(set(flagged) - planted)
    row["clean_images"] = n_train
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return row


def measure(name, noise, args):
    work = Path(tempfile.mkdtemp(prefix=f"audit-{name}-"))
    root = work / "data"
    moved, pairs = plant(name, root, noise, args.copies, n_train=args.train, n_test=args.test)
    quiet = (lambda _: None) if not args.verbose else print
    t0 = time.perf_counter()
    r = imgcls.train(
        threads=args.threads,
        data=str(root),
        model=args.model,
        epochs=args.epochs,
        out=str(work / "runs"),
        name="run",
        seed=0,
        progress=False,
        log=quiet,
    )
    train_s = time.perf_counter() - t0
    result = audit(r.path, log=quiet)
    audit_s = result.seconds
    # label issues among the run's training images
    cfg = TrainConfig.from_yaml(r.path / "config.yaml")
    _, pre, _ = load_run_model(r.path)
    part = next(p for p in run_data(cfg, pre).parts if p.split == "train")
    names = [str(Path(n).resolve()) for n in part.names]
    truth = {str(Path(f).resolve()) for f in moved} & set(names)
    aum = area_under_margin(read_margins(r.path / "train_margins.safetensors").margin)
    n = len(truth)
    rank = np.argsort(aum.numpy(), kind="stable")
    row = {
        "set": name,
        "noise": noise,
        "model": args.model,
        "epochs": args.epochs,
        "train_images": len(names),
        "planted_in_train": n,
        "aum_at_n": pr([names[i] for i in rank[:n]], truth),
        # the audit's cutoff (AUM < 0) against stricter ones, at the planted answer
        "aum_cutoffs": {
            str(t): pr([names[i] for i in np.flatnonzero(aum.numpy() < t)], truth)
            for t in (0.0, -0.5, -1.0, -2.0)
        },
        "audit_list": pr(
            [str(Path(f.file).resolve()) for f in result.of("label") if f.split == "train"], truth
        ),
    }
    row.update(leak_figures(result, pairs, root))
    row["train_s"], row["audit_s"] = train_s, audit_s
    row["audit_share_of_training"] = audit_s / train_s
    row["counts"] = result.counts()
    if not args.no_cleanlab:
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores

        probs, cf_s = crossfit_probs(cfg, part, args.epochs, work / "folds", quiet)
        labels = part.images.labels.numpy()
        issues = find_label_issues(labels, probs)
        row["cleanlab_find_label_issues"] = pr([names[i] for i in np.flatnonzero(issues)], truth)
        quality = get_label_quality_scores(labels, probs, method="self_confidence")
        row["crossfit_self_confidence_at_n"] = pr(
            [names[i] for i in np.argsort(quality, kind="stable")[:n]], truth
        )
        row["crossfit_s"] = cf_s
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return row


def margin_cost(args):
    """The share of a training run spent recording the margins (the callback's hooks, timed)."""
    from imgcls.engine import callbacks as cb

    spent = {"step": 0.0, "epoch": 0.0}
    step, epoch = cb.TrainingMargins.on_step_end, cb.TrainingMargins.on_epoch_end

    def timed_step(self, t):
        t0 = time.perf_counter()
        step(self, t)
        spent["step"] += time.perf_counter() - t0

    def timed_epoch(self, t, record):
        t0 = time.perf_counter()
        epoch(self, t, record)
        spent["epoch"] += time.perf_counter() - t0

    cb.TrainingMargins.on_step_end, cb.TrainingMargins.on_epoch_end = timed_step, timed_epoch
    with tempfile.TemporaryDirectory() as out:
        r = imgcls.train(
            data="sample",
            model=args.model,
            epochs=3,
            threads=args.threads,
            out=out,
            progress=False,
            log=lambda _: None,
        )
    total = spent["step"] + spent["epoch"]
    return {
        "measure": "margin_recording",
        "data": "sample",
        "model": args.model,
        "epochs": 3,
        "train_s": r.phases["train_s"],
        "margins_s": total,
        "share_of_training": total / r.phases["train_s"],
    }


def table(path=RESULTS):
    """Markdown rows of the latest result of each (set, noise rate)."""
    import json

    latest, copies, outliers = {}, {}, {}
    for line in Path(path).read_text().splitlines():
        r = json.loads(line)
        if "noise" in r:
            latest[(r["set"], r["noise"])] = r
        elif "copies" in r:
            copies[r["set"]] = r
        elif "outliers" in r:
            outliers[r["set"]] = r

    def f(d):
        return f"{d['precision']:.2f} / {d['recall']:.2f} ({d['flagged']})" if d else "-"

    print(
        "| set | noise | planted | AUM at N | the audit's list | AUM < -1 | cross-fit at N | "
        "cleanlab find_label_issues | leaks found | pairs among distinct | audit / training |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (name, noise), r in sorted(latest.items()):
        cut = r.get("aum_cutoffs", {})
        print(
            f"| {name} | {noise:.0%} | {r['planted_in_train']} | {f(r['aum_at_n'])} | "
            f"{f(r['audit_list'])} | {f(cut.get('-1.0'))} | "
            f"{f(r.get('crossfit_self_confidence_at_n'))} | "
            f"{f(r.get('cleanlab_find_label_issues'))} | "
            f"{sum(int(v.split('/')[0]) for v in r['leaks'].values())}/"
            f"{sum(int(v.split('/')[1]) for v in r['leaks'].values())} | "
            f"{r['pairs_among_distinct']} | {r['audit_share_of_training']:.1%} |"
        )
    print("\n| set | copies planted | exact | re-encoded | resized | cropped | recoloured | "
          "pairs among unplanted | of them distinct | audit s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in sorted(copies.items()):
        k = r["leaks"]
        print(
            f"| {name} | {r['copies']:.0%} | {k.get('exact', '-')} | {k.get('reencode', '-')} | "
            f"{k.get('resize', '-')} | {k.get('crop', '-')} | {k.get('recolour', '-')} | "
            f"{r['pairs_among_unplanted']} | {r['pairs_among_distinct']} | {r['audit_s']:.1f} |"
        )
    print("\n| set | foreign images planted | precision / recall (flagged) | clean flagged |")
    print("|---|---|---|---|")
    for name, r in sorted(outliers.items()):
        print(
            f"| {name} | {r['planted']} ({r['outliers']:.0%}) | {f(r['found'])} | "
            f"{r['clean_flagged']} of {r['clean_images']} |"
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="digits,fashion,icons")
    ap.add_argument("--noise", default="0.02,0.05,0.10")
    ap.add_argument(
        "--copies",
        type=float,
        default=0.02,
        help="share of the test images copied into train, exactly and again near",
    )
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--model", default="fastnet_s")
    ap.add_argument("--train", type=int, default=5000, help="training images of fashion")
    ap.add_argument("--test", type=int, default=1000, help="test images of fashion")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: on a busy shared CPU more threads spin-wait)",
    )
    ap.add_argument("--no-cleanlab", action="store_true")
    ap.add_argument(
        "--outliers",
        type=float,
        default=0.0,
        help="only the outlier check: this share of foreign images planted in train",
    )
    ap.add_argument(
        "--copies-only",
        action="store_true",
        help="only the copy check: no label noise, a one-epoch run (e.g. with --copies 0.1)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the planted folders and runs")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument(
        "--margin-cost",
        action="store_true",
        help="only time the margin recording of a 3-epoch run on sample",
    )
    ap.add_argument(
        "--table", action="store_true", help="only print the latest rows as a markdown table"
    )
    args = ap.parse_args()
    if args.table:
        table()
        return 0
    if args.margin_cost:
        print(append_row(RESULTS, margin_cost(args)))
        return 0
    for name in args.sets.split(","):
        if args.copies_only or args.outliers:
            row = (measure_outliers if args.outliers else measure_copies)(name, args)
            print(append_row(RESULTS, row), flush=True)
            continue
        for noise in map(float, args.noise.split(",")):
            row = measure(name, noise, args)
            append_row(RESULTS, row)
            print({k: v for k, v in row.items() if k != "pairs_examples"}, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
