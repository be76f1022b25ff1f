"""Confusion matrix, per-class precision / recall / F1, averages, most-confused pairs."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts ``C[true, predicted]`` as an int64 (classes x classes) tensor."""
    idx = labels.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes)


def _safe_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # 0/0 is reported as 0 (sklearn's zero_division=0): a class never predicted has no precision
    return torch.where(b > 0, a / b.clamp_min(1), torch.zeros_like(a))


def classification_report(logits: torch.Tensor, labels: torch.Tensor,
                          class_names: list[str]) -> dict:
    """Loss, top-1, top-5, the confusion matrix and per-class precision, recall, F1 and
    support, with macro and support-weighted averages."""
    n_cls = len(class_names)
    pred = logits.argmax(1)
    cm = confusion_matrix(pred, labels, n_cls)
    tp = cm.diag().double()
    support = cm.sum(1).double()
    predicted = cm.sum(0).double()
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    k = min(5, n_cls)
    top5 = (logits.topk(k, 1).indices == labels[:, None]).any(1).double().mean().item()
    weights = support / support.sum().clamp_min(1)
    per_class = [
        {"class": name, "precision": precision[i].item(), "recall": recall[i].item(),
         "f1": f1[i].item(), "support": int(support[i].item())}
        for i, name in enumerate(class_names)
    ]
    return {
        "n": len(labels),
        "loss": F.cross_entropy(logits.float(), labels).item() if len(labels) else float("nan"),
        "top1": (pred == labels).double().mean().item() if len(labels) else float("nan"),
        "top5": top5 if len(labels) else float("nan"),
        "per_class": per_class,
        "macro": {"precision": precision.mean().item(), "recall": recall.mean().item(),
                  "f1": f1.mean().item()},
        "weighted": {"precision": (precision * weights).sum().item(),
                     "recall": (recall * weights).sum().item(),
                     "f1": (f1 * weights).sum().item()},
        "confusion": cm.tolist(),
    }


def most_confused(cm: list[list[int]] | torch.Tensor, class_names: list[str],
                  top: int = 10) -> list[dict]:
    """The largest off-diagonal cells: (true class, predicted as, count, share of the true
    class)."""
    m = torch.as_tensor(cm).clone()
    support = m.sum(1)
    m.fill_diagonal_(0)
    flat = m.flatten()
    order = flat.argsort(descending=True)[:top]
    n = len(class_names)
    return [{"true": class_names[i // n], "predicted": class_names[i % n],
             "count": int(flat[i]), "rate": float(flat[i] / max(int(support[i // n]), 1))}
            for i in order.tolist() if flat[i] > 0]
