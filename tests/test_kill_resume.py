"""SIGKILL a real `imgcls train` process at random moments (checkpoint writes included, as
they come), resume it each time, and compare with an uninterrupted run: bitwise equal.
benchmarks/kill_resume.py repeats this many times."""

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

from kill_resume import COMMON, explain, interrupted_run, same, train, weights  # noqa: E402


def test_killed_and_resumed_run_equals_uninterrupted(tmp_path):
    train(COMMON + ["--out", str(tmp_path), "--name", "reference"])
    reference = weights(tmp_path / "reference")
    run, landed = interrupted_run(tmp_path, "cut", random.Random(7), kills=3, window=(3.0, 6.0))
    assert landed >= 1
    assert same(weights(run), reference), explain(weights(run), reference,
                                                  tmp_path / "cut.log")
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2  # no duplicate epochs


# Runs `imgcls train` with the Nth checkpoint write cut short: the temp file half written,
# the previous checkpoint already renamed to .prev, then SIGKILL (a power cut or the OOM
# killer at the worst moment). Random kills land there only now and then; this lands there.
KILL_IN_CHECKPOINT_WRITE = """
import os, signal, sys
import imgcls.engine.checkpoint as ck
from imgcls.cli import main

real, writes = ck.atomic_write_bytes, 0

def cut_short(path, data):
    global writes
    if path.name == "last.safetensors":
        writes += 1
        if writes == int(os.environ["KILL_AT_WRITE"]):
            path.with_name(f".{path.name}.cut.tmp").write_bytes(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
    real(path, data)

ck.atomic_write_bytes = cut_short
sys.exit(main(["train", *sys.argv[1:]]))
"""


def test_kills_inside_checkpoint_writes_resume_exactly(tmp_path):
    train(COMMON + ["--out", str(tmp_path), "--name", "reference"])
    run = tmp_path / "cut"
    for i, (kill_at, args) in enumerate([
        (1, ["--out", str(tmp_path), "--name", "cut"]),  # the first write: no .prev yet
        (4, ["--resume", str(run)]),  # restarted from scratch, killed in its 4th write
        (3, ["--resume", str(run)]),  # resumed from .prev (last was moved away), 3rd write
    ]):
        p = subprocess.run([sys.executable, "-c", KILL_IN_CHECKPOINT_WRITE, *COMMON, *args],
                           env=dict(os.environ, KILL_AT_WRITE=str(kill_at)),
                           capture_output=True, text=True)
        assert p.returncode == -signal.SIGKILL, (i, p.stdout, p.stderr)
        assert not (run / "checkpoints" / "last.safetensors").exists()
    assert train(COMMON + ["--resume", str(run)])
    assert same(weights(run), weights(tmp_path / "reference"))
    assert not list((run / "checkpoints").glob(".*.tmp"))  # the cut-short writes cleaned up
