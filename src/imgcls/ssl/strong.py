"""Strong augmentation for semi-supervised learning (FixMatch's RandAugment + Cutout), done on
whole batches as tensor ops like the rest of the fast data path: every image gets two
randomly chosen operations at random magnitudes, then one cut-out square."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..data.augment import erase

N_OPS = 2


def _per_image(gen: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return torch.empty(n).uniform_(lo, hi, generator=gen)[:, None, None, None]


def _colour_ops(x: torch.Tensor, op: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Pixel-value operations on x in [0, 1]; ``op`` holds each image's operation index."""
    n = len(x)
    mean = x.mean((1, 2, 3), keepdim=True)
    lo = x.amin((1, 2, 3), keepdim=True)
    hi = x.amax((1, 2, 3), keepdim=True)
    levels = torch.randint(2, 5, (n,), generator=gen).float()[:, None, None, None]
    candidates = [
        x * _per_image(gen, n, 0.05, 1.95),  # brightness
        mean + (x - mean) * _per_image(gen, n, 0.05, 1.95),  # contrast
        torch.where(x >= _per_image(gen, n, 0.0, 1.0), 1 - x, x),  # solarize
        torch.floor(x * 2**levels) / 2**levels,  # posterize to 2..4 bits
        (x - lo) / (hi - lo).clamp_min(1e-3),  # autocontrast
        x,  # identity
    ]
    out = x
    for k, y in enumerate(candidates):
        out = torch.where((op == k)[:, None, None, None], y, out)
    return out.clamp(0, 1)


def _geometric(x: torch.Tensor, op: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Rotate (up to 30 degrees), shear (0.3) or translate (30%), one affine warp per batch."""
    n = len(x)
    mag = torch.empty(n).uniform_(-1, 1, generator=gen)
    theta = torch.eye(2, 3).repeat(n, 1, 1)
    a = mag * math.radians(30)
    rot = op == 0
    theta[rot, 0, 0], theta[rot, 0, 1] = a[rot].cos(), -a[rot].sin()
    theta[rot, 1, 0], theta[rot, 1, 1] = a[rot].sin(), a[rot].cos()
    theta[op == 1, 0, 1] = 0.3 * mag[op == 1]  # shear x
    theta[op == 2, 1, 0] = 0.3 * mag[op == 2]  # shear y
    theta[op == 3, 0, 2] = 0.6 * mag[op == 3]  # translate x (grid units: 2 = full width)
    theta[op == 4, 1, 2] = 0.6 * mag[op == 4]  # translate y
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def strong_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``N_OPS`` random operations per image (geometric or colour, 11 in all) on a float batch
    in [0, 1] (pixel space, before normalisation)."""
    n = len(x)
    for _ in range(N_OPS):
        op = torch.randint(0, 11, (n,), generator=gen).to(x.device)
        geo = op < 5
        x = torch.where(geo[:, None, None, None], _geometric(x, torch.where(geo, op, -1), gen),
                        _colour_ops(x, torch.where(geo, -1, op - 5), gen))
    return x


def cutout(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One square of up to half the image side set to the mean (FixMatch's Cutout)."""
    return erase(x, 1.0, gen, scale=(0.05, 0.25), ratio=(1.0, 1.0))
