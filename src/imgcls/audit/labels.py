"""Mislabelled images: training images by the area under the margin (AUM, Pleiss et al.
2020) that every run records, held-out images by the final model's confident disagreement.

A training image's margin at an epoch is the logit of its given label minus the largest
other logit at the step that trained on it (``engine.callbacks.margins``); its AUM is the
mean over the epochs. A correctly labelled image is learnt early and its margin grows; a
mislabelled one is pulled towards the class it looks like, so its margin stays low or
negative until the network memorises it, late if ever. The evidence is gathered before
each step's update, on an augmented view, so it is less memorised than the final model's
fit, and it costs nothing beyond the training run.

Validation and test images were never trained on, so the final model's probabilities are
out-of-sample there: an image is flagged when the model predicts another class with at
least that class's own average confidence on the images labelled with it (the confident
learning rule of Northcutt et al. 2021, per-class thresholds).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..errors import RunError
from ..utils import read_safetensors

# A training image is flagged when its given label trails the best other class by more than
# a logit on average: classes that look alike (shirts and T-shirts) trail each other a
# little, a wrong label by more (the cutoffs compared: benchmarks/audit.md).
AUM_BELOW = -1.0


@dataclass
class TrainingMargins:
    """The margins a run recorded: (epochs, images) float, NaN where an image was not seen,
    and the runner-up class at each (-1: not seen)."""

    margin: torch.Tensor
    runner_up: torch.Tensor

    @property
    def images(self) -> int:
        return self.margin.shape[1]


def read_margins(path: str | os.PathLike) -> TrainingMargins:
    """The margins file of a run (``RunDir.margins``); RunError naming it when unreadable."""
    tensors, meta = read_safetensors(path)
    if "margin" not in tensors or "runner_up" not in tensors:
        raise RunError(f"{path}: not a margins file (no margin or runner_up tensor)")
    return TrainingMargins(tensors["margin"].float(), tensors["runner_up"].long())


def area_under_margin(margin: torch.Tensor) -> torch.Tensor:
    """Each image's mean margin over the epochs it was seen in (NaN if none)."""
    seen = ~margin.isnan()
    total = torch.where(seen, margin, torch.zeros(())).sum(0)
    count = seen.sum(0)
    return torch.where(count > 0, total / count.clamp_min(1), torch.full((), float("nan")))


def most_frequent_runner_up(runner_up: torch.Tensor, classes: int) -> torch.Tensor:
    """Each image's most frequent runner-up class over the later half of the epochs (the
    class the network pulled it towards), -1 where it was never seen."""
    later = runner_up[runner_up.shape[0] // 2 :]
    counts = torch.zeros(later.shape[1], classes + 1, dtype=torch.int32)
    counts.scatter_add_(1, (later + 1).T.contiguous(), torch.ones_like(later.T, dtype=torch.int32))
    counts[:, 0] = 0  # not seen
    best = counts.argmax(1) - 1
    return torch.where(counts.sum(1) > 0, best, torch.full_like(best, -1))


@dataclass(frozen=True)
class LabelIssue:
    index: int  # into the audited part
    score: float  # how many logits the given label trails by (> 0 means it loses)
    suggested: int


def training_label_issues(
    m: TrainingMargins, classes: int, below: float = AUM_BELOW
) -> tuple[list[LabelIssue], torch.Tensor]:
    """Training images whose AUM is below ``below``, and every image's AUM."""
    aum = area_under_margin(m.margin)
    suggested = most_frequent_runner_up(m.runner_up, classes)
    flagged = torch.nonzero(aum < below).flatten().tolist()
    return [LabelIssue(i, float(-aum[i]), int(suggested[i])) for i in flagged], aum


def held_out_label_issues(probs: torch.Tensor, labels: torch.Tensor) -> list[LabelIssue]:
    """Held-out images (``probs`` N x C of the final model) that the model assigns to another
    class with at least that class's per-class threshold: the mean probability of the class
    over the images labelled with it. The score is how much more probable the predicted
    class is than the given label."""
    if len(labels) == 0:
        return []
    c = probs.shape[1]
    thresholds = torch.ones(c)
    for k in range(c):
        mine = labels == k
        if mine.any():
            thresholds[k] = probs[mine, k].mean()
    pred = probs.argmax(1)
    p_pred = probs.gather(1, pred[:, None]).squeeze(1)
    p_given = probs.gather(1, labels[:, None]).squeeze(1)
    flagged = (pred != labels) & (p_pred >= thresholds[pred])
    return [
        LabelIssue(i, float(p_pred[i] - p_given[i]), int(pred[i]))
        for i in torch.nonzero(flagged).flatten().tolist()
    ]
