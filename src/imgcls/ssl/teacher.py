"""The targets of ``--ssl distill``: a trained teacher's class probabilities on the
unlabelled images, optionally refined by label propagation."""

from __future__ import annotations

import time
from functools import partial

import torch
import torch.nn.functional as F

from ..data.dataset import ArrayDataset, Dataset
from ..data.prepare import make_loader
from ..errors import ConfigError, RunError
from ..run import load_run_model
from ..runtime.forward import predict_outputs
from ..runtime.plan import eval_plan
from ..runtime.preprocess import Preprocess
from ..utils import Log
from .propagate import propagate_labels


def teacher_targets(teachers: list[str], images: ArrayDataset, labelled: Dataset,
                    pre: Preprocess, device: str, *, tta: str = "none", propagate: int = 0,
                    labels_known: bool = False, batch_size: int = 256, log: Log = print
                    ) -> torch.Tensor:
    """The class probabilities that the ``--teacher`` run gives ``images`` (with the final
    test's TTA), the targets of ``--ssl distill``; several teachers (comma-separated) give
    the mean of theirs. With ``--propagate K`` refined by label propagation over the
    teachers' features, from the ``labelled`` images too; several teachers' features are
    each L2-normalised and joined, so that the similarity of two images is the mean of
    their cosine similarities in each teacher's space. Every teacher must know the same
    classes and take the same input size and channels. ``labels_known``: the unlabelled
    images' labels are real (``--unlabeled rest`` hides them), so the log says how right the
    targets are."""
    t = time.perf_counter()
    plan = eval_plan(device)
    probs, features, labelled_features = [], [], []
    for teacher in teachers:
        try:
            model, tpre, _ = load_run_model(teacher, device=device)
        except RunError as e:
            raise ConfigError(f"teacher: {e}") from e
        if tpre.class_names != pre.class_names:
            raise ConfigError(f"teacher: {teacher} knows classes {tpre.class_names}, this "
                              f"data has {pre.class_names}")
        if (tpre.channels, tpre.image_size) != (pre.channels, pre.image_size):
            raise ConfigError(f"teacher: {teacher} takes {tpre.channels}x{tpre.image_size}x"
                              f"{tpre.image_size} images, this run {pre.channels}x"
                              f"{pre.image_size}x{pre.image_size} (--image-size, --channels)")
        loader = partial(make_loader, pre=tpre, train=False, batch_size=batch_size,
                         **plan.placement)
        logits, _, feats = predict_outputs(model, loader(images), plan, tta=tta,
                                           features=propagate > 0)
        probs.append(logits.softmax(1))
        if propagate:
            labelled_feats = predict_outputs(model, loader(labelled), plan, tta=tta,
                                             features=True)[2]
            features.append(F.normalize(feats.float(), dim=1))
            labelled_features.append(F.normalize(labelled_feats.float(), dim=1))

    def accuracy(p: torch.Tensor) -> float:  # --unlabeled rest keeps the labels it hides
        return float((p.argmax(1) == images.labels).float().mean())

    def right(p: torch.Tensor) -> str:
        return f", {accuracy(p):.1%} right" if labels_known else ""

    how = f"TTA {tta}"
    if len(probs) > 1:
        how += f", mean of {len(probs)} teachers"
        if labels_known:
            how += f" ({', '.join(f'{accuracy(p):.1%}' for p in probs)} right alone)"
    probs = torch.stack(probs).mean(0)
    if propagate:
        before = probs
        probs = propagate_labels(torch.cat(features, 1), probs, torch.cat(labelled_features, 1),
                                 labelled.labels, propagate)
        changed = float((probs.argmax(1) != before.argmax(1)).float().mean())
        how += (f"{right(before)}; label propagation over {propagate} neighbours changed "
                f"{changed:.1%}")
    how += right(probs)
    log(f"teacher {','.join(teachers)}: class probabilities of {len(probs)} unlabelled images "
        f"({how}; mean top probability {probs.max(1).values.mean():.3f}) in "
        f"{time.perf_counter() - t:.0f} s")
    return probs
