"""Open-set answers: call a prediction "unknown" when its score is below a threshold.

``maxprob`` is the maximum softmax probability (Hendrycks & Gimpel 2017); ``energy`` is the
negative free energy ``T * logsumexp(logits / T)`` (Liu et al. 2020), higher = more familiar.
"""

from __future__ import annotations

import torch


def unknown_scores(logits: torch.Tensor, score: str = "maxprob",
                   temperature: float = 1.0) -> torch.Tensor:
    """Per image, a score where low means "probably none of the known classes"."""
    z = logits.double() / temperature
    if score == "maxprob":
        return z.softmax(1).max(1).values
    if score == "energy":
        return temperature * torch.logsumexp(z, 1)
    raise ValueError(f"score must be 'maxprob' or 'energy', got {score!r}")


def rejection_report(logits: torch.Tensor, labels: torch.Tensor, threshold: float,
                     score: str = "maxprob", temperature: float = 1.0) -> dict:
    """Coverage (share of images answered) and accuracy on the answered ones at ``threshold``."""
    s = unknown_scores(logits, score, temperature)
    keep = s >= threshold
    correct = logits.argmax(1) == labels
    answered = int(keep.sum())
    return {"score": score, "threshold": threshold, "coverage": answered / max(len(labels), 1),
            "accuracy_answered": float(correct[keep].double().mean()) if answered else float("nan"),
            "rejected": len(labels) - answered,
            "rejected_were_wrong": float((~correct[~keep]).double().mean())
            if answered < len(labels) else float("nan")}
