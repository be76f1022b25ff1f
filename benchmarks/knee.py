"""Where the default run length stops paying: `imgcls train` with its data-decided defaults
on each set of the data-set suite, at several numbers of optimizer steps (the epochs that
give them at the batch size the defaults choose) and seeds, scored on the set's held-out
images. One row per run appended to benchmarks/knee_results.jsonl; benchmarks/knee.md is
regenerated from all rows (mean held-out top-1 and wall time per set and step count).

    python benchmarks/knee.py --steps 750,1500,3000 --seeds 0,1 --avx2 -- --threads 1
    python benchmarks/knee.py --table
    python benchmarks/knee.py --make-unseen DIR       # fm300 and icons300, not tuned on
    IMGCLS_SUITE=DIR python benchmarks/knee.py --sets fm300,icons300 --steps 1600,3000 ...

The epochs for S steps are the defaults' own rule with S in place of its target: S / (steps
per epoch), rounded up, within the rule's 10-300 epochs. They are given with --epochs, so
no time cap shortens a run.
"""

import argparse
import json
import math
import os
import statistics
from collections import defaultdict
from pathlib import Path

from _record import AVX2_ENV, append_row, read_rows
from suite import ROOT, SETS, describe, paths, run_imgcls

HERE = Path(__file__).parent
RESULTS = HERE / "knee_results.jsonl"


def make_unseen_sets(root: Path) -> None:
    """Writes ROOT/fm300 (30 random Fashion-MNIST training images a class; fm300-test: 100
    t10k images a class, drawn after them from the same generator) and ROOT/icons300 (300
    random files of the suite's icons folder; icons300-test: a link to icons-test): sets the
    defaults were not chosen on. The same files every time (seed 7)."""
    import random
    import shutil

    import numpy as np
    from PIL import Image
    from suite_data import FMNIST_CLASSES, FMNIST_DIR, read_idx

    rng = np.random.default_rng(7)
    for folder, prefix, per_class in (("fm300", "train", 30), ("fm300-test", "t10k", 100)):
        images = read_idx(FMNIST_DIR / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(FMNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz")
        for c, name in enumerate(FMNIST_CLASSES):
            (root / folder / name).mkdir(parents=True, exist_ok=True)
            for i in rng.choice(np.flatnonzero(labels == c), per_class, replace=False):
                Image.fromarray(images[i]).save(root / folder / name / f"{i}.png")
    random.seed(7)
    icons = ROOT / "icons"
    for f in random.sample(sorted(p for p in icons.rglob("*") if p.is_file()), 300):
        (root / "icons300" / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, root / "icons300" / f.parent.name / f.name)
    (root / "icons300-test").symlink_to(ROOT / "icons-test")


def steps_per_epoch(name: str) -> tuple[int, int]:
    """(optimizer steps per epoch, batch size) of the defaults on set ``name``."""
    from imgcls.config import TrainConfig
    from imgcls.resolve import prepare

    cfg, _, data, _, _ = prepare(TrainConfig(data=paths(name)[0]), log=lambda _: None)
    return max(1, len(data.train) // cfg.batch_size), cfg.batch_size


def epochs_for(steps: int, per_epoch: int) -> int:
    from imgcls.defaults import MAX_EPOCHS, MIN_EPOCHS

    return min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(steps / per_epoch)))


def table() -> str:
    # the latest row of each (set, kernels, steps, seed): a re-measured run replaces its row
    latest = {(r["set"], r["avx2"], r["steps"], r["seed"]): r for r in read_rows(RESULTS)}
    groups = defaultdict(list)
    for r in latest.values():
        groups[(r["set"], r["avx2"], r["steps"])].append(r)
    lines = ["| set | CPU kernels | steps | epochs | seeds | held-out top-1, mean (each) | "
             "wall, mean | wall / the 3,000-step run's |", "|---|---|---|---|---|---|---|---|"]
    others = sorted({name for name, _, _ in groups} - set(SETS))  # e.g. IMGCLS_SUITE's sets
    for s in (*SETS, *others):
        for (name, avx2, steps), rs in sorted(groups.items(), key=lambda kv: kv[0][2]):
            if name != s:
                continue
            base = groups.get((name, avx2, 3000))
            wall = statistics.mean(r["wall_s"] for r in rs)
            ratio = (f"{wall / statistics.mean(r['wall_s'] for r in base):.2f}" if base
                     else "-")
            each = " / ".join(f"{r['top1']:.3f}" for r in sorted(rs, key=lambda r: r["seed"]))
            lines.append(f"| {name} | {'AVX2 stand-in' if avx2 else 'native'} | {steps:,} | "
                         f"{rs[0]['epochs']} | {len(rs)} | "
                         f"**{statistics.mean(r['top1'] for r in rs):.4f}** ({each}) | "
                         f"{wall / 60:.1f} min | {ratio} |")
    return "\n".join(lines) + "\n"


def write_table() -> None:
    (HERE / "knee.md").write_text(
        "# The default run length, measured\n\nWritten by `python benchmarks/knee.py` from "
        "`knee_results.jsonl` (the latest row of each set, step count and seed); the "
        "conclusions are in benchmarks/README.md, \"The default run length\". Each row is "
        "`imgcls train --data SET --epochs E --seed S` with every other default decided from "
        "the data, scored on the set's held-out images; wall is the whole command. fm300 and "
        "icons300 are sets not used to choose the defaults: 300 random Fashion-MNIST training "
        "images (1,000 test images) and 300 random images of the icons folder (its test "
        "folder).\n\n" + table())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", default=",".join(s for s in SETS if s != "fashion-mnist"))
    p.add_argument("--steps", default="750,1500,3000", help="optimizer steps, comma-separated")
    p.add_argument("--seeds", default="0")
    p.add_argument("--avx2", action="store_true", help="keep torch to its AVX2 kernels")
    p.add_argument("--out", default="runs/knee")
    p.add_argument("--table", action="store_true", help="only rewrite benchmarks/knee.md")
    p.add_argument("--make-unseen", type=Path, metavar="DIR",
                   help="only write the sets fm300 and icons300 into DIR")
    p.add_argument("flags", nargs="*", help="more imgcls train flags (after --)")
    a = p.parse_args()
    if a.make_unseen:
        make_unseen_sets(a.make_unseen)
        return
    if a.table:
        write_table()
        return
    if a.avx2:
        os.environ.update(AVX2_ENV)
    for name in a.sets.split(","):
        info, (per_epoch, batch) = describe(name), steps_per_epoch(name)
        for seed in a.seeds.split(","):
            for steps in map(int, a.steps.split(",")):
                epochs = epochs_for(steps, per_epoch)
                flags = ["--epochs", str(epochs), "--seed", seed, *a.flags]
                res = run_imgcls(name, f"steps{steps}-seed{seed}", flags, Path(a.out))
                row = append_row(RESULTS, {"set": name, "steps": steps, "epochs": epochs,
                                           "seed": int(seed), "batch_size": batch,
                                           "avx2": a.avx2, "flags": flags, **info, **res})
                print(json.dumps({k: row[k] for k in ("set", "steps", "epochs", "seed",
                                                      "top1", "wall_s")}), flush=True)
    write_table()


if __name__ == "__main__":
    main()
