"""The images a run was trained and tested on, decoded as the run decoded them and named as
a person finds them: the run's split of its training source (same seed and fraction), its
validation and test splits; a file by its path, an image of a named data set by its split
and index (``train[123]``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import TrainConfig
from ..data.dataset import ArrayDataset, Dataset, FileDataset
from ..data.prepare import Decoding, per_class_subset, prepare_data, to_model_input
from ..data.sources import load_source
from ..errors import RunError
from ..runtime.images import MAX_PIXELS, display_name
from ..runtime.preprocess import Preprocess

SPLITS = ("train", "val", "test")
KEEP = 64  # the side of the images the audit holds in memory: the copy check's largest


@dataclass
class Part:
    """One split as decoded: ``images`` (unreadable files left out) at the run's input size
    or :data:`KEEP` px if smaller, each one's name, and its row in the split before decoding
    (a streamed run numbers its images that way). ``model_input``: the same images at the
    run's input size where that is larger (in memory when they fit the run's memory limit,
    else the files, streamed)."""

    split: str
    images: ArrayDataset
    names: list[str]
    rows: torch.Tensor
    total: int  # images of the split before decoding, unreadable ones included
    model_input: Dataset | None = None

    @property
    def for_model(self) -> Dataset:
        return self.images if self.model_input is None else self.model_input


@dataclass
class RunData:
    parts: list[Part]
    unreadable: list[tuple[str, str, str]]  # (name, label, reason)
    classes: list[str]
    max_pixels: int = MAX_PIXELS

    def at_image_size(self, picks: list[int], pre: Preprocess) -> torch.Tensor:
        """The images ``picks`` (numbered over the parts in order) at the run's input size."""
        where = [(p, i) for p in self.parts for i in range(len(p.names))]
        out = []
        for k in picks:
            p, i = where[k]
            ds = p.for_model
            if isinstance(ds, ArrayDataset):
                out.append(ds.images[i])
            else:
                out.append(pre.load_image(ds.paths[i], self.max_pixels))
        return torch.stack(out)


def _names(ds: Dataset, tag: str, index: torch.Tensor | None) -> list[str]:
    if isinstance(ds, FileDataset):
        return [display_name(p) for p in ds.paths]
    idx = torch.arange(len(ds)) if index is None else torch.as_tensor(index)
    return [f"{tag}[{i}]" for i in idx.tolist()]


def run_data(
    cfg: TrainConfig,
    pre: Preprocess,
    data: str | None = None,
    data_dir: str | None = None,
    max_pixels: int = MAX_PIXELS,
) -> RunData:
    """The run's images (``data`` / ``data_dir`` where they moved since training); those of
    more than ``max_pixels`` are unreadable."""
    source = load_source(data or cfg.data, data_dir or cfg.data_dir)
    if list(source.train.classes) != list(pre.class_names):
        raise RunError(
            f"{source.name}: its classes ({', '.join(source.train.classes)}) are "
            f"not the run's ({', '.join(pre.class_names)}); the data changed "
            "since training: audit the data the run was trained on"
        )
    prepared = prepare_data(
        source,
        val_split=cfg.val_split,
        seed=cfg.seed,
        labels_per_class=cfg.labels_per_class,
        image_size=min(pre.image_size, KEEP),
        channels=pre.channels,
        decoding=Decoding(
            resize=pre.resize, in_memory="yes", workers=cfg.workers, max_pixels=max_pixels
        ),
    )
    at_size = Decoding(
        resize=pre.resize,
        in_memory=cfg.in_memory,
        memory_limit_gb=cfg.memory_limit_gb,
        workers=cfg.workers,
        max_pixels=max_pixels,
    )
    full = source.train
    train_idx, val_idx = prepared.train_idx, prepared.val_idx
    if train_idx is None and cfg.labels_per_class:
        train_idx = per_class_subset(full.labels, cfg.labels_per_class, cfg.seed).numpy()
    before = {
        "train": (full if train_idx is None else full.subset(train_idx), "train", train_idx),
        "val": (
            (full.subset(val_idx), "train", val_idx)
            if val_idx is not None
            else (source.val, "val", None)
        ),
        "test": (source.test, "test", None),
    }
    bad = {}
    for message in prepared.skipped:  # "path: reason"
        name, _, reason = message.partition(": ")
        bad[name] = reason
    parts, unreadable = [], []
    for split, decoded in zip(SPLITS, (prepared.train, prepared.val, prepared.test)):
        ds, tag, index = before[split]
        if ds is None or decoded is None:
            continue
        assert isinstance(decoded, ArrayDataset)  # in_memory="yes"
        names = _names(ds, tag, index)
        labels = ds.labels.tolist()
        kept = [i for i, n in enumerate(names) if n not in bad]
        unreadable += [(n, ds.classes[labels[i]], bad[n]) for i, n in enumerate(names) if n in bad]
        model_input = None
        if pre.image_size > KEEP:
            model_input = to_model_input(
                ds.subset(kept), pre.channels, pre.image_size, at_size, [], f"decoding {split}"
            )
        rows = torch.tensor(kept)
        parts.append(Part(split, decoded, [names[i] for i in kept], rows, len(names), model_input))
    return RunData(parts, unreadable, list(pre.class_names), max_pixels)
