"""From a data source to the model's input: the train/val split, the labelled subset,
decoding into memory (or not), the preprocessing statistics, and the batch loaders."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import DataError
from ..runtime.images import MAX_PIXELS, convert_channels, resize_to
from ..runtime.preprocess import Preprocess, channel_stats
from ..utils import cache_dir
from .augment import Augment
from .dataset import ArrayDataset, Dataset, FileDataset
from .duplicates import label_conflicts
from .loader import BatchLoader, StreamLoader
from .materialize import cache_key, materialize
from .sources import Source
from .splits import stratified_split


@dataclass(frozen=True)
class Decoding:
    """How image files become the model's input: the resize rule, whether decoded images
    are held in memory (``auto``: when they fit in ``memory_limit_gb``), decoding threads,
    the largest image decoded (larger ones are reported unreadable)."""

    resize: str = "shorter_crop"
    in_memory: str = "auto"
    memory_limit_gb: float = 4.0
    workers: int | None = None
    max_pixels: int = MAX_PIXELS
    progress: bool = True  # a bar while decoding, on an interactive terminal


@dataclass
class PreparedData:
    train: Dataset
    val: Dataset | None
    test: Dataset | None
    preprocess: Preprocess
    source: str
    train_idx: object = None
    val_idx: object = None
    skipped: list[str] = field(default_factory=list)
    rest: Dataset | None = None  # the training images that --labels-per-class left out
    conflicts: list[str] = field(default_factory=list)  # the same file in two classes


def conform(ds: ArrayDataset, channels: int, size: int, resize: str) -> ArrayDataset:
    """An in-memory data set with ``channels`` channels at ``size`` x ``size``."""
    images = convert_channels(ds.images, channels)
    if images.shape[-2:] != (size, size):
        images = torch.cat([resize_to(c, size, resize) for c in images.split(4096)])
    return ArrayDataset(images, ds.labels, ds.classes)


def _fits(ds: FileDataset, channels: int, size: int, decoding: Decoding) -> bool:
    if decoding.in_memory != "auto":
        return decoding.in_memory == "yes"
    return len(ds) * channels * size * size <= decoding.memory_limit_gb * 2**30


def to_model_input(ds: Dataset | None, channels: int, size: int, decoding: Decoding,
                   skipped: list[str], desc: str) -> Dataset | None:
    """Arrays conformed, files decoded into memory when they fit (else left for streaming)."""
    if ds is None:
        return None
    if isinstance(ds, ArrayDataset):
        return conform(ds, channels, size, decoding.resize)
    if not _fits(ds, channels, size, decoding):
        return ds
    arr, bad = materialize(ds, size, channels, resize=decoding.resize, workers=decoding.workers,
                           desc=desc, max_pixels=decoding.max_pixels, progress=decoding.progress)
    skipped += bad
    return arr


def prepare_data(source: Source, *, image_size: int, channels: int, val_split: float = 0.1,
                 seed: int = 0, labels_per_class: int | None = None,
                 decoding: Decoding = Decoding()) -> PreparedData:
    """Split ``source``'s training images into train/val (stratified, seeded), keep
    ``labels_per_class`` of each class, and decode everything to the model's input,
    ``channels`` x ``image_size`` x ``image_size`` (decided from the data by
    ``defaults.image_shape``, or a run's own)."""
    full = source.train
    require_classes(full, source.name)  # before any image is decoded
    if val_split > 0:
        train_idx, val_idx = stratified_split(full.labels, val_split, seed)
        train, val = full.subset(train_idx), full.subset(val_idx)
    else:
        train_idx, val_idx = None, None
        train, val = full, source.val
    rest = None
    if labels_per_class:
        keep = per_class_subset(train.labels, labels_per_class, seed)
        mask = torch.ones(len(train), dtype=torch.bool)
        mask[keep] = False
        rest = train.subset(torch.nonzero(mask).flatten())
        train = train.subset(keep)
        if train_idx is not None:
            train_idx = train_idx[keep.numpy()]
    size = image_size
    skipped: list[str] = []
    train = to_model_input(train, channels, size, decoding, skipped, "decoding train images")
    val = to_model_input(val, channels, size, decoding, skipped, "decoding val images")
    test = to_model_input(source.test, channels, size, decoding, skipped, "decoding test images")
    if isinstance(train, ArrayDataset):
        mean, std = channel_stats(train.images)
    else:  # streamed: statistics of a decoded sample
        sample = train.subset(torch.randperm(len(train))[:1000])
        arr, _ = materialize(sample, size, channels, resize=decoding.resize, cache=False,
                             desc="sampling mean/std", max_pixels=decoding.max_pixels,
                             progress=decoding.progress)
        mean, std = channel_stats(arr.images)
    if skipped:  # the unreadable images may have emptied a class
        require_classes(train, source.name, f" once {len(skipped)} unreadable image(s) "
                        "are skipped")
    pre = Preprocess(size, channels, mean, std, list(full.classes), resize=decoding.resize)
    files = [d for d in (full, source.val, source.test) if isinstance(d, FileDataset)]
    return PreparedData(train, val, test, pre, source.name, train_idx, val_idx,
                        skipped, rest, label_conflicts(files, skipped) if files else [])


def require_classes(ds: Dataset, name: str, when: str = "") -> None:
    """DataError unless ``ds`` (training images) has images of every class and two classes
    or more: a classifier of one class learns nothing (it is right by definition), and a
    class without training images could never be predicted."""
    counts = ds.counts()
    present = [(c, n) for c, n in zip(ds.classes, counts) if n]
    if len(present) < 2:
        found = (f"only the class {present[0][0]!r} ({present[0][1]} image(s))" if present
                 else "no images")
        raise DataError(f"{name}: {found} to train on{when}; a classifier needs two classes "
                        "or more (a folder per class: DIR/<class>/<images>, or a CSV with "
                        "two labels or more)")
    empty = [c for c, n in zip(ds.classes, counts) if not n]
    if empty:
        raise DataError(f"{name}: no training images for class(es) {empty}{when}")


def per_class_subset(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Indices of ``per_class`` images of every class (all of a smaller class), by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    keep = []
    for c in labels.unique():
        idx = torch.nonzero(labels == c).flatten()
        keep.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(keep).sort().values


def class_weights(ds: Dataset) -> torch.Tensor:
    """Inverse-frequency loss weights N / (classes x count): 1 for every class when balanced."""
    counts = torch.bincount(ds.labels, minlength=len(ds.classes)).clamp_min(1).float()
    return len(ds) / (len(ds.classes) * counts)


def make_loader(ds: Dataset, pre: Preprocess, *, train: bool, batch_size: int,
                device: str = "cpu", channels_last: bool = False,
                augment: Augment | None = None, seed: int = 0,
                sampler: str = "random", train_fraction: float = 1.0,
                workers: int | None = None, rank: int = 0, world_size: int = 1,
                max_pixels: int = MAX_PIXELS) -> BatchLoader | StreamLoader:
    """Batches of ``ds`` ready for the model. For training, ``batch_size`` is the global
    batch (each of ``world_size`` processes takes its share), shuffled by ``seed``,
    augmented, ``train_fraction`` of the set per epoch; ``sampler`` ``balanced`` draws each
    image in proportion to its class's inverse frequency. Batches land on ``device``, in
    channels-last memory format when ``channels_last``. Files (streamed) larger than
    ``max_pixels`` are skipped as unreadable."""
    bs = batch_size // world_size if train else batch_size
    max_batches = None
    if train and train_fraction < 1:
        max_batches = max(1, int(len(ds) // bs * train_fraction))
    weights = class_weights(ds)[ds.labels] if train and sampler == "balanced" else None
    kw = dict(mean=pre.mean, std=pre.std, augment=augment if train else None, shuffle=train,
              drop_last=train and len(ds) >= 2 * batch_size,
              seed=seed, device=device, channels_last=channels_last,
              rank=rank, world_size=world_size, max_batches=max_batches,
              sample_weights=weights)
    if isinstance(ds, ArrayDataset):
        return BatchLoader(ds, bs, **kw)
    key = cache_key(ds, pre.image_size, pre.channels, pre.resize, max_pixels)
    return StreamLoader(ds, bs, size=pre.image_size, channels=pre.channels, resize=pre.resize,
                        max_pixels=max_pixels, cache=cache_dir("stream") / key,
                        workers=workers, **kw)
