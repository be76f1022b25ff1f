"""``imgcls compare``: several models trained under the same time budget, one leaderboard.

Each model is trained with ``imgcls train --budget`` on the same data; the table has test
accuracy, parameters, FLOPs, CPU latency (batch 1), train time and epochs, and a PNG plots
accuracy against latency with the Pareto front (no other model is both faster and better).
"""

from __future__ import annotations

import os
from pathlib import Path

from .config import TrainConfig
from .models.table import model_table
from .run import load_run_model
from .training import Log, train
from .utils import write_json


def pareto_front(rows: list[dict], x: str = "latency_ms", y: str = "test_top1") -> list[str]:
    """Names of the rows that no other row beats on both ``x`` (lower) and ``y`` (higher)."""
    front = []
    for r in rows:
        if not any(o is not r and o[x] <= r[x] and o[y] >= r[y] and (o[x] < r[x] or o[y] > r[y])
                   for o in rows):
            front.append(r["model"])
    return front


def compare(models: list[str], base: TrainConfig, out: str | os.PathLike,
            log: Log = print) -> list[dict]:
    """Train every model of ``models`` with ``base`` (its budget or epochs) and write
    ``leaderboard.json``, ``leaderboard.md`` and ``leaderboard.png`` into ``out``."""
    out = Path(out)
    results = {}
    for name in models:
        log(f"--- {name}")
        results[name] = train(base.replace(model=name, out=str(out / "runs"), name=None),
                              log=log)
    # the speed of every model measured together, interleaved: the front cannot depend on
    # the order given or on how busy the machine was while one of them was timed
    _, pre, _ = load_run_model(next(iter(results.values())).path)
    table = {row["name"]: row for row in model_table(
        list(results), input_size=pre.input_size, in_chans=pre.in_chans,
        num_classes=len(pre.class_names), repeats=10, batch=64)}
    rows = []
    for name, r in results.items():
        info = table[name]
        rows.append({"model": name, "family": info["family"], "test_top1": r.held_out[1]["top1"],
                     "params": info["params"], "flops": info["flops"],
                     "latency_ms": info["latency_ms"], "throughput": info["throughput"],
                     "train_s": r.seconds, "epochs": len(r.history), "run": str(r.path)})
    rows.sort(key=lambda r: -r["test_top1"])
    front = pareto_front(rows)
    for r in rows:
        r["pareto"] = r["model"] in front
    write_json(out / "leaderboard.json", rows)
    (out / "leaderboard.md").write_text(leaderboard_markdown(rows))
    plot_leaderboard(rows, out / "leaderboard.png")
    return rows


def leaderboard_markdown(rows: list[dict]) -> str:
    lines = ["| model | test top-1 | params (M) | GFLOPs | latency ms | train s | epochs | "
             "Pareto |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['test_top1']:.4f} | {r['params'] / 1e6:.2f} | "
              f"{r['flops'] / 1e9:.3f} | {r['latency_ms']:.2f} | {r['train_s']:.0f} | "
              f"{r['epochs']} | {'yes' if r['pareto'] else ''} |" for r in rows]
    return "\n".join(lines) + "\n"


def plot_leaderboard(rows: list[dict], path: Path) -> Path:
    from .report.plots import _save, plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in rows:
        ax.scatter(r["latency_ms"], r["test_top1"], color="tab:red" if r["pareto"] else
                   "tab:blue", zorder=3)
        ax.annotate(r["model"], (r["latency_ms"], r["test_top1"]), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    front = sorted((r for r in rows if r["pareto"]), key=lambda r: r["latency_ms"])
    ax.plot([r["latency_ms"] for r in front], [r["test_top1"] for r in front], "r--", lw=1,
            label="Pareto front")
    ax.set_xlabel("CPU latency at batch 1 (ms)")
    ax.set_ylabel("test top-1")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)
