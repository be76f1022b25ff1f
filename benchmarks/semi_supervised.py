"""Semi-supervised against supervised-only training on Fashion-MNIST with 1,000 labels.

Both runs use the same model, the same 1,000 labelled images (100 per class, chosen by the
seed), no validation split and the same ``--budget``; the semi-supervised one also sees the
other 59,000 training images without their labels (``--unlabeled rest``).

    python benchmarks/semi_supervised.py --budget 10m [--model seed_torch_cnn] [--ssl fixmatch]

``--side-by-side`` runs the two at once, each with ``--threads 1`` (one core each on a 2-core
machine), which halves the wall time of long budgets; both still get the same budget. Flags
after ``--`` go to both runs:

    python benchmarks/semi_supervised.py --budget 95m --model fastnet_s --ssl freematch \\
        --side-by-side -- --lr 0.2

``--student 30m`` ends the semi-supervised side with a student: the semi-supervised run gets
the budget less 30 minutes, then a fresh model learns its predictions on the unlabelled
images for those 30 (``--ssl distill --teacher``); the supervised run still gets it all.
``--rounds 2`` trains a student of that student too, 30 minutes more out of the budget.
``--propagate 10`` refines the students' targets by label propagation over 10 neighbours.
``--ensemble`` makes each student learn the mean of all the runs before it, not only the last.

Each invocation's runs and gain are appended as one row to
benchmarks/semi_supervised_results.jsonl.
"""

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _record import append_row

from imgcls.config import parse_duration


def train(out: Path, name: str, args: list[str]) -> dict:
    t = time.perf_counter()
    cmd = [sys.executable, "-m", "imgcls", "train", "--out", str(out), "--name", name,
           "--progress", "false", *args]
    with open(out / f"{name}.log", "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    summary = json.loads((out / name / "summary.json").read_text())
    records = [json.loads(line) for line in (out / name / "metrics.jsonl").open()]
    return {"name": name, "test_top1": summary["test"]["top1"], "wall_s": time.perf_counter() - t,
            "epochs": len(records), "steps": records[-1]["step"],
            "pseudo_label_rate": records[-1].get("train_pseudo_label_rate")}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--budget", default="10m")
    p.add_argument("--model", default="seed_torch_cnn")
    p.add_argument("--ssl", default="fixmatch", choices=["fixmatch", "freematch", "pseudo"])
    p.add_argument("--labels-per-class", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--student", metavar="BUDGET",
                   help="end the semi-supervised side with a student trained for this long "
                   "on its predictions (out of --budget)")
    p.add_argument("--rounds", type=int, default=1,
                   help="students in a row, each learning from the one before")
    p.add_argument("--propagate", type=int, default=0, metavar="K",
                   help="the students' targets refined by label propagation over K neighbours")
    p.add_argument("--ensemble", action="store_true",
                   help="each student learns the mean of all the runs before it")
    p.add_argument("--side-by-side", action="store_true",
                   help="run both at once with --threads 1 each")
    p.add_argument("--out", default=str(Path(__file__).parent / "_work" / "semi"))
    p.add_argument("extra", nargs="*", help="more imgcls train flags for both runs")
    a = p.parse_args()
    out = Path(a.out) / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True)
    common = ["--data", "fashion-mnist", "--model", a.model,
              "--labels-per-class", str(a.labels_per_class), "--val-split", "0",
              "--batch-size", str(a.batch_size), "--seed", str(a.seed), *a.extra]
    if a.side_by_side:
        common += ["--threads", "1"]
    budget = parse_duration(a.budget, "--budget")
    if a.rounds < 1:
        p.error("--rounds must be at least 1")
    student = parse_duration(a.student, "--student") if a.student else 0.0
    students = [f"student{i + 1}" for i in range(a.rounds)] if a.student else []
    ssl_budget = budget - student * len(students)
    if ssl_budget <= 0:
        p.error(f"--student {a.student} x --rounds {a.rounds} leaves nothing of --budget "
                f"{a.budget}")
    ssl = [(a.ssl, [*common, "--budget", f"{ssl_budget:.0f}s", "--unlabeled", "rest",
                    "--ssl", a.ssl])]
    before = [a.ssl, *students]
    for i, name in enumerate(students):
        teachers = ",".join(str(out / t) for t in (before[:i + 1] if a.ensemble else [before[i]]))
        ssl.append((name, [*common, "--budget", f"{student:.0f}s", "--unlabeled", "rest",
                           "--ssl", "distill", "--teacher", teachers,
                           "--propagate", str(a.propagate)]))
    chains = [[("supervised", [*common, "--budget", a.budget])], ssl]  # each run in turn
    with ThreadPoolExecutor(2 if a.side_by_side else 1) as pool:
        rows = [r for chain in pool.map(lambda c: [train(out, *run) for run in c], chains)
                for r in chain]
    print(f"{a.labels_per_class * 10} labels, {a.model}, --budget {a.budget}, "
          f"batch {a.batch_size}, seed {a.seed}{', side by side' if a.side_by_side else ''} "
          f"(runs and logs in {out})")
    print("| run | test top-1 | wall s | epochs | steps | pseudo-label rate (last epoch) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        rate = "" if r["pseudo_label_rate"] is None else f"{r['pseudo_label_rate']:.2f}"
        print(f"| {r['name']} | {r['test_top1']:.4f} | {r['wall_s']:.0f} | {r['epochs']} | "
              f"{r['steps']} | {rate} |")
    gain = 100 * (rows[-1]["test_top1"] - rows[0]["test_top1"])
    print(f"semi-supervised minus supervised: {gain:+.1f} points")
    append_row(Path(__file__).parent / "semi_supervised_results.jsonl",
               {"out": str(out), "runs": rows, "gain_points": gain})


if __name__ == "__main__":
    main()
