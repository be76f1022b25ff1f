"""Accuracy per unit of compute, side by side: configurations of `imgcls train` (each a label
and its flags) on the suite's sets, in turns (A B A B over seeds, so a machine slowing down
hits every configuration), scored on held-out images as benchmarks/suite.py scores them. One
row per run appended to benchmarks/efficiency_results.jsonl; the medians per set and
configuration printed at the end.

    python benchmarks/efficiency.py --sets sample --seeds 0,1 \\
        --config "today=--epochs 43" --config "pr=--epochs 22 --progressive-resize 0.5"
    python benchmarks/efficiency.py --avx2 ...   # torch kept to its AVX2 kernels

``--avx2`` sets ONEDNN_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=avx2 and
MKL_ENABLE_INSTRUCTIONS=AVX2 for the runs: on a CPU with AVX-512 and bf16 it stands in for
one without (the execution plan then finds no native bf16 and trains in fp32).
"""

import argparse
import json
import os
import shlex
import statistics
from pathlib import Path

from _record import AVX2_ENV, append_row
from suite import describe, run_imgcls

HERE = Path(__file__).parent
RESULTS = HERE / "efficiency_results.jsonl"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", default="sample")
    p.add_argument("--seeds", default="0")
    p.add_argument("--config", action="append", required=True, metavar="LABEL=FLAGS",
                   help="a configuration: its label, '=', its imgcls train flags")
    p.add_argument("--avx2", action="store_true", help="keep torch to its AVX2 kernels")
    p.add_argument("--out", default="runs/efficiency")
    a = p.parse_args()
    configs = dict(c.split("=", 1) for c in a.config)
    if a.avx2:
        os.environ.update(AVX2_ENV)
    results: dict[tuple[str, str], list[dict]] = {}
    for name in a.sets.split(","):
        info = describe(name)
        for seed in a.seeds.split(","):
            for label, flags in configs.items():
                argv = [*shlex.split(flags), "--seed", seed]
                res = run_imgcls(name, f"{label}-s{seed}", argv, Path(a.out))
                row = append_row(RESULTS, {"set": name, "label": label, "flags": argv,
                                           "seed": int(seed), "avx2": a.avx2, **info, **res})
                results.setdefault((name, label), []).append(row)
                print(json.dumps({k: row[k] for k in ("set", "label", "seed", "top1", "wall_s",
                                                      "train_s")}), flush=True)
    print("\nset | configuration | runs | median top-1 | median train s | median wall s")
    for (name, label), rows in results.items():
        med = {k: statistics.median(r[k] for r in rows) for k in ("top1", "train_s", "wall_s")}
        print(f"{name} | {label} | {len(rows)} | {med['top1']:.4f} | {med['train_s']:.1f} | "
              f"{med['wall_s']:.1f}")


if __name__ == "__main__":
    main()
