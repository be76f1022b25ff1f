"""Semi-supervised learning from unlabelled images: each method an objective the trainer is
given (FixMatch, FreeMatch, pseudo-labels, distillation from a teacher), the teacher's
targets, label propagation and the strong augmentation."""

from .build import distill_targets, ssl_objective, unlabeled_images

__all__ = ["distill_targets", "ssl_objective", "unlabeled_images"]
