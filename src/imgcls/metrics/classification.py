"""Confusion matrix, per-class precision / recall / F1, averages, top-k, most-confused pairs,
and the loss / top-1 / top-5 summary (:func:`basic_metrics`).

Conventions (those of scikit-learn with ``zero_division=0`` and ``labels=range(C)``): a ratio
whose denominator is 0 is reported as 0, and the macro average is the plain mean over all C
classes of the model, including classes absent from the labels and classes never predicted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_classes(x: torch.Tensor, num_classes: int, what: str) -> None:
    # bincount would fold an out-of-range index into another class's cell (or fail on reshape)
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= num_classes):
        raise ValueError(f"{what} must lie in [0, {num_classes}), got {int(x.min())}.."
                         f"{int(x.max())}")


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts ``C[true, predicted]`` as an int64 (classes x classes) tensor."""
    pred, labels = pred.long().flatten(), labels.long().flatten()
    if len(pred) != len(labels):
        raise ValueError(f"{len(pred)} predictions for {len(labels)} labels")
    _check_classes(labels, num_classes, "labels")
    _check_classes(pred, num_classes, "predictions")
    idx = labels * num_classes + pred
    return torch.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes)


def _safe_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a / b`` where ``b > 0``, else 0 (scikit-learn's ``zero_division=0``)."""
    # the true denominator wherever it is positive; the 1 only stands in where the result is
    # thrown away (clamping b to 1 instead turned F1 = 2PR / (P + R) into 2PR when P + R < 1)
    return torch.where(b > 0, a / torch.where(b > 0, b, torch.ones_like(b)), torch.zeros_like(a))


def top_k_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Share of images whose true class is among the ``k`` highest logits (all of them when
    ``k`` >= classes); NaN for no images.

    Ties are broken toward the lower class index, as ``argmax`` does, so top-1 is the accuracy
    of ``logits.argmax(1)`` and a top-1 hit is always a top-k hit (``topk`` leaves the order of
    ties unspecified)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    labels = labels.long().flatten()
    if len(labels) == 0:
        return float("nan")
    hits = 0
    for lo in range(0, len(labels), 8192):  # in blocks: three (images x classes) masks
        z, y = logits[lo:lo + 8192], labels[lo:lo + 8192, None]
        s_y = z.gather(1, y)
        lower = torch.arange(z.shape[1], device=z.device)[None, :] < y
        rank = ((z > s_y) | ((z == s_y) & lower)).sum(1)  # classes ranked before the true one
        hits += int((rank < k).sum())
    return hits / len(labels)


def basic_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Cross-entropy loss, top-1 and top-5 accuracy (top-k with k capped at the classes)."""
    if len(labels) == 0:
        return {"loss": float("nan"), "top1": float("nan"), "top5": float("nan"), "n": 0}
    # the same definitions as eval's report: ties ranked as argmax ranks them, loss in fp64
    return {
        "loss": F.cross_entropy(logits.double(), labels).item(),
        "top1": top_k_accuracy(logits, labels, 1),
        "top5": top_k_accuracy(logits, labels, 5),
        "n": len(labels),
    }


def classification_report(logits: torch.Tensor, labels: torch.Tensor,
                          class_names: list[str], macro_over: str = "all") -> dict:
    """Loss, top-1, top-5, the confusion matrix and per-class precision, recall, F1 and
    support, with macro and support-weighted averages.

    Everything is computed in float64. A class never predicted has precision 0, a class absent
    from ``labels`` recall 0, and F1 is 0 when precision and recall are both 0. ``macro`` is
    the mean over all ``len(class_names)`` classes (scikit-learn's ``average="macro"`` with
    ``labels=range(C)``); with ``macro_over="present"``, over the classes present in
    ``labels`` (``labels=`` those classes: data holding some of the model's classes), named
    in ``absent_classes``. ``weighted`` weighs each class by its support. With no images the
    per-class figures are 0 and loss, top-1, top-5 and both averages are NaN."""
    if macro_over not in ("all", "present"):
        raise ValueError(f"macro_over must be all or present, got {macro_over!r}")
    n_cls = len(class_names)
    labels = labels.long().flatten()
    n = len(labels)
    if n == 0:
        logits = logits.reshape(0, n_cls)  # an empty batch may come as (0, 0)
    if logits.ndim != 2 or logits.shape[1] != n_cls:
        raise ValueError(f"logits of shape {tuple(logits.shape)} for {n_cls} classes")
    pred = logits.argmax(1)
    cm = confusion_matrix(pred, labels, n_cls)
    tp = cm.diag().double()
    support = cm.sum(1).double()
    predicted = cm.sum(0).double()
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    # 2PR / (P + R) in counts: one division, and the form scikit-learn uses
    f1 = _safe_div(2 * tp, support + predicted)
    weights = support / max(n, 1)
    nan = float("nan")
    macro = support > 0 if macro_over == "present" and n else torch.ones(n_cls, dtype=bool)
    per_class = [
        {"class": name, "precision": precision[i].item(), "recall": recall[i].item(),
         "f1": f1[i].item(), "support": int(support[i].item())}
        for i, name in enumerate(class_names)
    ]
    return {
        "n": n,
        # float64: float32 is off by ~1e-7, 1e-4 of the loss when that is small
        "loss": F.cross_entropy(logits.double(), labels).item() if n else nan,
        "top1": top_k_accuracy(logits, labels, 1),
        "top5": top_k_accuracy(logits, labels, 5),
        "per_class": per_class,
        "macro": {"precision": precision[macro].mean().item() if n else nan,
                  "recall": recall[macro].mean().item() if n else nan,
                  "f1": f1[macro].mean().item() if n else nan},
        "absent_classes": [c for c, s in zip(class_names, support.tolist()) if not s],
        "weighted": {"precision": (precision * weights).sum().item() if n else nan,
                     "recall": (recall * weights).sum().item() if n else nan,
                     "f1": (f1 * weights).sum().item() if n else nan},
        "confusion": cm.tolist(),
    }


def most_confused(cm: list[list[int]] | torch.Tensor, class_names: list[str],
                  top: int = 10) -> list[dict]:
    """The largest off-diagonal cells: (true class, predicted as, count, share of the true
    class); equal counts in row-major order."""
    m = torch.as_tensor(cm).clone()
    support = m.sum(1)
    m.fill_diagonal_(0)
    flat = m.flatten()
    # stable, so equal counts come out in the same order on every run and machine
    order = torch.sort(flat, descending=True, stable=True).indices[:max(top, 0)]
    n = len(class_names)
    return [{"true": class_names[i // n], "predicted": class_names[i % n],
             "count": int(flat[i]), "rate": float(flat[i] / max(int(support[i // n]), 1))}
            for i in order.tolist() if flat[i] > 0]
