"""The semi-supervised parts of a run, built from its configuration: the unlabelled images,
a teacher's targets and the objective."""

from __future__ import annotations

import torch

from ..config import TrainConfig
from ..data.augment import Augment
from ..data.dataset import ArrayDataset
from ..data.prepare import Decoding, PreparedData, to_model_input
from ..data.sources import load_source
from ..defaults import tta_mode
from ..distributed import DistInfo
from ..engine.trainer import CrossEntropy
from ..errors import ConfigError
from ..runtime.plan import ExecPlan
from ..utils import Log, settings_from
from .loader import UnlabeledLoader
from .methods import SemiSupervised, make_objective
from .teacher import teacher_targets


def unlabeled_images(cfg: TrainConfig, data: PreparedData, skipped: list[str], log: Log
                     ) -> ArrayDataset | None:
    """The ``--unlabeled`` images, decoded to the model's input (they must fit in memory)."""
    if not cfg.unlabeled:
        return None
    if cfg.unlabeled == "rest":
        if data.rest is None or len(data.rest) == 0:
            raise ConfigError("--unlabeled rest needs --labels-per-class to leave images out")
        pool = data.rest
    else:
        pool = load_source(cfg.unlabeled).train
    pre = data.preprocess
    images = to_model_input(pool, pre.channels, pre.image_size, settings_from(Decoding, cfg),
                            skipped, "decoding unlabelled")
    if not isinstance(images, ArrayDataset):
        raise ConfigError(f"{cfg.unlabeled}: unlabelled images must fit in memory "
                          f"(--memory-limit-gb {cfg.memory_limit_gb})")
    log(f"semi-supervised ({cfg.ssl}): {len(data.train)} labelled, {len(images)} unlabelled "
        "images")
    return images


def distill_targets(cfg: TrainConfig, data: PreparedData, unlabeled: ArrayDataset,
                    device: str, log: Log = print) -> torch.Tensor:
    """The ``--teacher`` runs' class probabilities on the unlabelled images, as ``cfg`` asks
    (the final test's TTA, ``--propagate``)."""
    return teacher_targets(cfg.teachers, unlabeled, data.train, data.preprocess, device,
                           tta=tta_mode(cfg, cfg.flip), propagate=cfg.propagate,
                           labels_known=cfg.unlabeled == "rest",
                           batch_size=max(256, cfg.batch_size), log=log)


def ssl_objective(cfg: TrainConfig, data: PreparedData, unlabeled: ArrayDataset,
                  supervised: CrossEntropy, aug: Augment, batch_size: int, plan: ExecPlan,
                  ddp: DistInfo, log: Log) -> SemiSupervised:
    """The ``--ssl`` method on top of the ``supervised`` loss: each step also draws
    ``ssl_ratio`` x ``batch_size`` unlabelled images (weakly augmented by ``aug``)."""
    pre = data.preprocess
    loader = UnlabeledLoader(
        unlabeled.images, batch_size * cfg.ssl_ratio, mean=pre.mean, std=pre.std, weak=aug,
        seed=cfg.seed, device=plan.device, channels_last=plan.channels_last, rank=ddp.rank,
        world_size=ddp.world_size,
        targets=distill_targets(cfg, data, unlabeled, plan.device, log) if cfg.teacher else None)
    return make_objective(cfg.ssl, loader, supervised, weight=cfg.ssl_weight,
                          threshold=cfg.ssl_threshold)
