"""Open-set answers: call a prediction "unknown" when its score is below a threshold.

``maxprob`` is the maximum softmax probability (Hendrycks & Gimpel 2017); ``energy`` is the
negative free energy ``T * logsumexp(logits / T)`` (Liu et al. 2020), higher = more familiar.
"""

from __future__ import annotations

import torch


def unknown_scores(logits: torch.Tensor, score: str = "maxprob",
                   temperature: float = 1.0) -> torch.Tensor:
    """Per image, a score where low means "probably none of the known classes" (float64)."""
    if score not in ("maxprob", "energy"):
        raise ValueError(f"score must be 'maxprob' or 'energy', got {score!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = logits.double() / temperature
    if len(z) == 0:  # an empty batch may come as (0, 0), where max over classes fails
        return torch.zeros(0, dtype=torch.float64)
    if score == "maxprob":
        return z.softmax(1).max(1).values
    return temperature * torch.logsumexp(z, 1)


def rejection_report(logits: torch.Tensor, labels: torch.Tensor, threshold: float,
                     score: str = "maxprob", temperature: float = 1.0) -> dict:
    """Coverage (share of images answered: score >= ``threshold``), accuracy of the top-1
    (``argmax``) on the answered ones, and the share of the rejected that were wrong. A share
    of no images is NaN."""
    s = unknown_scores(logits, score, temperature)
    labels = labels.long().flatten()
    keep = s >= threshold
    n = len(labels)
    correct = logits.argmax(1) == labels if n else torch.zeros(0, dtype=torch.bool)
    answered = int(keep.sum())
    nan = float("nan")
    return {"score": score, "threshold": threshold,
            "coverage": answered / n if n else nan,
            "accuracy_answered": float(correct[keep].double().mean()) if answered else nan,
            "rejected": n - answered,
            "rejected_were_wrong": float((~correct[~keep]).double().mean())
            if answered < n else nan}
