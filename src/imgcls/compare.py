"""``imgcls compare``: several models trained under the same time budget, one leaderboard.

Each model is trained with ``imgcls train --budget`` on the same data, the budget covering
its whole run (loading, planning, training and the final passes); the table has the held-out
accuracy (on the test split, else the validation split, named), parameters, FLOPs, CPU
latency (batch 1), run time and epochs, and a PNG plots accuracy against latency with the
Pareto front (no other model is both faster and better).
"""

from __future__ import annotations

import os
from pathlib import Path

from .config import TrainConfig
from .data.sources import load_source
from .errors import ConfigError
from .models.table import model_table
from .run import load_run_model
from .training import Log, train
from .utils import write_json


def pareto_front(rows: list[dict], x: str = "latency_ms", y: str = "top1") -> list[str]:
    """Names of the rows that no other row beats on both ``x`` (lower) and ``y`` (higher)."""
    front = []
    for r in rows:
        if not any(o is not r and o[x] <= r[x] and o[y] >= r[y] and (o[x] < r[x] or o[y] > r[y])
                   for o in rows):
            front.append(r["model"])
    return front


def compare(models: list[str], base: TrainConfig, out: str | os.PathLike,
            log: Log = print) -> list[dict]:
    """Train every model of ``models`` with ``base`` (its budget, which covers each model's
    whole run, or its epochs) and write ``leaderboard.json``, ``leaderboard.md`` and
    ``leaderboard.png`` into ``out``. Each row's ``top1`` is measured on its ``split``: the
    test split, or the validation split when the data have none."""
    out = Path(out)
    if base.val_split == 0:  # checked now, not after the first model has trained
        source = load_source(base.data, base.data_dir)
        if source.test is None and source.val is None:
            raise ConfigError(f"{base.data}: no test or validation images to compare the "
                              "models on (--val-split 0.1 holds a tenth of the training "
                              "images out)")
    results = {}
    for name in models:
        log(f"--- {name}")
        results[name] = train(base.replace(model=name, out=str(out / "runs"), name=None),
                              log=log, budget_scope="run")
    # the speed of every model measured together, interleaved: the front cannot depend on
    # the order given or on how busy the machine was while one of them was timed
    _, pre, _ = load_run_model(next(iter(results.values())).path)
    table = {row["name"]: row for row in model_table(
        list(results), image_size=pre.image_size, channels=pre.channels,
        num_classes=len(pre.class_names), repeats=10, batch_size=64)}
    rows = []
    for name, r in results.items():
        info, (split, held) = table[name], r.held_out
        rows.append({"model": name, "family": info["family"], "top1": held["top1"],
                     "split": split, "params": info["params"], "flops": info["flops"],
                     "latency_ms": info["latency_ms"], "throughput": info["throughput"],
                     "run_s": r.seconds, "epochs": len(r.history), "run": str(r.path)})
    rows.sort(key=lambda r: -r["top1"])
    front = pareto_front(rows)
    for r in rows:
        r["pareto"] = r["model"] in front
    write_json(out / "leaderboard.json", rows)
    (out / "leaderboard.md").write_text(leaderboard_markdown(rows))
    plot_leaderboard(rows, out / "leaderboard.png")
    return rows


def _accuracy_label(rows: list[dict]) -> str:
    """The accuracy's name: top-1 on the split it was measured on."""
    return f"{rows[0]['split']} top-1" if rows else "top-1"


def leaderboard_markdown(rows: list[dict]) -> str:
    """The leaderboard as a Markdown table; figures from the validation split say so."""
    lines = [f"| model | {_accuracy_label(rows)} | params (M) | GFLOPs | latency ms | run s | "
             "epochs | Pareto |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['top1']:.4f} | {r['params'] / 1e6:.2f} | "
              f"{r['flops'] / 1e9:.3f} | {r['latency_ms']:.2f} | {r['run_s']:.0f} | "
              f"{r['epochs']} | {'yes' if r['pareto'] else ''} |" for r in rows]
    if rows and rows[0]["split"] != "test":
        lines += ["", "The data have no test split: the accuracies are on the validation "
                  "split, which also chose each model's best epoch, so they flatter every "
                  "model a little; data with a test split compare them without that bias."]
    return "\n".join(lines) + "\n"


def plot_leaderboard(rows: list[dict], path: Path) -> Path:
    """Accuracy against latency, the Pareto front joined; the accuracy axis ends at 1."""
    from .report.plots import _save, plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in rows:
        # unclipped: a point at accuracy 1 sits on the axis's top edge
        ax.scatter(r["latency_ms"], r["top1"], color="tab:red" if r["pareto"] else
                   "tab:blue", zorder=3, clip_on=False)
        ax.annotate(r["model"], (r["latency_ms"], r["top1"]), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    front = sorted((r for r in rows if r["pareto"]), key=lambda r: r["latency_ms"])
    ax.plot([r["latency_ms"] for r in front], [r["top1"] for r in front], "r--", lw=1,
            label="Pareto front")
    bottom, top = ax.get_ylim()
    ax.set_ylim(min(bottom, 0.99), min(top, 1.0))  # no accuracy above 1 on the axis
    ax.set_xlabel("CPU latency at batch 1 (ms)")
    ax.set_ylabel(_accuracy_label(rows))
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)
