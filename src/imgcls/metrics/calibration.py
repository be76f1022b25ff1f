"""Calibration: expected calibration error, NLL, reliability bins and temperature scaling
(Guo et al. 2017: one scalar T dividing the logits, fitted on the validation split)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def negative_log_likelihood(logits: torch.Tensor, labels: torch.Tensor,
                            temperature: float = 1.0) -> float:
    """Mean cross-entropy of ``logits / temperature`` in float64; NaN for no images."""
    if len(labels) == 0:
        return float("nan")
    return F.cross_entropy(logits.double() / temperature, labels.long()).item()


def _bin_index(conf: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Bin ``i`` holds confidences in ``[i / n, (i + 1) / n)``, the last bin also 1.0."""
    # compared with the edges themselves: ``(conf * n).long()`` in float32 rounds a confidence
    # just under an edge up into the next bin (and can disagree with the edges reported)
    edges = torch.arange(n_bins + 1, dtype=torch.float64) / n_bins
    idx = torch.bucketize(conf.double().cpu(), edges, right=True) - 1
    return idx.clamp(0, n_bins - 1)


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> dict:
    """Per equal-width confidence bin: count, mean confidence and accuracy of the top-1
    (ties go to the lower class index, as ``argmax``); 0 for an empty bin. Bin ``i`` holds
    confidences in ``[i / n_bins, (i + 1) / n_bins)``, the last one also 1.0 (and anything
    above it from rounding)."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    edges = (torch.arange(n_bins + 1, dtype=torch.float64) / n_bins).tolist()
    if len(labels) == 0:
        zeros = [0.0] * n_bins
        return {"edges": edges, "count": zeros, "confidence": zeros, "accuracy": zeros}
    conf = probs.max(1).values.double().cpu()
    correct = (probs.argmax(1).cpu() == labels.long().cpu()).double()
    bins = _bin_index(conf, n_bins)
    count = torch.bincount(bins, minlength=n_bins).double()
    conf_sum = torch.bincount(bins, weights=conf, minlength=n_bins)
    acc_sum = torch.bincount(bins, weights=correct, minlength=n_bins)
    nz = count.clamp_min(1)  # counts are integers: only an empty bin is changed, its sums are 0
    return {"edges": edges, "count": count.tolist(),
            "confidence": (conf_sum / nz).tolist(), "accuracy": (acc_sum / nz).tolist()}


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor,
                               n_bins: int = 15) -> float:
    """sum over bins of (bin share) x |accuracy - confidence|, equal-width bins as in
    ``reliability_bins``; NaN for no images."""
    b = reliability_bins(probs, labels, n_bins)
    n = sum(b["count"])
    if n == 0:
        return float("nan")
    return sum(c / n * abs(a - f) for c, a, f in zip(b["count"], b["accuracy"], b["confidence"]))


# Temperatures outside these bounds are not calibration but a degenerate fit: a validation
# split the model gets (nearly) all right drives the NLL's minimum towards T = 0, where every
# probability is 0 or 1.
TEMPERATURE_BOUNDS = (0.2, 10.0)
# What a validation split needs before a temperature is fitted on it: the fit is driven by the
# images the model gets wrong, so it needs enough of them, out of enough images.
MIN_VAL_IMAGES = 100
MIN_VAL_ERRORS = 10


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor,
                    bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> float:
    """The T within ``bounds`` minimising the NLL of ``logits / T``. The NLL is convex in
    1/T, so a golden-section search on 1/T finds its minimum, or the bound nearest to it."""
    if len(labels) == 0:
        return 1.0
    z = logits.double()
    picked = z.gather(1, labels[:, None].long()).squeeze(1)

    def nll(beta: float) -> float:
        return float((torch.logsumexp(beta * z, 1) - beta * picked).mean())

    lo, hi = 1 / bounds[1], 1 / bounds[0]
    ratio = (5 ** 0.5 - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(a), nll(b)
    while hi - lo > 1e-10:
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(b)
    # the minimum found, or a bound when the NLL still falls there
    best = min((1 / bounds[1], (lo + hi) / 2, 1 / bounds[0]), key=nll)
    return float(min(max(1 / best, bounds[0]), bounds[1]))


def calibration_temperature(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, str]:
    """The temperature to store for validation ``logits``, and a line saying how it was
    chosen: fitted within :data:`TEMPERATURE_BOUNDS`, or left at 1 when the split has fewer
    than :data:`MIN_VAL_IMAGES` images or fewer than :data:`MIN_VAL_ERRORS` mistakes."""
    n = len(labels)
    errors = int((logits.argmax(1) != labels).sum()) if n else 0
    if n < MIN_VAL_IMAGES:
        return 1.0, (f"temperature left at 1: {n} val images are too few to fit it "
                     f"(at least {MIN_VAL_IMAGES})")
    if errors < MIN_VAL_ERRORS:
        return 1.0, (f"temperature left at 1: the model gets {n - errors} of {n} val images "
                     f"right, too few mistakes to fit it (at least {MIN_VAL_ERRORS})")
    t = fit_temperature(logits, labels)
    bound = " (at its bound)" if any(abs(t - b) < 1e-3 * b for b in TEMPERATURE_BOUNDS) else ""
    return t, f"temperature {t:.3f}{bound} fitted on {n} val images"
