"""Stratified train/validation splits from a seed, and the split manifest saved in a run."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch

from ..runtime.images import display_name
from ..utils import atomic_write_text
from .dataset import Dataset, FileDataset


def stratified_split(
    labels: torch.Tensor, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, held-out): ``fraction`` of every class is held out (at least one image
    of each class with two or more), chosen by ``seed``; both sorted."""
    if not 0 < fraction < 1:
        raise ValueError(f"split fraction must be between 0 and 1, got {fraction}")
    rng = np.random.default_rng(seed)
    y = labels.numpy()
    held = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        n = int(round(len(idx) * fraction))
        n = min(max(n, 1 if len(idx) > 1 else 0), len(idx) - 1)
        held.append(rng.choice(idx, n, replace=False))
    held_idx = np.sort(np.concatenate(held)) if held else np.array([], dtype=np.int64)
    mask = np.ones(len(y), dtype=bool)
    mask[held_idx] = False
    return np.flatnonzero(mask), held_idx


def write_split_manifest(path: str | Path, dataset: Dataset, train_idx: np.ndarray,
                         val_idx: np.ndarray, unreadable: set[str] = frozenset()) -> None:
    """``split.csv``: one row per training-source image, ``item,label,split``, where item is a
    file path for folders and manifests and the index for in-memory data sets; a file in
    ``unreadable`` (skipped when decoding) has the split ``unreadable``, not train or val."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path" if isinstance(dataset, FileDataset) else "index", "label", "split"])
    split = np.empty(len(dataset), dtype=object)
    split[train_idx], split[val_idx] = "train", "val"
    labels = dataset.labels.tolist()
    for i in range(len(dataset)):
        if split[i] is None:
            continue
        item = display_name(dataset.paths[i]) if isinstance(dataset, FileDataset) else i
        w.writerow([item, dataset.classes[labels[i]],
                    "unreadable" if item in unreadable else split[i]])
    atomic_write_text(path, buf.getvalue())
