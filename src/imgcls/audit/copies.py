"""Exact and near-duplicate images, within a split (``duplicate``) and across the train,
val and test splits (``leak``: a test image that is also a training image inflates every
test figure).

Exact copies are images whose decoded pixels are identical (the same file, or the same
picture saved again losslessly). Near copies (resized, re-encoded, slightly cropped or
recoloured) are found in two steps: candidate pairs are each image's nearest neighbours by
an 8 x 8 grey thumbnail (centred and scaled, so that brightness and contrast do not count;
a slight crop barely moves it), and a candidate is a copy when the two images, grey, at
most 32 px, blurred (sigma 1 px) and brought to the same crop (up to 6% a side, either
way), correlate at 0.998 or more. Distinct images of a plain class (two plain T-shirts of
Fashion-MNIST) correlate at up to 0.992 unaligned and 0.998 aligned; a perceptual hash
(pHash) told them from copies less well than that and missed every cropped copy
(``benchmarks/audit.md``).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

WORK = 32  # copies are compared as grey images of at most 32 x 32 pixels
THUMB = 8  # the candidate descriptor: 8 x 8 grey levels (a slight crop barely moves it)
NEIGHBOURS = 10  # candidates per image
MAX_CROP = 0.06  # the crop, per side, that the comparison undoes
BLUR = 1.0  # Gaussian sigma (pixels of the 32 px image) before comparing
MIN_CORR = 0.998  # aligned, blurred correlation of a near copy


def grey(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float (N, H, W) luma (ITU-R 601-2, as PIL's "L")."""
    x = images.float()
    if x.shape[1] == 3:
        return x[:, 0] * 0.299 + x[:, 1] * 0.587 + x[:, 2] * 0.114
    return x[:, 0]


def shrink(g: torch.Tensor, size: int) -> torch.Tensor:
    """Grey images (N, H, W) at most ``size`` x ``size`` (area-averaged)."""
    if g.shape[-1] <= size and g.shape[-2] <= size:
        return g
    return F.interpolate(
        g[:, None], size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )[:, 0]


def standardize(g: torch.Tensor) -> torch.Tensor:
    """Rows (N, ...) flattened, centred and scaled to unit length: the dot product of two
    is their correlation, unchanged by brightness and contrast (a recoloured copy)."""
    t = g.reshape(len(g), -1)
    t = t - t.mean(1, keepdim=True)
    return t / t.norm(dim=1, keepdim=True).clamp_min(1e-6)


def blur(g: torch.Tensor, sigma: float = BLUR) -> torch.Tensor:
    """A separable Gaussian blur of grey images (N, H, W), edges replicated: what is left
    of the picture once re-encoding noise and resampling differences are smoothed away."""
    r = max(1, math.ceil(3 * sigma))
    k = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float32) ** 2) / (2 * sigma**2))
    k = (k / k.sum()).to(g.dtype)
    x = F.pad(g[:, None], (r, r, 0, 0), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    return x[:, 0]


def zooms(g: torch.Tensor, max_crop: float = MAX_CROP) -> list[torch.Tensor]:
    """Grey images (N, S, S) as they are and cropped by 1, 2, ... pixels a side (up to
    ``max_crop`` of the side) and resized back: the slight crops a copy may have had."""
    n = g.shape[-1]
    out = [g]
    for c in range(1, max(1, round(n * max_crop)) + 1):
        out.append(
            F.interpolate(
                g[:, None, c : n - c, c : n - c], size=(n, n), mode="bilinear", align_corners=False
            )[:, 0]
        )
    return out


def views(g: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Each grey image (N x S x S) blurred and standardised as it is and at each of its
    :func:`zooms`: (N, zooms, S * S). Computed once per image, not once per candidate pair
    (the blur is most of the cost)."""
    out = []
    for start in range(0, len(g), chunk):
        part = g[start : start + chunk]
        out.append(torch.stack([standardize(blur(z)) for z in zooms(part)], 1))
    return torch.cat(out)


def pair_correlation(v: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """The aligned correlation of images ``i`` and ``j`` (index tensors) from their
    :func:`views`: the best of each crop of one against the other as it is."""
    a, b = v[i], v[j]
    one = (a * b[:, :1]).sum(-1).max(1).values  # crops of i against j
    two = (b[:, 1:] * a[:, :1]).sum(-1).max(1).values if b.shape[1] > 1 else one
    return torch.maximum(one, two)


def aligned_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise (row i of ``a`` with row i of ``b``; grey N x S x S) correlation of the
    blurred images, the best over slight crops of either one."""
    n = len(a)
    idx = torch.arange(n)
    return pair_correlation(views(torch.cat([a, b])), idx, idx + n)


def pixel_digests(images: torch.Tensor) -> list[str]:
    """A digest of each image's decoded pixels: equal for exact copies."""
    arr = images.contiguous().numpy()
    return [hashlib.blake2b(a.tobytes(), digest_size=16).hexdigest() for a in arr]


def nearest(
    desc: torch.Tensor, k: int = NEIGHBOURS, chunk: int = 2048
) -> tuple[torch.Tensor, torch.Tensor]:
    """(similarity, index) of each row's ``k`` most similar other rows of ``desc`` (N, D)."""
    k = min(k, len(desc) - 1)
    sims, idx = [], []
    for start in range(0, len(desc), chunk):
        s = desc[start : start + chunk] @ desc.T
        rows = torch.arange(start, min(start + chunk, len(desc)))
        s[rows - start, rows] = -math.inf  # not itself
        v, i = s.topk(k, dim=1)
        sims.append(v)
        idx.append(i)
    return torch.cat(sims), torch.cat(idx)


@dataclass(frozen=True)
class Pair:
    """Two images ``a`` < ``b`` (indices into the audited images) that are copies; ``score``
    1 for exact copies, else the thumbnails' correlation."""

    a: int
    b: int
    score: float
    exact: bool


def find_copies(
    images: torch.Tensor, *, min_corr: float = MIN_CORR, k: int = NEIGHBOURS, chunk: int = 20000
) -> list[Pair]:
    """Every pair of exact or near copies among ``images`` (uint8, N x C x H x W), each
    copy named once: against the first of its group of exact copies."""
    n = len(images)
    if n < 2:
        return []
    pairs: dict[tuple[int, int], Pair] = {}
    first: dict[str, int] = {}
    for i, d in enumerate(pixel_digests(images)):
        if d in first:
            pairs[(first[d], i)] = Pair(first[d], i, 1.0, True)
        else:
            first.setdefault(d, i)
    twins = {p.b for p in pairs.values()}
    g = shrink(grey(images), WORK)
    _, idx = nearest(standardize(shrink(g, THUMB)), k)
    cand = {
        (min(i, j), max(i, j))
        for i, row in enumerate(idx.tolist())
        for j in row
        if i not in twins and j not in twins
    }
    cand = sorted(cand - pairs.keys())
    v = views(g) if cand else g
    for start in range(0, len(cand), chunk):
        part = torch.tensor(cand[start : start + chunk])
        corr = pair_correlation(v, part[:, 0], part[:, 1])
        for (i, j), c in zip(part.tolist(), corr.tolist()):
            if c >= min_corr:
                pairs[(i, j)] = Pair(i, j, c, False)
    return sorted(pairs.values(), key=lambda p: (-p.score, p.a, p.b))
