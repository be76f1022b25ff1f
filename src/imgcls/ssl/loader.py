"""Batches of unlabelled images for semi-supervised training, in two views."""

from __future__ import annotations

import torch

from ..data.augment import Augment, apply_geometric, resize_batch
from ..data.loader import batch_generator
from ..runtime.preprocess import normalize
from .strong import cutout, strong_augment


class UnlabeledLoader:
    """Two views of unlabelled images for semi-supervised training: a weak one (the run's
    flip / translate augmentation) and a strong one (RandAugment-like ops plus Cutout), with
    each image's row of ``targets`` (a teacher's class probabilities) when there are some.

    The batch for optimisation step ``s`` is a pure function of ``(seed, s)``, so a resumed
    run draws the same unlabelled images; the data cycle through epochs of their own.
    """

    def __init__(self, images: torch.Tensor, batch_size: int, *, mean: list[float],
                 std: list[float], weak: Augment, seed: int = 0,
                 device: str | torch.device = "cpu", channels_last: bool = False,
                 rank: int = 0, world_size: int = 1, targets: torch.Tensor | None = None
                 ) -> None:
        self.images, self.targets = images, targets
        self.batch_size, self.mean, self.std, self.weak = batch_size, mean, std, weak
        # an unlabelled stream of its own, apart from the labelled order
        self.seed = seed + 7919
        self.device, self.channels_last = torch.device(device), channels_last
        self.rank, self.world_size = rank, world_size
        self.per_epoch = max(1, len(images) // world_size // batch_size)

    def batch(self, step: int, size: int | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The two views of step ``step``'s images (resized to ``size`` pixels when given and
        smaller than theirs) and their teacher targets."""
        epoch, b = divmod(step, self.per_epoch)
        order = torch.randperm(len(self.images), generator=batch_generator(self.seed, epoch, -1))
        order = order[self.rank::self.world_size]
        idx = order[b * self.batch_size:(b + 1) * self.batch_size]
        gen = batch_generator(self.seed, epoch, b)
        x = self.images[idx].to(self.device).float()
        if size is not None and size < x.shape[-1]:
            x = resize_batch(x, size / x.shape[-1])
        x = apply_geometric(x, self.weak, gen)
        strong = strong_augment(x / 255, gen) * 255
        views = (normalize(x, self.mean, self.std),
                 cutout(normalize(strong, self.mean, self.std), gen))
        if self.channels_last:
            views = tuple(v.contiguous(memory_format=torch.channels_last) for v in views)
        return *views, None if self.targets is None else self.targets[idx].to(self.device)
