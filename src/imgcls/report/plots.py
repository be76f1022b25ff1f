"""PNG plots of a run and of an evaluation. matplotlib's Agg backend: no display needed."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fig.get_layout_engine() is None:  # a figure with its own layout keeps it
        fig.tight_layout()
    # "tight" also takes in legends placed outside the axes
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def training_curves(records: list[dict], path: str | Path) -> Path:
    """Loss and accuracy (train and val) and the learning rate per epoch."""
    ep = [r["epoch"] for r in records]
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    for key, label, a in (("train_loss", "train", 0), ("val_loss", "val", 0),
                          ("train_top1", "train", 1), ("val_top1", "val", 1)):
        ys = [r.get(key) for r in records]
        if any(y is not None for y in ys):
            ax[a].plot(ep, ys, marker="o", ms=3, label=label)
    ax[2].plot(ep, [r.get("lr") for r in records], marker="o", ms=3, color="tab:green")
    for a, title in zip(ax, ("loss", "top-1 accuracy", "learning rate (end of epoch)")):
        a.set_title(title)
        a.set_xlabel("epoch")
        a.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 2.5
        a.grid(alpha=0.3)
    ax[0].legend()
    ax[1].legend()
    return _save(fig, path)


def confusion_plot(cm: list[list[int]], class_names: list[str], path: str | Path) -> Path:
    """Counts and row-normalised (recall) confusion matrices side by side."""
    m = np.asarray(cm, dtype=float)
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    n = len(class_names)
    size = min(max(6, 0.45 * n + 3), 24)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size, size))
    for a, data, title, fmt in ((axes[0], m, "counts", "{:.0f}"),
                                (axes[1], norm, "normalised by true class", "{:.2f}")):
        a.imshow(data, cmap="Blues")
        a.set_title(title)
        a.set_xlabel("predicted")
        a.set_ylabel("true")
        a.set_xticks(range(n), class_names, rotation=90, fontsize=8)
        a.set_yticks(range(n), class_names, fontsize=8)
        if n <= 30:
            top = data.max() or 1
            for i in range(n):
                for j in range(n):
                    if data[i, j]:
                        a.text(j, i, fmt.format(data[i, j]), ha="center", va="center",
                               fontsize=7, color="white" if data[i, j] > top / 2 else "black")
    return _save(fig, path)


def reliability_plot(before: dict, after: dict | None, path: str | Path,
                     ece: tuple[float, float | None] = (0.0, None)) -> Path:
    """Reliability diagram: accuracy against confidence per bin, before and after scaling."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    for bins, label, e in ((before, "uncalibrated", ece[0]), (after, "temperature-scaled", ece[1])):
        if bins is None:
            continue
        x = [c for c, n in zip(bins["confidence"], bins["count"]) if n]
        y = [a for a, n in zip(bins["accuracy"], bins["count"]) if n]
        ax.plot(x, y, marker="o", label=f"{label} (ECE {e:.4f})" if e is not None else label)
    ax.set_xlabel("confidence (max probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    # below the axes: inside, it hid the points of one corner or another
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), frameon=False)
    return _save(fig, path)


def per_class_bars(per_class: list[dict], path: str | Path) -> Path:
    """Recall (per-class accuracy) and F1 of each class."""
    names = [p["class"] for p in per_class]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(names) + 2), 3.8))
    ax.bar(x - 0.2, [p["recall"] for p in per_class], 0.4, label="accuracy (recall)")
    ax.bar(x + 0.2, [p["f1"] for p in per_class], 0.4, label="F1")
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    # above the axes: inside, it covered the bars of the last classes
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.01), ncol=2, frameon=False)
    return _save(fig, path)


def error_grid(images: torch.Tensor, labels: torch.Tensor, probs: torch.Tensor,
               class_names: list[str], path: str | Path, n: int = 24) -> Path:
    """The ``n`` most confidently wrong images, titled "true -> predicted (p)"."""
    conf, pred = probs.max(1)
    wrong = torch.nonzero(pred != labels).flatten()
    order = wrong[conf[wrong].argsort(descending=True)][:n]
    cols = 6
    rows = max(1, -(-len(order) // cols))
    # constrained layout keeps each two-line title clear of the image above it (and of the
    # figure's title), which tight_layout did not
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.9, rows * 2.3), squeeze=False,
                             layout="constrained")
    for k, a in enumerate(axes.flat):
        a.axis("off")
        if k >= len(order):
            continue
        i = int(order[k])
        img = images[i]
        if img.shape[0] == 1:
            a.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=255)
        else:
            a.imshow(img.permute(1, 2, 0).numpy())
        a.set_title(f"{class_names[int(labels[i])]}\n-> {class_names[int(pred[i])]} "
                    f"({float(conf[i]):.2f})", fontsize=7)
    if not len(order):
        axes[0][0].text(0.5, 0.5, "no errors", ha="center", va="center")
    fig.suptitle("most confidently wrong: true -> predicted (probability)", fontsize=9)
    return _save(fig, path)
