"""``imgcls data info``: what a data set holds, before anyone trains on it."""

from __future__ import annotations

from pathlib import Path

import torch

from ..preprocess import channel_stats
from .dataset import ArrayDataset, FileDataset
from .materialize import infer_channels, infer_image_size, materialize
from .sources import Source

IMBALANCE_WARN_RATIO = 3.0


def describe(source: Source, sample_limit: int = 2000) -> dict:
    """Classes, counts per split, imbalance ratio and warning, per-channel mean/std."""
    info: dict = {"name": source.name, "classes": source.classes, "splits": {}}
    for split in ("train", "val", "test"):
        ds = getattr(source, split)
        if ds is not None:
            info["splits"][split] = {"images": len(ds), "counts": ds.counts()}
    counts = source.train.counts()
    ratio = max(counts) / max(min(counts), 1)
    info["imbalance_ratio"] = round(ratio, 2)
    if ratio >= IMBALANCE_WARN_RATIO:
        small = source.classes[counts.index(min(counts))]
        info["warning"] = (f"class imbalance: the largest class has {ratio:.1f}x the images of "
                           f"the smallest ({small!r}); consider class weights or a balanced "
                           "sampler, and read per-class metrics")
    sample = _sample(source.train, sample_limit)
    info["channels"] = sample.channels
    info["image_size"] = list(sample.image_size)
    info["mean"], info["std"] = channel_stats(sample.images)
    if isinstance(source.train, FileDataset) and source.train.skipped:
        info["skipped"] = len(source.train.skipped)
    return info


def _sample(ds: ArrayDataset | FileDataset, limit: int) -> ArrayDataset:
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(ds), generator=g)[:limit].sort().values
    sub = ds.subset(idx)
    if isinstance(sub, ArrayDataset):
        return sub
    arr, _ = materialize(sub, infer_image_size(sub), infer_channels(sub), cache=False,
                         desc="sampling images")
    return arr


def sample_grid(source: Source, path: str | Path, per_class: int = 8, size: int = 64) -> Path:
    """A PNG grid: one row per class (up to 20 classes), ``per_class`` training images each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .images import resize_to

    ds = source.train
    classes = source.classes[:20]
    g = torch.Generator().manual_seed(0)
    fig, axes = plt.subplots(len(classes), per_class, figsize=(per_class * 0.9,
                                                                 len(classes) * 0.95),
                             squeeze=False)
    for c, name in enumerate(classes):
        idx = torch.nonzero(ds.labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)[:per_class]]
        sub = _sample(ds.subset(idx), per_class) if len(idx) else None
        for j in range(per_class):
            ax = axes[c][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if sub is not None and j < len(sub):
                img = resize_to(sub.images[j], size, "shorter_crop")
                if img.shape[0] == 1:
                    ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=255)
                else:
                    ax.imshow(img.permute(1, 2, 0).numpy())
            else:
                ax.axis("off")
        axes[c][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(f"{source.name}: training samples", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
