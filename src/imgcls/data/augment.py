"""Augmentation of whole batches as tensor ops, each image with its own random draw.

As in airbench's CifarLoader: flipping, translating, rotating and erasing a batch of 512
small images costs a few tensor operations, where PIL per image with worker processes costs
milliseconds each. Every function takes a ``torch.Generator`` so a batch's augmentation is a
pure function of its seed (exact resume).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

PRESETS = ("none", "light", "standard", "strong")


@dataclass(frozen=True)
class Augment:
    """Per-batch augmentation: flip probability 0.5 if ``flip``, translation up to
    ``translate`` pixels (reflect padding), rotation up to ``rotate`` degrees, random erasing
    of one rectangle with probability ``erase``."""

    flip: bool = False
    translate: int = 0
    rotate: float = 0.0
    erase: float = 0.0

    @property
    def active(self) -> bool:
        return self.flip or self.translate > 0 or self.rotate > 0 or self.erase > 0

    def to_dict(self) -> dict:
        return asdict(self)


def preset(name: str, image_size: int, flip_ok: bool = True) -> Augment:
    """Named presets scaled to the image size; ``flip_ok=False`` never flips.

    ``light`` is flips only (without flips, a small shift instead): in short runs
    translations cost accuracy (benchmarks/README.md); translation and erasing pay off in
    longer runs, which ``auto`` gives ``standard``."""
    if name not in PRESETS:
        raise ValueError(f"augment preset must be one of {', '.join(PRESETS)}, got {name!r}")
    t = max(1, round(image_size / 14))
    aug = {
        "none": Augment(),
        "light": Augment(flip=True),
        "standard": Augment(flip=True, translate=t, erase=0.25),
        "strong": Augment(flip=True, translate=2 * t, rotate=10.0, erase=0.5),
    }[name]
    if not flip_ok and name == "light":  # a small shift instead of the mirror
        aug = Augment(translate=t)
    return Augment(aug.flip and flip_ok, aug.translate, aug.rotate, aug.erase)


AUTO_STANDARD_EPOCHS = 20  # ``auto`` is light below this many epochs, standard from it


def choose_augment(name: str, epochs: int, image_size: int, flips: bool, *,
                   translate: int | None = None,
                   rotate: float | None = None, erase: float | None = None) -> Augment:
    """The preset ``name`` (``auto``: light below 20 epochs, standard from there), with
    horizontal flips as ``flips`` says and each other setting given (not None) replacing the
    preset's."""
    if name == "auto":
        name = "light" if epochs < AUTO_STANDARD_EPOCHS else "standard"
    aug = preset(name, image_size, flips)
    return Augment(
        flip=flips,
        translate=aug.translate if translate is None else translate,
        rotate=aug.rotate if rotate is None else rotate,
        erase=aug.erase if erase is None else erase,
    )


def flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    mask = torch.rand(len(x), generator=gen) < 0.5
    return torch.where(mask.to(x.device)[:, None, None, None], x.flip(3), x)


def translate(x: torch.Tensor, r: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to ``r`` pixels in x and y (reflect padding): two gathers."""
    b, c, h, w = x.shape
    r = min(r, h - 1, w - 1)
    if r <= 0:
        return x
    p = F.pad(x, (r, r, r, r), mode="reflect")
    sy = torch.randint(0, 2 * r + 1, (b,), generator=gen).to(x.device)
    sx = torch.randint(0, 2 * r + 1, (b,), generator=gen).to(x.device)
    rows = torch.arange(h, device=x.device) + sy[:, None]
    p = p.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * r))
    cols = torch.arange(w, device=x.device) + sx[:, None]
    return p.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def rotate(x: torch.Tensor, degrees: float, gen: torch.Generator) -> torch.Tensor:
    """Rotate each image by a uniform angle in [-degrees, degrees] (bilinear, black fill)."""
    angle = (torch.rand(len(x), generator=gen) * 2 - 1) * math.radians(degrees)
    cos, sin = angle.cos(), angle.sin()
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def erase(x: torch.Tensor, p: float, gen: torch.Generator, scale: tuple = (0.02, 0.2),
          ratio: tuple = (0.3, 3.3)) -> torch.Tensor:
    """Random erasing (Zhong et al. 2017): with probability ``p`` set one rectangle of area
    ``scale`` and aspect ``ratio`` to 0 (the mean, since images are normalised by then)."""
    b, _, h, w = x.shape
    area = torch.empty(b).uniform_(*scale, generator=gen) * h * w
    logr = torch.empty(b).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen)
    eh = (area * logr.exp()).sqrt().round().clamp(1, h).long()
    ew = (area / logr.exp()).sqrt().round().clamp(1, w).long()
    y0 = (torch.rand(b, generator=gen) * (h - eh + 1)).long()
    x0 = (torch.rand(b, generator=gen) * (w - ew + 1)).long()
    on = torch.rand(b, generator=gen) < p
    ys = torch.arange(h)[None, :]
    xs = torch.arange(w)[None, :]
    my = (ys >= y0[:, None]) & (ys < (y0 + eh)[:, None])
    mx = (xs >= x0[:, None]) & (xs < (x0 + ew)[:, None])
    mask = (my[:, :, None] & mx[:, None, :] & on[:, None, None]).to(x.device)
    return x.masked_fill(mask[:, None], 0.0)


MIN_SIZE = 8


def resize_batch(x: torch.Tensor, scale: float) -> torch.Tensor:
    """A float batch resized to ``scale`` of its size (antialiased bilinear, at least 8 px);
    the batch itself when that is its size."""
    size = max(MIN_SIZE, round(x.shape[-1] * scale))
    if size >= x.shape[-1]:
        return x
    return F.interpolate(x, size=(size, round(x.shape[-2] * size / x.shape[-1])),
                         mode="bilinear", antialias=True, align_corners=False)


def apply_geometric(x: torch.Tensor, aug: Augment, gen: torch.Generator) -> torch.Tensor:
    """Flip, translate and rotate a float batch in pixel space (before normalisation)."""
    if aug.flip:
        x = flip(x, gen)
    if aug.translate > 0:
        x = translate(x, aug.translate, gen)
    if aug.rotate > 0:
        x = rotate(x, aug.rotate, gen)
    return x
