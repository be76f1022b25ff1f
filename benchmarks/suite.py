"""The data-set suite that imgcls's defaults are judged on: `imgcls train --data X` (plus any
flags given) on each set, scored on the set's held-out images, one row per run appended to
benchmarks/suite_results.jsonl, and benchmarks/suite.md regenerated from the latest row of
each (set, configuration).

    python benchmarks/suite_data.py                     # builds the folders once
    python benchmarks/suite.py                          # the defaults on every set
    python benchmarks/suite.py --sets icons --label tuned -- --epochs 80 --image-size 96
    python benchmarks/suite.py --peer fastai            # the peer, same sets, same times
    python benchmarks/suite.py --peer fastai --label fastai-tuned -- --image-size auto --lr-find
    python benchmarks/suite.py --table                  # only rewrite suite.md

Sets: sample (the embedded 5,000 images, the README's first command) and fashion-mnist (the
named data sets, scored on their own test images) and the folders of suite_data.py
(fmnist50, digits-mixed, icons, large, lineart), each scored on its `<set>-test` folder.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml
from _record import AVX2_ENV, append_row, read_rows

HERE = Path(__file__).parent
ROOT = Path(os.environ.get("IMGCLS_SUITE", Path.home() / ".cache" / "imgcls" / "suite"))
SETS = ("sample", "fashion-mnist", "fmnist50", "digits-mixed", "icons", "large", "lineart")
NAMED = ("sample", "fashion-mnist")  # data sets with a test split of their own
CHOSEN = ("model", "image_size", "channels", "batch_size", "epochs", "flip", "class_weights",
          "augment")
RESULTS = HERE / "suite_results.jsonl"


def paths(name: str) -> tuple[str, str | None]:
    """(training data, held-out data: None when the named set has its own test split)."""
    if name in NAMED:
        return name, None
    return str(ROOT / name), str(ROOT / f"{name}-test")


def describe(name: str) -> dict:
    """Images, classes and median image side of the training data."""
    from imgcls.data.sources import load_source
    from imgcls.runtime.images import probe_image

    src = load_source(paths(name)[0])
    if hasattr(src.train, "images"):
        return {"images": len(src.train), "classes": len(src.classes),
                "median_px": max(src.train.image_size)}
    sides = []
    for p in src.train.paths:
        try:
            sides.append(min(probe_image(p)[:2]))
        except Exception:  # an unreadable file: counted by the run itself
            pass
    return {"images": len(src.train.paths),
            "classes": len(src.classes), "median_px": int(statistics.median(sides))}


def run_imgcls(name: str, label: str, flags: list[str], out: Path) -> dict:
    import imgcls

    train, test = paths(name)
    run_name = f"{name}-{label}"
    cmd = [sys.executable, "-m", "imgcls", "train", "--data", train, "--out", str(out),
           "--name", run_name, "--progress", "false", *flags]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{name}: imgcls train failed:\n{proc.stdout[-2000:]}{proc.stderr}")
    run = max(out.glob(f"{run_name}*"), key=lambda p: p.stat().st_mtime)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    summary = json.loads((run / "summary.json").read_text())
    chosen = {k: cfg[k] for k in CHOSEN} | {"epochs": summary["epochs"],
                                             "restarts": summary.get("restarts", 0)}
    r = imgcls.evaluate(run, test, report=False, calibrate=False, log=lambda _: None)
    return {"top1": r["top1"], "n": r["n"], "split": r["split"], "wall_s": round(wall, 1),
            "train_s": summary.get("train_s"), "chosen": chosen, "run": str(run),
            "log_tail": [s for s in proc.stdout.splitlines() if "defaults" in s
                         or s.startswith("  ") or "warning" in s][:12]}


def run_peer(name: str, minutes: float, flags: list[str]) -> dict:
    train, test = paths(name)
    if test is None:
        raise SystemExit(f"the peer runs on folders; {name} is a named set")
    py = os.environ.get("PEER_PYTHON", "/work/peer-venv/bin/python")
    t0 = time.perf_counter()
    proc = subprocess.run([py, str(HERE / "peer_fastai.py"), train, test, "--minutes",
                           str(minutes), "--no-record", *flags], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{name}: peer failed:\n{proc.stderr[-2000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"top1": row["test_top1"], "wall_s": round(time.perf_counter() - t0, 1),
            "chosen": {k: row.get(k) for k in ("epochs", "image_size", "lr_max")},
            "fit_s": row["seconds"], "lr_find_s": row.get("lr_find_s"),
            "peer": f"fastai {row.get('fastai')}"}


def defaults_minutes(name: str) -> float:
    rows = read_rows(RESULTS)
    walls = [r["wall_s"] for r in rows if r["set"] == name and r["label"] == "defaults"]
    if not walls:
        raise SystemExit(f"{name}: no imgcls defaults run recorded yet; give --minutes")
    return round(walls[-1] / 60, 2)


def table() -> str:
    rows = read_rows(RESULTS)
    latest = {(r["set"], r["label"]): r for r in rows}
    lines = ["| set | images | median px | classes | configuration | chosen | held-out top-1 "
             "| wall | date |", "|---|---|---|---|---|---|---|---|---|"]
    for s in SETS:
        for (name, label), r in latest.items():
            if name != s:
                continue
            chosen = ", ".join(f"{k} {v:.2g}" if isinstance(v, float) else f"{k} {v}"
                               for k, v in r["chosen"].items()
                               if v is not None and k != "restarts" or (k == "restarts" and v))
            lines.append(f"| {name} | {r['images']:,} | {r['median_px']} | {r['classes']} | "
                         f"{label}{' `' + ' '.join(r['flags']) + '`' if r['flags'] else ''} | "
                         f"{chosen} | **{r['top1']:.4f}** | {r['wall_s'] / 60:.1f} min | "
                         f"{r['date'][:10]} |")
    return "\n".join(lines) + "\n"


def write_table() -> None:
    (HERE / "suite.md").write_text(
        "# The data-set suite\n\nWritten by `python benchmarks/suite.py` from "
        "`suite_results.jsonl` (the latest row of each set and configuration); "
        "see benchmarks/README.md for the machine and what the figures mean.\n\n" + table())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", default=",".join(SETS))
    p.add_argument("--label", default="defaults", help="name of this configuration")
    p.add_argument("--peer", choices=("fastai",), help="run the peer instead of imgcls")
    p.add_argument("--minutes", type=float, default=None,
                   help="the peer's training time (default: the wall time of the latest "
                   "imgcls defaults run on the same set, so both get the same time)")
    p.add_argument("--minutes-factor", type=float, default=1.0,
                   help="the peer's time as a multiple of that default (e.g. 3 for its own "
                   "best, given more time)")
    p.add_argument("--avx2", action="store_true", help="keep torch to its AVX2 kernels "
                   "(imgcls and the peer)")
    p.add_argument("--out", default="runs/suite")
    p.add_argument("--table", action="store_true", help="only rewrite benchmarks/suite.md")
    p.add_argument("flags", nargs="*", help="imgcls train flags, or with --peer the peer's "
                   "(after --)")
    a = p.parse_args()
    if a.table:
        write_table()
        return
    if a.avx2:
        os.environ.update(AVX2_ENV)
    for name in a.sets.split(","):
        info = describe(name)
        if a.peer:
            res = run_peer(name, a.minutes or defaults_minutes(name) * a.minutes_factor,
                           a.flags)
            label = a.peer if a.label == "defaults" else a.label
        else:
            res = run_imgcls(name, a.label, a.flags, Path(a.out))
            label = a.label
        row = {"set": name, "label": label, "flags": a.flags, "avx2": a.avx2, **info, **res}
        append_row(RESULTS, row)
        print(json.dumps({k: v for k, v in row.items() if k != "log_tail"}), flush=True)
    write_table()


if __name__ == "__main__":
    main()
