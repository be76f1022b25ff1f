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


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 200) -> float:
    """The T > 0 minimising the NLL of ``logits / T`` (LBFGS on log T, so T stays positive)."""
    if len(labels) == 0:
        return 1.0
    logits = logits.double()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    return t if 1e-3 < t < 1e3 else 1.0
