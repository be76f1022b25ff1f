"""Preprocessing that travels with the weights (torchvision ``Weights.transforms``, timm
``pretrained_cfg``): saved in every checkpoint, used by eval, predict, export and serve."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..utils import FORMER_NAMES
from .images import MAX_PIXELS, ImageDecodeError, decode_image, resize_to


def _renamed_attribute(old: str, new: str) -> None:
    warnings.warn(f"Preprocess.{old} is now Preprocess.{new}; {old} will be removed",
                  DeprecationWarning, stacklevel=3)


@dataclass
class Preprocess:
    """How raw images become model input: decode to ``channels`` channels, resize to
    ``image_size`` (rule ``resize``), scale to [0, 1], subtract ``mean``, divide by ``std``.
    ``temperature`` divides the logits before the softmax (1.0 until calibrated)."""

    image_size: int
    channels: int
    mean: list[float]
    std: list[float]
    class_names: list[str] = field(default_factory=list)
    resize: str = "shorter_crop"
    interpolation: str = "bilinear"
    temperature: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        """From :meth:`to_dict`'s keys; files written before the keys were renamed name
        ``image_size`` and ``channels`` ``input_size`` and ``in_chans``."""
        d = {FORMER_NAMES.get(k, k): v for k, v in d.items()}
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    @property
    def input_size(self) -> int:
        """Deprecated: :attr:`image_size` (the name is kept for one release)."""
        _renamed_attribute("input_size", "image_size")
        return self.image_size

    @property
    def in_chans(self) -> int:
        """Deprecated: :attr:`channels` (the name is kept for one release)."""
        _renamed_attribute("in_chans", "channels")
        return self.channels

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated class probabilities of ``logits`` (:func:`calibrated_softmax`)."""
        return calibrated_softmax(logits, self.temperature)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (or float in 0..255) batch -> normalised float32, one fused multiply-add."""
        return normalize(x, self.mean, self.std)

    def load_image(self, source: str | Path | bytes, max_pixels: int = MAX_PIXELS
                   ) -> torch.Tensor:
        """Decode and resize one file or encoded bytes to uint8 (C, S, S); raises
        ImageDecodeError naming the file (also for images of more than ``max_pixels``)."""
        image = decode_image(source, self.channels, max_pixels)
        return resize_to(image, self.image_size, self.resize)

    def load_readable(self, sources: list[Path], max_pixels: int = MAX_PIXELS
                      ) -> tuple[list[torch.Tensor], list[Path], list[tuple[Path, str]]]:
        """(images, the sources they came from, (source, reason) of each that cannot be
        decoded): :meth:`load_image` of each, the unreadable ones set aside."""
        images, ok, bad = [], [], []
        for s in sources:
            try:
                images.append(self.load_image(s, max_pixels))
                ok.append(s)
            except ImageDecodeError as e:
                bad.append((s, str(e)))
        return images, ok, bad

    def load_images(self, sources: list[str | Path | bytes]) -> torch.Tensor:
        """Decode and resize files or encoded bytes into a uint8 batch (N, C, S, S)."""
        return torch.stack([self.load_image(s) for s in sources])

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """A uint8 batch of any size with the right channels -> normalised model input."""
        if images.shape[-3] != self.channels:
            raise ValueError(f"images have {images.shape[-3]} channels, the model takes "
                             f"{self.channels}")
        return self.normalize(resize_to(images, self.image_size, self.resize))


def calibrated_softmax(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / temperature) over the classes: the probabilities every prediction,
    report, export and server response gives."""
    return torch.softmax(logits / temperature, dim=1)


def normalize(x: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """(x / 255 - mean) / std per channel, as ``x * a + b`` in float32."""
    std_t = torch.tensor(std, dtype=torch.float32, device=x.device)[:, None, None]
    mean_t = torch.tensor(mean, dtype=torch.float32, device=x.device)[:, None, None]
    return torch.addcmul(-mean_t / std_t, x.float(), 1.0 / (255.0 * std_t))


def channel_stats(images: torch.Tensor, max_images: int = 20000) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] units of a uint8 batch (N, C, H, W)."""
    step = max(1, len(images) // max_images)
    x = images[::step].float().div_(255).transpose(0, 1).reshape(images.shape[1], -1)
    std = x.std(1).clamp_min(1e-3)
    return [round(v, 4) for v in x.mean(1).tolist()], [round(v, 4) for v in std.tolist()]
