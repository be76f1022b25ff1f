"""``imgcls data info``: what a data set holds, before anyone trains on it."""

from __future__ import annotations

from pathlib import Path

import torch

from ..runtime.images import display_name
from ..runtime.preprocess import channel_stats
from .dataset import ArrayDataset, FileDataset
from .duplicates import label_conflicts
from .materialize import infer_channels, infer_image_size, materialize, probe_files
from .sources import Source

IMBALANCE_WARN_RATIO = 3.0


def describe(source: Source, sample_limit: int = 2000) -> dict:
    """Classes, readable images per split and class, imbalance ratio and warning, per-channel
    mean/std of a sample, and the files that are not usable images (every file's header is
    read; the sample is decoded in full) or sit in two classes."""
    info: dict = {"name": source.name, "classes": source.classes, "splits": {}}
    unreadable: list[str] = []
    splits = {}
    for split in ("train", "val", "test"):
        ds = getattr(source, split)
        if isinstance(ds, FileDataset):
            ds, bad = probe_files(ds, f"reading {split} image headers")
            unreadable += bad
        if ds is not None:
            splits[split] = ds
    sample, bad = _sample(splits["train"], sample_limit)
    if bad:  # files whose header opens but whose data do not decode
        names = {m.split(": ", 1)[0] for m in bad}
        train = splits["train"]
        splits["train"] = train.subset([i for i, p in enumerate(train.paths)
                                        if display_name(p) not in names])
        unreadable += bad
    for split, ds in splits.items():
        info["splits"][split] = {"images": len(ds), "counts": ds.counts()}
    counts = splits["train"].counts()
    ratio = max(counts) / max(min(counts), 1)
    info["imbalance_ratio"] = round(ratio, 2)
    if ratio >= IMBALANCE_WARN_RATIO:
        small = source.classes[counts.index(min(counts))]
        info["warning"] = (f"class imbalance: the largest class has {ratio:.1f}x the images of "
                           f"the smallest ({small!r}); consider class weights or a balanced "
                           "sampler, and read per-class metrics")
    info["channels"] = sample.channels
    info["image_size"] = list(sample.image_size)
    info["mean"], info["std"] = channel_stats(sample.images)
    info["unreadable"] = unreadable
    files = [d for d in splits.values() if isinstance(d, FileDataset)]
    info["conflicts"] = label_conflicts(files) if files else []
    return info


def _sample(ds: ArrayDataset | FileDataset, limit: int) -> tuple[ArrayDataset, list[str]]:
    """Up to ``limit`` images of ``ds`` in memory (a fixed random draw), and the reasons of
    those that failed to decode."""
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(ds), generator=g)[:limit].sort().values
    sub = ds.subset(idx)
    if isinstance(sub, ArrayDataset):
        return sub, []
    return materialize(sub, infer_image_size(sub), infer_channels(sub), cache=False,
                       desc="sampling images")


def sample_grid(source: Source, path: str | Path, per_class: int = 8, size: int = 64) -> Path:
    """A PNG grid: one row per class (up to 20 classes), ``per_class`` training images each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..runtime.images import resize_to

    ds = source.train
    classes = source.classes[:20]
    g = torch.Generator().manual_seed(0)
    fig, axes = plt.subplots(len(classes), per_class, figsize=(per_class * 0.9,
                                                                 len(classes) * 0.95),
                             squeeze=False)
    for c, name in enumerate(classes):
        idx = torch.nonzero(ds.labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)[:per_class]]
        sub = _sample(ds.subset(idx), per_class)[0] if len(idx) else None
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
