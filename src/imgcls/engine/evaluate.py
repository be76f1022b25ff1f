"""Evaluation loop and the basic classification metrics (loss, top-1, top-5)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .precision import ExecPlan


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    plan: ExecPlan | None = None,
    tta: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 logits and labels (on the CPU) for every batch; ``tta`` averages the logits of
    each image and its mirror image."""
    plan = plan or ExecPlan()
    was_training = model.training
    model = plan.prepare(model).eval()
    logits, labels = [], []
    for x, y in batches:
        x = plan.prepare_input(x)
        with plan.autocast():
            out = model(x).float()
            if tta:
                out = (out + model(x.flip(3)).float()) / 2
        logits.append(out.cpu())
        labels.append(y.cpu())
    model.train(was_training)
    if not logits:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(logits), torch.cat(labels)


def basic_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Cross-entropy loss, top-1 and top-5 accuracy (top-k with k capped at the classes)."""
    if len(labels) == 0:
        return {"loss": float("nan"), "top1": float("nan"), "top5": float("nan"), "n": 0}
    k = min(5, logits.shape[1])
    topk = logits.topk(k, dim=1).indices
    hit = topk == labels[:, None]
    return {
        "loss": F.cross_entropy(logits, labels).item(),
        "top1": hit[:, 0].float().mean().item(),
        "top5": hit.any(1).float().mean().item(),
        "n": len(labels),
    }
