"""Kill a training run with SIGKILL at random moments, resume it each time, and compare the
final weights with an uninterrupted run: they must be bitwise equal (deterministic mode).
Each repeat is appended as a row to benchmarks/kill_resume_results.jsonl.

    python benchmarks/kill_resume.py --repeats 50
"""

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from _record import append_row

from imgcls.utils import read_safetensors

COMMON = ["--data", "sample", "--epochs", "2", "--batch-size", "64", "--checkpoint-every", "5",
          "--ema", "0.99", "--deterministic", "true", "--precision", "fp32",
          "--channels-last", "no", "--progress", "false", "--threads", "1"]


def train(args: list[str], kill_after: float | None = None, log: Path | None = None) -> bool:
    """Run ``imgcls train``; SIGKILL it after ``kill_after`` seconds. True if it finished.
    Its output is appended to ``log``."""
    env = dict(os.environ, IMGCLS_NO_PROGRESS="1")
    with open(log or os.devnull, "a") as out:
        out.write(f"--- imgcls train {' '.join(args)} (kill after {kill_after} s)\n")
        out.flush()
        p = subprocess.Popen([sys.executable, "-m", "imgcls", "train", *args], env=env,
                             stdout=out, stderr=subprocess.STDOUT)
        try:
            p.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait()
            out.write("--- SIGKILL\n")
            return False
    if p.returncode != 0:
        raise RuntimeError(f"imgcls train {' '.join(args)} exited {p.returncode}")
    return True


def weights(run: Path) -> dict[str, torch.Tensor]:
    tensors, _ = read_safetensors(run / "checkpoints" / "last.safetensors")
    return {k: v for k, v in tensors.items() if k.startswith(("model.", "ema.", "optim."))}


def interrupted_run(out: Path, name: str, rng: random.Random, kills: int,
                    window: tuple[float, float]) -> tuple[Path, int]:
    """Train ``name`` under ``out``, killing it up to ``kills`` times; returns the run folder
    and how many kills landed before it finished."""
    run, landed = out / name, 0
    log = out / f"{name}.log"
    lo, hi = window
    while True:
        # a run killed before it wrote its config.yaml is started again from scratch
        fresh = not (run / "config.yaml").exists()
        args = COMMON + (["--out", str(out), "--name", name] if fresh else ["--resume", str(run)])
        if landed < kills:
            kill = rng.uniform(lo, hi)
            if train(args, kill, log):
                return run, landed
            landed += 1
            # the next process has only the rest of the run to do (lo: about its start-up)
            hi = max(lo + 1.0, hi - (kill - lo))
        else:
            train(args, log=log)
            return run, landed


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def explain(a: dict, b: dict, log: Path) -> str:
    """Which tensors differ, and how each segment of the interrupted run started and ended."""
    diff = sorted(k for k in a.keys() & b.keys() if not torch.equal(a[k], b[k]))
    lines = [f"  differing tensors ({len(diff)}): {', '.join(diff[:8])}"]
    lines += [f"  only in one: {sorted(a.keys() ^ b.keys())}"] if a.keys() ^ b.keys() else []
    keep = ("---", "resumed", "no checkpoint", "damaged", "run ")
    lines += ["  " + line for line in log.read_text().splitlines() if line.startswith(keep)
              or "warning" in line]
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--start", type=int, default=0,
                   help="index of the first repeat (its kill times' seed): two processes with "
                        "--start 0 and --start 25 --repeats 25 share the 50 repeats")
    p.add_argument("--kills", type=int, default=3)
    p.add_argument("--out", default=str(Path(__file__).parent / "_work" / "kill_resume"))
    args = p.parse_args()
    out = Path(args.out)
    t = time.perf_counter()
    train(COMMON + ["--out", str(out), "--name", "reference"])
    reference = weights(out / "reference")
    window = (2.0, max(3.0, time.perf_counter() - t))
    equal, total_kills = 0, 0
    for i in range(args.start, args.start + args.repeats):
        run, landed = interrupted_run(out, f"cut-{i}", random.Random(i), args.kills, window)
        ok = same(weights(run), reference)
        equal += ok
        total_kills += landed
        append_row(Path(__file__).parent / "kill_resume_results.jsonl",
                   {"repeat": i, "kills": landed, "identical": ok})
        print(f"repeat {i + 1}: {landed} kills, final weights "
              f"{'identical' if ok else 'DIFFERENT'}", flush=True)
        if not ok:
            print(explain(weights(run), reference, out / f"cut-{i}.log"), flush=True)
    print(f"{equal}/{args.repeats} runs bitwise identical to the uninterrupted one after "
          f"{total_kills} SIGKILLs in all")


if __name__ == "__main__":
    main()
