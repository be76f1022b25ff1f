"""The forward pass over batches that training and inference share: each image's fp32
logits (and pooled features), averaged over the views of test-time augmentation."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TTA_MODES
from .plan import ExecPlan


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` moved by (dy, dx) pixels, the uncovered edge filled by reflection."""
    h, w = x.shape[-2:]
    p = F.pad(x, (1, 1, 1, 1), mode="reflect")
    return p[..., 1 - dy:1 - dy + h, 1 - dx:1 - dx + w]


def tta_views(x: torch.Tensor, tta: str) -> list[torch.Tensor]:
    """The views whose logits test-time augmentation averages: the image (``none``), also
    its mirror image (``flip``), also both moved by one pixel up, down, left and right
    (``shift``, 10 views; for nets trained with translations, as ``--augment standard``)."""
    if tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {', '.join(TTA_MODES)}, got {tta!r}")
    views = [x] if tta == "none" else [x, x.flip(3)]
    if tta == "shift":
        views += [_shift(v, dy, dx) for v in views[:2]
                  for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1))]
    return views


def predict_logits(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    plan: ExecPlan | None = None,
    tta: bool | str = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 logits and labels (on the CPU) for every batch; ``tta`` (a mode of
    :func:`tta_views`; True is ``flip``) averages the logits of each image's views."""
    logits, labels, _ = predict_outputs(model, batches, plan, tta)
    return logits, labels


@torch.no_grad()
def predict_outputs(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    plan: ExecPlan | None = None,
    tta: bool | str = False,
    features: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """:func:`predict_logits`, and with ``features`` also each image's pooled features before
    the classifier (``forward_head(pre_logits=True)`` of the model contract), averaged over
    the TTA views like the logits."""
    mode = ("flip" if tta else "none") if isinstance(tta, bool) else tta
    plan = plan or ExecPlan()
    was_training = model.training
    model = plan.prepare(model).eval()

    def outputs(v: torch.Tensor) -> list[torch.Tensor]:
        if not features:
            return [model(v).float()]
        fm = model.forward_features(v)
        return [model.forward_head(fm).float(), model.forward_head(fm, pre_logits=True).float()]

    logits, labels, feats = [], [], []
    for x, y in batches:
        x = plan.prepare_input(x)
        with plan.autocast():
            views = [outputs(plan.prepare_input(v)) for v in tta_views(x, mode)]
        logits.append((sum(v[0] for v in views) / len(views)).cpu())
        if features:
            feats.append((sum(v[1] for v in views) / len(views)).cpu())
        labels.append(y.cpu())
    model.train(was_training)
    if not logits:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long), None
    return torch.cat(logits), torch.cat(labels), torch.cat(feats) if features else None
