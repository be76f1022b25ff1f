"""The two shapes a data set takes: images held in memory, or image files on disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class ArrayDataset:
    """Images in memory as one ``uint8`` tensor (N, C, H, W) with ``int64`` labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __post_init__(self) -> None:
        assert self.images.dtype == torch.uint8 and self.images.dim() == 4, self.images.shape
        assert self.labels.shape == (len(self.images),), (self.labels.shape, self.images.shape)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def subset(self, index: torch.Tensor | np.ndarray | list[int]) -> ArrayDataset:
        idx = torch.as_tensor(index, dtype=torch.long)
        return ArrayDataset(self.images[idx], self.labels[idx], self.classes)

    def counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=len(self.classes)).tolist()


@dataclass
class FileDataset:
    """Image files with their labels; decoded on demand (see :mod:`imgcls.data.materialize`)."""

    paths: list[Path]
    labels: torch.Tensor
    classes: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, index: torch.Tensor | np.ndarray | list[int]) -> FileDataset:
        idx = torch.as_tensor(index, dtype=torch.long)
        return FileDataset([self.paths[i] for i in idx.tolist()], self.labels[idx],
                           self.classes)

    def counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=len(self.classes)).tolist()


Dataset = ArrayDataset | FileDataset
