"""Loaders that yield normalised float batches ready for the model.

:class:`BatchLoader` is the fast path: the data set is one uint8 tensor in memory, a batch is
an index into it, and augmentation runs on the whole batch. :class:`StreamLoader` is for
folders too big for memory: DataLoader workers decode and resize files (optionally into a
disk cache so that later epochs do not decode again), then the same batch augmentation runs.

Both are deterministic: the order of epoch ``e`` and the augmentation of batch ``b`` are pure
functions of ``(seed, e, b)``, so a resumed run sees exactly the batches it would have seen,
and under ``torchrun`` each rank takes its own shard of the same permutation.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..runtime.images import (
    MAX_PIXELS,
    ImageDecodeError,
    decode_image,
    display_name,
    resize_to,
)
from ..runtime.preprocess import normalize
from .augment import Augment, apply_geometric, erase, resize_batch
from .dataset import ArrayDataset, FileDataset


def batch_generator(seed: int, epoch: int, batch: int) -> torch.Generator:
    mixed = (seed * 0x9E3779B1 + epoch * 0x85EBCA77 + batch * 0xC2B2AE35) % (2**63)
    return torch.Generator().manual_seed(mixed)


class _Loader:
    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        mean: list[float],
        std: list[float],
        augment: Augment | None = None,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        device: str | torch.device = "cpu",
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        max_batches: int | None = None,
        sample_weights: torch.Tensor | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.n, self.batch_size = n, batch_size
        self.mean, self.std = mean, std
        self.augment = augment if augment is not None and augment.active else None
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.rank, self.world_size = rank, world_size
        # an epoch of at most this many batches: a new random part of the data each epoch
        self.max_batches = max_batches
        # a balanced sampler: each epoch draws n samples with these probabilities
        self.sample_weights = sample_weights
        self.epoch = 0
        # share of the full size the batches are resized to (progressive resizing)
        self.scale = 1.0
        # the data set's indices of the batch last yielded (per-image records such as the
        # training margins read them)
        self.last_indices = torch.empty(0, dtype=torch.long)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> torch.Tensor:
        """This rank's sample order for the current epoch."""
        gen = batch_generator(self.seed, self.epoch, -1)
        if self.shuffle and self.sample_weights is not None:
            idx = torch.multinomial(self.sample_weights, self.n, replacement=True, generator=gen)
        elif self.shuffle:
            idx = torch.randperm(self.n, generator=gen)
        else:
            idx = torch.arange(self.n)
        if self.world_size > 1:
            # Every rank gets the same number of samples (as DistributedSampler): the order is
            # cut to a multiple of the world size when training, padded when evaluating.
            per = self.n // self.world_size if self.drop_last else -(-self.n // self.world_size)
            if not self.drop_last and per * self.world_size > self.n:
                idx = torch.cat([idx, idx[: per * self.world_size - self.n]])
            idx = idx[self.rank: per * self.world_size: self.world_size]
        return idx

    def __len__(self) -> int:
        n = len(self.indices()) if self.world_size > 1 else self.n
        full = n // self.batch_size if self.drop_last else -(-n // self.batch_size)
        return min(full, self.max_batches) if self.max_batches else full

    def _finish(self, images: torch.Tensor, batch: int) -> torch.Tensor:
        """uint8 batch -> (augmented) normalised float batch on the device."""
        x = images.to(self.device, non_blocking=True)
        if self.scale < 1:
            x = resize_batch(x.float(), self.scale)
        if self.augment is not None:
            gen = batch_generator(self.seed, self.epoch, batch)
            x = apply_geometric(x.float(), self.augment, gen)
            x = normalize(x, self.mean, self.std)
            if self.augment.erase > 0:
                x = erase(x, self.augment.erase, gen)
        else:
            x = normalize(x, self.mean, self.std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def batches(self) -> list[torch.Tensor]:
        idx = self.indices()
        out = list(idx.split(self.batch_size))
        if self.drop_last and out and len(out[-1]) < self.batch_size:
            out.pop()
        return out[: self.max_batches] if self.max_batches else out

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iter_from(0)

    def iter_from(self, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError


class BatchLoader(_Loader):
    """Batches from an in-memory :class:`ArrayDataset`."""

    def __init__(self, ds: ArrayDataset, batch_size: int, **kw: object) -> None:
        super().__init__(len(ds), batch_size, **kw)
        images = ds.images
        # Small data sets move to the GPU once (as airbench does); indexing happens there.
        if self.device.type == "cuda" and images.numel() < 2**31:
            images = images.to(self.device)
        self.images, self.labels = images, ds.labels.to(images.device)

    def iter_from(self, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for b, idx in enumerate(self.batches()):
            if b < start:
                continue
            self.last_indices = idx
            idx = idx.to(self.images.device)
            yield self._finish(self.images[idx], b), self.labels[idx].to(self.device)


class _FileImages(torch.utils.data.Dataset):
    """Decode + resize one file in a worker; the optional cache is a uint8 memmap shared by
    all workers plus a byte per image saying whether its slot is filled."""

    def __init__(self, ds: FileDataset, size: int, channels: int, resize: str,
                 cache: Path | None, max_pixels: int = MAX_PIXELS) -> None:
        self.paths, self.labels = ds.paths, ds.labels
        self.size, self.channels, self.resize, self.cache = size, channels, resize, cache
        self.max_pixels = max_pixels
        self.shape = (len(ds), channels, size, size)
        if cache is not None and not (cache / "images.u8").exists():
            cache.mkdir(parents=True, exist_ok=True)
            np.lib.format.open_memmap(cache / "images.u8", "w+", np.uint8, self.shape).flush()
            np.lib.format.open_memmap(cache / "done.u8", "w+", np.uint8, (len(ds),)).flush()
        self._mm: tuple[np.ndarray, np.ndarray] | None = None

    def _maps(self) -> tuple[np.ndarray, np.ndarray]:
        if self._mm is None:  # opened lazily, once per worker process
            assert self.cache is not None
            self._mm = (np.load(self.cache / "images.u8", mmap_mode="r+"),
                        np.load(self.cache / "done.u8", mmap_mode="r+"))
        return self._mm

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        if self.cache is not None:
            images, done = self._maps()
            if done[i] == 1:
                return torch.from_numpy(np.array(images[i])), int(self.labels[i]), i
            if done[i] == 2:
                return torch.zeros(self.shape[1:], dtype=torch.uint8), -1, i
        try:
            img = decode_image(self.paths[i], self.channels, self.max_pixels)
            img = resize_to(img, self.size, self.resize)
            label = int(self.labels[i])
        except ImageDecodeError:
            img, label = torch.zeros(self.shape[1:], dtype=torch.uint8), -1
        if self.cache is not None:
            images, done = self._maps()
            if label >= 0:
                images[i] = img.numpy()
            done[i] = 1 if label >= 0 else 2
        return img, label, i


def _collate(items: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    imgs, labels, idx = zip(*items)
    return torch.stack(imgs), torch.tensor(labels), torch.tensor(idx)


class StreamLoader(_Loader):
    """Batches decoded from files by DataLoader workers; unreadable files are dropped from
    their batch and listed in :attr:`skipped`."""

    def __init__(self, ds: FileDataset, batch_size: int, *, size: int, channels: int,
                 resize: str = "shorter_crop", cache: Path | None = None,
                 workers: int | None = None, max_pixels: int = MAX_PIXELS,
                 **kw: object) -> None:
        super().__init__(len(ds), batch_size, **kw)
        self.files = _FileImages(ds, size, channels, resize, cache, max_pixels)
        self.workers = (os.cpu_count() or 1) if workers is None else workers
        self.skipped: set[str] = set()

    def iter_from(self, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = self.batches()[start:]
        dl = torch.utils.data.DataLoader(
            self.files, batch_sampler=[b.tolist() for b in batches], num_workers=self.workers,
            collate_fn=_collate, persistent_workers=False,
            pin_memory=self.device.type == "cuda",
        )
        for b, (imgs, labels, idx) in enumerate(dl, start=start):
            bad = labels < 0
            if bad.any():
                self.skipped.update(display_name(self.files.paths[i]) for i in idx[bad].tolist())
                imgs, labels, idx = imgs[~bad], labels[~bad], idx[~bad]
                if len(labels) == 0:
                    continue
            self.last_indices = idx
            yield self._finish(imgs, b), labels.to(self.device)
