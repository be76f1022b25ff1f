"""Calibration: expected calibration error, NLL, reliability bins and temperature scaling
(Guo et al. 2017: one scalar T dividing the logits, fitted on the validation split)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def negative_log_likelihood(logits: torch.Tensor, labels: torch.Tensor,
                            temperature: float = 1.0) -> float:
    return F.cross_entropy(logits.double() / temperature, labels).item()


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> dict:
    """Per equal-width confidence bin: count, mean confidence and accuracy of the top-1."""
    conf, pred = probs.max(1)
    correct = (pred == labels).double()
    bins = torch.clamp((conf * n_bins).long(), max=n_bins - 1)
    count = torch.bincount(bins, minlength=n_bins).double()
    conf_sum = torch.bincount(bins, weights=conf.double(), minlength=n_bins)
    acc_sum = torch.bincount(bins, weights=correct, minlength=n_bins)
    nz = count.clamp_min(1)
    return {"edges": torch.linspace(0, 1, n_bins + 1).tolist(), "count": count.tolist(),
            "confidence": (conf_sum / nz).tolist(), "accuracy": (acc_sum / nz).tolist()}


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor,
                               n_bins: int = 15) -> float:
    """sum over bins of (bin share) x |accuracy - confidence|, equal-width bins."""
    b = reliability_bins(probs, labels, n_bins)
    n = max(sum(b["count"]), 1)
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
