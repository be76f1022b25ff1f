"""The semi-supervised methods, each an objective the trainer is given: the labelled batch's
cross-entropy plus ``weight`` x a loss on a batch of unlabelled images drawn for the same
step (:class:`~imgcls.ssl.loader.UnlabeledLoader`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..engine.trainer import CrossEntropy, Forward
from .loader import UnlabeledLoader


class SemiSupervised(CrossEntropy):
    """The shared step: a forward pass of the labelled batch joined with one view of the
    unlabelled batch (``strong_view``: the strong one, else the weak one) and, for methods
    with ``weak_pass``, a forward pass of the weak view without gradient first (cheaper than
    passing it through backward too, which it needs no gradient from).
    ``train_pseudo_label_rate`` in the epoch's record is the share of unlabelled images that
    taught."""

    weak_pass = False
    strong_view = True

    def __init__(self, unlabeled: UnlabeledLoader, supervised: CrossEntropy,
                 weight: float = 1.0) -> None:
        super().__init__(supervised.weight, supervised.label_smoothing)
        self.unlabeled, self.unlabeled_weight = unlabeled, weight
        self.mask_sum = 0.0  # of the epoch in progress

    def __call__(self, forward: Forward, x: torch.Tensor, y: torch.Tensor, step: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        # at the labelled batch's size (which progressive resizing makes smaller early on)
        weak, strong, teacher = self.unlabeled.batch(step, size=x.shape[-1])
        n = len(x)
        out_weak = None
        if self.weak_pass:
            with torch.no_grad():
                out_weak = forward(weak).float()
        out = forward(torch.cat([x, strong if self.strong_view else weak])).float()
        logits, target = out[:n], out[n:]
        unsup, rate = self.unlabeled_loss(target, target if out_weak is None else out_weak,
                                          teacher)
        self.mask_sum += rate
        return logits, self.loss(logits, y) + self.unlabeled_weight * unsup

    def unlabeled_loss(self, out: torch.Tensor, out_weak: torch.Tensor,
                       teacher: torch.Tensor | None) -> tuple[torch.Tensor, float]:
        """(loss on the unlabelled view's logits ``out``, share of images that taught)."""
        raise NotImplementedError

    def epoch_record(self, batches: int) -> dict[str, float]:
        return {"train_pseudo_label_rate": self.mask_sum / max(batches, 1)}

    def end_epoch(self) -> None:
        self.mask_sum = 0.0

    def state_dict(self) -> dict:
        return {"mask_sum": self.mask_sum}

    def load_state_dict(self, state: dict) -> None:
        self.mask_sum = state.get("mask_sum", 0.0)


class FixMatch(SemiSupervised):
    """FixMatch (Sohn et al. 2020): the weak view's confident predictions (max probability
    at least ``threshold``) are hard labels for the strong view."""

    weak_pass = True

    def __init__(self, unlabeled: UnlabeledLoader, supervised: CrossEntropy,
                 weight: float = 1.0, threshold: float = 0.95) -> None:
        super().__init__(unlabeled, supervised, weight)
        self.threshold = threshold

    def thresholds(self, probs: torch.Tensor, conf: torch.Tensor) -> torch.Tensor | float:
        return self.threshold

    def unlabeled_loss(self, out: torch.Tensor, out_weak: torch.Tensor,
                       teacher: torch.Tensor | None) -> tuple[torch.Tensor, float]:
        probs = out_weak.detach().softmax(1)
        conf, pseudo = probs.max(1)
        bar = self.thresholds(probs, conf)
        mask = (conf >= (bar[pseudo] if isinstance(bar, torch.Tensor) else bar)).float()
        unsup = (F.cross_entropy(out, pseudo, reduction="none") * mask).mean()
        return unsup, float(mask.mean())


class FreeMatch(FixMatch):
    """FixMatch with FreeMatch's self-adaptive thresholds (Wang et al. 2023), one per class:
    the running mean (momentum 0.999, from 1/classes) of the model's top confidence on the
    unlabelled batches, scaled by each class's running mean probability relative to the
    largest. Low while the model is unsure, so the unlabelled images teach from the first
    steps instead of waiting for confidences of 0.95; lower for the classes it is least sure
    of. The running means are part of the checkpoint, so a resumed run goes on with the same
    values; a batch with non-finite predictions (its step will be skipped) leaves them as
    they are."""

    def __init__(self, unlabeled: UnlabeledLoader, supervised: CrossEntropy,
                 weight: float = 1.0) -> None:
        super().__init__(unlabeled, supervised, weight)
        self.confidence, self.class_probs = 0.0, []  # empty before the first step

    def thresholds(self, probs: torch.Tensor, conf: torch.Tensor) -> torch.Tensor:
        m = 0.999
        if not self.class_probs:
            self.confidence = 1.0 / probs.shape[1]
            self.class_probs = [self.confidence] * probs.shape[1]
        p = torch.tensor(self.class_probs)
        if torch.isfinite(probs).all():
            self.confidence = m * self.confidence + (1 - m) * float(conf.mean())
            p = m * p + (1 - m) * probs.mean(0).cpu()
            self.class_probs = p.tolist()
        return (self.confidence * p / p.max()).to(probs.device)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "confidence": self.confidence,
                "class_probs": self.class_probs}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.confidence = state.get("confidence", 0.0)
        self.class_probs = state.get("class_probs", [])


class PseudoLabel(FixMatch):
    """Pseudo-labelling (Lee 2013): the confident predictions are labels for the weak view
    itself, in one pass with the labelled batch."""

    weak_pass = False
    strong_view = False


class Distill(SemiSupervised):
    """Noisy Student (Xie et al. 2020): a fixed teacher's class probabilities, worked out
    once before training (:func:`~imgcls.ssl.teacher.teacher_targets`), are soft targets for
    the strong view; every unlabelled image teaches."""

    def unlabeled_loss(self, out: torch.Tensor, out_weak: torch.Tensor,
                       teacher: torch.Tensor | None) -> tuple[torch.Tensor, float]:
        return F.cross_entropy(out, teacher), 1.0


METHODS = {"fixmatch": FixMatch, "freematch": FreeMatch, "pseudo": PseudoLabel,
           "distill": Distill}


def make_objective(method: str, unlabeled: UnlabeledLoader, supervised: CrossEntropy, *,
                   weight: float = 1.0, threshold: float = 0.95) -> SemiSupervised:
    """The objective of ``--ssl method``."""
    cls = METHODS[method]
    if issubclass(cls, FixMatch) and cls is not FreeMatch:
        return cls(unlabeled, supervised, weight, threshold)
    return cls(unlabeled, supervised, weight)
