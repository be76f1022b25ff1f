"""A training run resolved once, before training: the configuration with every default
filled in (the data's, then the planned epochs, learning rate, label smoothing and TTA), the
data, the model, the execution plan and the budget, in one frozen :class:`ResolvedRun` that
``training.train`` builds with :func:`resolve_run` and passes down. Nothing after it decides
a value again: ``config.yaml`` records its ``cfg``."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from .config import DEFAULT_EPOCHS, TrainConfig, parse_duration
from .data.augment import MIN_SIZE
from .data.dataset import ArrayDataset
from .data.prepare import PreparedData, make_loader
from .data.sources import Source, load_source
from .defaults import (
    TIME_CAP,
    Decision,
    default_label_smoothing,
    default_lr,
    resolve_data,
    tta_mode,
)
from .distributed import DistInfo, broadcast
from .engine.budget import epochs_for_budget, final_reserve
from .engine.checkpoint import Checkpoint
from .errors import ConfigError
from .models import create_model, is_external
from .models.base import check_image_size
from .pretrained import load_pretrained
from .runtime.forward import tta_views
from .runtime.plan import ExecPlan, choose_plan, measure_step, resolve_device
from .runtime.preprocess import Preprocess
from .utils import Log


@dataclass(frozen=True)
class ResolvedRun:
    """Every value a training run uses, decided before its first step."""

    cfg: TrainConfig  # the data's defaults, epochs, learning rate, smoothing and TTA filled in
    source: Source
    data: PreparedData  # split and decoded at cfg.image_size, cfg.channels
    unlabeled: ArrayDataset | None  # --unlabeled images, decoded alike
    decisions: tuple[Decision, ...]  # the defaults the data decided, with their reasons
    model: nn.Module
    plan: ExecPlan
    timings: dict[str, float]  # measured seconds per step of each candidate plan
    budget_kind: str | None  # "budget" (--budget plans the epochs), "cap" (the time cap), None
    budget_s: float | None  # the seconds that budget or cap allows
    whole_run: tuple[float, int] | None  # --budget for the whole call: (its start, final images)
    restarts: int  # learning-rate restarts allowed when the model does not learn

    @property
    def preprocess(self) -> Preprocess:
        return self.data.preprocess


def resolve_run(cfg: TrainConfig, source: Source | None, ddp: DistInfo, log: Log, *,
                ckpt: Checkpoint | None, epochs_given: bool, budget_scope: str,
                started: float) -> ResolvedRun:
    """The run ``cfg`` describes, resolved: the data's defaults (``defaults.resolve_data``),
    the model, the execution plan rank 0 measures, then the epochs (given, the default, or
    what fits in the budget), learning rate, label smoothing and TTA. ``started``: the
    ``perf_counter`` time a ``budget_scope`` ``run`` budget counts from."""
    cfg, source, data, decisions, unlabeled = prepare(cfg, source, log)
    model = build_model(cfg, data.preprocess, log)
    plan, timings, example, steps = _execution_plan(cfg, model, data, ddp)
    whole_run = (started, _final_images(cfg, data)) if budget_scope == "run" else None
    kind = _budget_kind(cfg, ckpt, epochs_given, decisions)
    budget_s = (cfg.budget_s if kind == "budget" else
                parse_duration(TIME_CAP, "time cap") if kind == "cap" else None)
    epochs, fraction = _plan_epochs(cfg, budget_s, plan, model, example, steps, data, log,
                                    whole_run)
    restarts = 0 if cfg.lr is not None else 2  # a learning rate given is not overridden
    cfg = cfg.replace(epochs=epochs, train_fraction=fraction, lr=default_lr(cfg),
                      label_smoothing=default_label_smoothing(cfg), tta=tta_mode(cfg, cfg.flip))
    return ResolvedRun(cfg, source, data, unlabeled, tuple(decisions), model, plan, timings,
                       kind, budget_s, whole_run, restarts)


def build_model(cfg: TrainConfig, pre: Preprocess, log: Log = print) -> nn.Module:
    """The model for ``cfg``, with ``cfg.pretrained`` weights loaded when given (``hub``: the
    timm / torchvision model's own pretrained weights, where the network allows)."""
    torch.manual_seed(cfg.seed)
    hub = cfg.pretrained == "hub"
    if hub and not is_external(cfg.model):
        raise ConfigError("--pretrained hub is for timm/<name> and tv/<name> models; give "
                          "imgcls models a run folder or a weights file")
    model = create_model(cfg.model, num_classes=len(pre.class_names), channels=pre.channels,
                         image_size=pre.image_size, **cfg.model_kwargs,
                         **({"pretrained": True} if hub else {}))
    if cfg.progressive_resize:  # its first epoch's size
        first = max(MIN_SIZE, round(pre.image_size * cfg.progressive_resize))
        check_image_size(model, pre.channels, first, "progressive_resize")
    if cfg.pretrained and not hub:
        load_pretrained(model, cfg.pretrained, log=log, class_names=pre.class_names)
    return model


def prepare(cfg: TrainConfig, source: Source | None = None, log: Log = print
            ) -> tuple[TrainConfig, Source, PreparedData, list[Decision], ArrayDataset | None]:
    """The data ``cfg`` names (or ``source``), split and decoded as ``defaults.resolve_data``
    decides, and its unlabelled images: (``cfg`` with the data's defaults, the source, the
    data, the decisions, the unlabelled images or None)."""
    source = source or load_source(cfg.data, cfg.data_dir)
    cfg, data, decisions = resolve_data(cfg, source)
    unlabeled = None
    if cfg.unlabeled:
        from .ssl import unlabeled_images

        unlabeled = unlabeled_images(cfg, data, data.skipped, log)
    return cfg, source, data, decisions, unlabeled


def _plan_epochs(cfg: TrainConfig, budget_s: float | None, plan: ExecPlan, model: nn.Module,
                 example: tuple, train_steps: int, data: PreparedData, log: Log,
                 whole_run: tuple[float, int] | None) -> tuple[int, float]:
    """(epochs, train_fraction): given, the default, or what fits in ``--budget`` (with
    ``whole_run``: what is left of it after the time spent so far and the final passes).
    The budget's first estimate times a few steps now, not the plan's cached timings: those
    may come from another hour of a machine whose speed varies."""
    if cfg.epochs is not None:
        return cfg.epochs, cfg.train_fraction
    if not cfg.budget:
        return DEFAULT_EPOCHS, cfg.train_fraction
    step_s = measure_step(model, plan, example)
    if cfg.unlabeled:
        # a semi-supervised step also trains on ssl_ratio x the batch of unlabelled images
        # (fixmatch and freematch add a forward pass of their weak view, about a third of a
        # step); the first epochs' measured time corrects the estimate
        step_s *= 1 + cfg.ssl_ratio * (4 / 3 if cfg.ssl in ("fixmatch", "freematch") else 1)
    batch = example[0].shape[0]
    if whole_run:  # a forward pass is about a third of a step
        budget_s -= time.perf_counter() - whole_run[0] + final_reserve(whole_run[1],
                                                                        step_s / batch / 3)
    epochs, fraction = epochs_for_budget(
        budget_s, step_s, train_steps, len(data.val) if data.val else 0, batch)
    log(f"budget {cfg.budget}: {epochs} epoch(s)"
        f"{f' of {fraction:.0%} of the training set' if fraction < 1 else ''} at "
        f"{1000 * step_s:.0f} ms/step")
    return epochs, fraction


def _budget_kind(cfg: TrainConfig, ckpt: Checkpoint | None, epochs_given: bool,
                 decisions: list[Decision]) -> str | None:
    """``budget`` when ``--budget`` plans the epochs (unless they were given; a resumed
    budget run goes on re-planning), ``cap`` when the epochs are a default (a time cap on
    them), else None."""
    if ckpt is not None:
        if "budget" not in ckpt.meta.get("callbacks", {}) or epochs_given:
            return None
        return "budget" if cfg.budget else "cap"
    if cfg.budget and cfg.epochs is None:
        return "budget"
    return "cap" if any(d.key == "epochs" for d in decisions) else None


def _final_images(cfg: TrainConfig, data: PreparedData) -> int:
    """The images the passes after training classify: the validation split (to fit the
    temperature) and the held-out split once per TTA view."""
    held = data.test if data.test is not None else data.val
    views = len(tta_views(torch.empty(0, 1, 2, 2), tta_mode(cfg, cfg.flip)))
    return (len(data.val) if data.val is not None else 0) + (len(held) * views if held else 0)


def _execution_plan(cfg: TrainConfig, model: nn.Module, data: PreparedData, ddp: DistInfo
                    ) -> tuple[ExecPlan, dict[str, float], tuple, int]:
    """(the plan, the measured seconds per step of each candidate, an example batch, the
    steps of a full epoch): rank 0 measures, every rank follows it on its own device."""
    device = resolve_device(cfg.device)
    if device == "cuda" and ddp.active:
        device = f"cuda:{ddp.local_rank}"
    probe = make_loader(data.train, data.preprocess, train=True, device=device,
                        batch_size=cfg.batch_size, seed=cfg.seed, sampler=cfg.sampler,
                        train_fraction=cfg.train_fraction, workers=cfg.workers,
                        max_pixels=cfg.max_pixels)
    example = next(iter(probe))
    plan, timings = broadcast(
        choose_plan(model, example, device=device, precision=cfg.precision,
                    channels_last=cfg.channels_last, key=cfg.model) if ddp.is_main else None,
        ddp)
    return ExecPlan(device, plan.precision, plan.channels_last), timings, example, len(probe)
