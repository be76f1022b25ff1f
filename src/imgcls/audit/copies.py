"""Exact and near-duplicate images, within a split (``duplicate``) and across the train,
val and test splits (``leak``: a test image that is also a training image inflates every
test figure).

Exact copies are images whose decoded pixels are identical (the same file, or the same
picture saved again losslessly). Near copies (resized, re-encoded, slightly cropped or
recoloured) are found in three steps:

1. candidates: each image's nearest neighbours by an 8 x 8 grey thumbnail (centred and
   scaled, so that brightness and contrast do not count; a slight crop barely moves it);
2. a screen: the two images, grey, 32 px, blurred and brought to the same whole-pixel crop,
   correlate at 0.98 or more;
3. the close comparison (:func:`match`), in colour: one image is cropped by 0-14% a side,
   in 2% steps at 32 px, then in 1% steps around the best crop at 32 px (64 px for images
   of 64 px or more; pairs under 0.99 at 32 px stop there), the sharper one is blurred to
   the other's sharpness (a resized or re-encoded copy has lost its finest detail), and
   the two are a copy when they then correlate at 0.9985 or more *and* no window of a
   quarter of the side differs by more than 0.03 (unit-variance images): a calendar icon
   with another day, a folder with another emblem or two plain T-shirts of Fashion-MNIST
   match as a whole but not everywhere. The thresholds and what they separate are in
   ``benchmarks/audit.md``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

WORK = 32  # the screen compares grey images of at most 32 x 32 pixels
THUMB = 8  # the candidate descriptor: 8 x 8 grey levels (a slight crop barely moves it)
NEIGHBOURS = 10  # candidates per image
MAX_CROP = 0.06  # the crop, per side, that the screen undoes
BLUR = 1.0  # Gaussian sigma (pixels of the 32 px image) before the screen
SCREEN = 0.98  # the screen's correlation a candidate needs to be compared closely
CROPS = tuple(i / 50 for i in range(8))  # the crops (per side) the close comparison tries
CROP_STEP = 0.01  # ... then around the best one, at this step
COARSE = 0.99  # the correlation at 32 px a pair needs for the comparison at full size
SHARP = 0.5  # blur (pixels of the close comparison's size) of every image
LEVELS = (0.0, 0.4, 0.8, 1.2)  # further blur of the sharper image of a pair
MIN_CORR = 0.9985  # correlation of a near copy in the close comparison
MAX_PATCH = 0.03  # mean squared difference of a near copy in its worst window


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


def _blur_matrix(n: int, sigma: float) -> torch.Tensor:
    """(n, n): row i is the Gaussian weights of pixel i's neighbours, edges replicated."""
    r = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-r, r + 1)
    k = torch.exp(-(offsets.float() ** 2) / (2 * sigma**2))
    m = torch.zeros(n, n)
    rows = torch.arange(n)[:, None].expand(n, len(offsets))
    cols = (rows + offsets).clamp(0, n - 1)
    m.index_put_((rows, cols), (k / k.sum()).expand(n, -1), accumulate=True)
    return m


def blur(g: torch.Tensor, sigma: float = BLUR) -> torch.Tensor:
    """A separable Gaussian blur of images (..., H, W), each plane on its own, edges
    replicated: what is left of the picture once re-encoding noise and resampling
    differences are smoothed away. ``sigma`` 0 leaves them as they are. (Two matrix
    products: a one-channel convolution is many times slower on the CPU.)"""
    if sigma <= 0:
        return g
    h, w = g.shape[-2:]
    return _blur_matrix(h, sigma).to(g.dtype) @ g @ _blur_matrix(w, sigma).to(g.dtype).T


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


def _unit(x: torch.Tensor) -> torch.Tensor:
    return standardize(x).reshape(x.shape)


def _crop(x: torch.Tensor, crop: float | torch.Tensor, size: int) -> torch.Tensor:
    """The centre of images ``x`` (N, C, H, W) without ``crop`` (one for all, or one each) of
    each side, resampled to ``size`` x ``size``."""
    scale = (1 - 2 * torch.as_tensor(crop, dtype=torch.float32)).expand(len(x))
    theta = torch.zeros(len(x), 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    grid = F.affine_grid(theta, [len(x), x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", align_corners=False)


def _worst_window(diff: torch.Tensor) -> torch.Tensor:
    """Differences of unit-length images (N, C, S, S): the largest mean, over windows of a
    quarter of the side (overlapping by half), of the squared difference per pixel (summed
    over channels) of the same images scaled to unit variance per pixel."""
    s = diff.shape[-1]
    e = (diff**2).sum(1, keepdim=True) * diff[0].numel() if len(diff) else diff[:, :1]
    return F.avg_pool2d(e, s // 4, stride=s // 8).flatten(1).amax(1)


def _size(images: torch.Tensor) -> int:
    """The side of the close comparison: 64 px for images of 64 px or more, else 32."""
    return 64 if min(images.shape[-2:]) >= 64 else WORK


def _scores(x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """The best correlation of each unit image ``x[i]`` with the unit images ``other[i]``."""
    return torch.einsum("pd,pld->pl", x.flatten(1), other.flatten(2)).amax(1)


def _prepared(images: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images at ``size`` x ``size``, blurred by :data:`SHARP`, and as unit images
    blurred further by each of :data:`LEVELS`: (N, C, S, S), (N, levels, C, S, S)."""
    x = blur(F.interpolate(images.float(), (size, size), mode="bilinear", antialias=True), SHARP)
    return x, torch.stack([_unit(blur(x, s)) for s in LEVELS], 1)


def _coarse(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """At 32 px, each of :data:`CROPS` of one image against the other: (crop ``a``, not
    ``b``; the best crop; its correlation) per pair."""
    (xa, ua), (xb, ub) = _prepared(a, WORK), _prepared(b, WORK)
    best = [
        torch.stack([_scores(_unit(_crop(x, c, WORK)), u) for c in CROPS], 1).max(1)
        for x, u in ((xa, ub), (xb, ua))
    ]
    first = best[0].values >= best[1].values
    crop = torch.tensor(CROPS)[torch.where(first, best[0].indices, best[1].indices)]
    return first, crop, torch.maximum(best[0].values, best[1].values)


def match(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The close comparison of the image pairs ``a[i]``, ``b[i]`` (uint8 N x C x H x W):
    (correlation, mean squared difference in the worst window), the best over crops of
    either image (:data:`CROPS` at 32 px, then :data:`CROP_STEP` around the best at the
    comparison's size) and further blurs of either (:data:`LEVELS`), in colour, unchanged
    by brightness and contrast. Pairs below :data:`COARSE` at 32 px keep that figure (and
    an infinite difference): no finer look lifts them to a copy."""
    first, crop, coarse = _coarse(a, b)
    best, patch = coarse.clone(), torch.full((len(a),), math.inf)
    keep = torch.nonzero(coarse >= COARSE).flatten()
    if not len(keep):
        return best, patch
    size, rows = _size(a), torch.arange(len(keep))
    pick = first[keep, None, None, None]
    z, _ = _prepared(torch.where(pick, a[keep], b[keep]), size)
    _, other = _prepared(torch.where(pick, b[keep], a[keep]), size)
    fine, near = torch.full((len(keep),), -2.0), z
    for step in (-CROP_STEP, 0.0, CROP_STEP):
        x = _unit(_crop(z, (crop[keep] + step).clamp_min(0), size))
        c = _scores(x, other)
        near = torch.where((c > fine)[:, None, None, None], x, near)
        fine = torch.maximum(fine, c)
    fine = torch.full((len(keep),), -2.0)
    for s in LEVELS:  # the cropped one blurred too, in case it is the sharper one
        x = _unit(blur(near, s))
        c, k = torch.einsum("pd,pld->pl", x.flatten(1), other.flatten(2)).max(1)
        better = c > fine
        fine = torch.where(better, c, fine)
        patch[keep[better]] = _worst_window(x[better] - other[rows[better], k[better]])
    best[keep] = fine
    return best, patch


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
    1 for exact copies, else the close comparison's correlation."""

    a: int
    b: int
    score: float
    exact: bool


def find_copies(
    images: torch.Tensor,
    *,
    min_corr: float = MIN_CORR,
    max_patch: float = MAX_PATCH,
    k: int = NEIGHBOURS,
    chunk: int = 20000,
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
    close = []
    for start in range(0, len(cand), chunk):
        part = torch.tensor(cand[start : start + chunk])
        corr = pair_correlation(v, part[:, 0], part[:, 1])
        close += [p for p, c in zip(part.tolist(), corr.tolist()) if c >= SCREEN]
    # a few MB a chunk: fresh large buffers cost more to fault in than to compute
    per = max(8, 2**19 // (images.shape[1] * _size(images) ** 2))
    for start in range(0, len(close), per):
        part = torch.tensor(close[start : start + per])
        corr, patch = match(images[part[:, 0]], images[part[:, 1]])
        for (i, j), c, e in zip(part.tolist(), corr.tolist(), patch.tolist()):
            if c >= min_corr and e <= max_patch:
                pairs[(i, j)] = Pair(i, j, c, False)
    return sorted(pairs.values(), key=lambda p: (-p.score, p.a, p.b))
