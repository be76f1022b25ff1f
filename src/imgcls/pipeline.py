"""From a config to a finished run: data, model, execution plan, training, test evaluation.

Also the reverse: loading a run's model with its preprocessing, and scoring it on a data set.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import DEFAULT_EPOCHS, TrainConfig, parse_duration
from .data.augment import Augment, preset
from .data.dataset import ArrayDataset, Dataset, FileDataset
from .data.images import convert_channels, resize_to
from .data.loader import BatchLoader, StreamLoader, UnlabeledLoader
from .data.materialize import cache_key, infer_channels, infer_image_size, materialize
from .data.sources import Source, load_source
from .data.splits import stratified_split, write_split_manifest
from .distributed import (
    DistInfo,
    broadcast,
    finish,
    gather,
    init_distributed,
    weights_checksum,
)
from .engine.checkpoint import (
    Checkpoint,
    load_latest,
    previous_path,
    read_safetensors,
    restore_rng,
    save_checkpoint,
    save_model_file,
)
from .engine.evaluate import basic_metrics, predict_logits, predict_outputs
from .engine.precision import (
    ExecPlan,
    choose_plan,
    eval_plan,
    measure_step,
    resolve_device,
)
from .engine.propagate import propagate_labels
from .engine.trainer import Callback, Trainer, TrainState
from .errors import ConfigError, DataError, RunError
from .models import create_model, is_external
from .models.transfer import load_pretrained
from .preprocess import Preprocess, channel_stats
from .run import RunDir, default_run_name
from .utils import atomic_write_text, cache_dir, write_json, write_yaml

Log = Callable[[str], None]


@dataclass
class PreparedData:
    train: Dataset
    val: Dataset | None
    test: Dataset | None
    preprocess: Preprocess
    flip_ok: bool
    source: str
    train_idx: object = None
    val_idx: object = None
    skipped: list[str] = field(default_factory=list)
    unlabeled: ArrayDataset | None = None


def conform(ds: ArrayDataset, channels: int, size: int, resize: str) -> ArrayDataset:
    """An in-memory data set with ``channels`` channels at ``size`` x ``size``."""
    images = convert_channels(ds.images, channels)
    if images.shape[-2:] != (size, size):
        images = torch.cat([resize_to(c, size, resize) for c in images.split(4096)])
    return ArrayDataset(images, ds.labels, ds.classes)


def _fits(ds: FileDataset, channels: int, size: int, cfg: TrainConfig) -> bool:
    if cfg.in_memory != "auto":
        return cfg.in_memory == "yes"
    return len(ds) * channels * size * size <= cfg.memory_limit_gb * 2**30


def to_model_input(ds: Dataset | None, channels: int, size: int, cfg: TrainConfig,
                   skipped: list[str], desc: str) -> Dataset | None:
    """Arrays conformed, files decoded into memory when they fit (else left for streaming)."""
    if ds is None:
        return None
    if isinstance(ds, ArrayDataset):
        return conform(ds, channels, size, cfg.resize)
    if not _fits(ds, channels, size, cfg):
        return ds
    arr, bad = materialize(ds, size, channels, resize=cfg.resize, workers=cfg.workers, desc=desc)
    skipped += bad
    return arr


def prepare_data(cfg: TrainConfig, log: Log = print, source: Source | None = None
                 ) -> PreparedData:
    """Load the source, split train/val (stratified, seeded), decode to the model's input."""
    source = source or load_source(cfg.data, cfg.data_dir)
    full = source.train
    if cfg.val_split > 0:
        train_idx, val_idx = stratified_split(full.labels, cfg.val_split, cfg.seed)
        train, val = full.subset(train_idx), full.subset(val_idx)
    else:
        train_idx, val_idx = None, None
        train, val = full, source.val
    rest = None
    if cfg.labels_per_class:
        keep = per_class_subset(train.labels, cfg.labels_per_class, cfg.seed)
        mask = torch.ones(len(train), dtype=torch.bool)
        mask[keep] = False
        rest = train.subset(torch.nonzero(mask).flatten())
        train = train.subset(keep)
        if train_idx is not None:
            train_idx = train_idx[keep.numpy()]
    if isinstance(full, ArrayDataset):
        channels = cfg.channels or full.channels
        size = cfg.image_size or max(full.image_size)
    else:
        channels = cfg.channels or infer_channels(full)
        size = cfg.image_size or infer_image_size(full)
    skipped: list[str] = []
    train = to_model_input(train, channels, size, cfg, skipped, "decoding train images")
    val = to_model_input(val, channels, size, cfg, skipped, "decoding val images")
    test = to_model_input(source.test, channels, size, cfg, skipped, "decoding test images")
    if isinstance(train, ArrayDataset):
        mean, std = channel_stats(train.images)
    else:  # streamed: statistics of a decoded sample
        sample = train.subset(torch.randperm(len(train))[:1000])
        arr, _ = materialize(sample, size, channels, resize=cfg.resize, cache=False,
                             desc="sampling mean/std")
        mean, std = channel_stats(arr.images)
    empty = [c for c, n in zip(full.classes, train.counts()) if n == 0]
    if empty:
        raise DataError(f"{source.name}: no usable training images for class(es) {empty}")
    pre = Preprocess(size, channels, mean, std, list(full.classes), resize=cfg.resize)
    unlabeled = None
    if cfg.unlabeled:
        if cfg.unlabeled == "rest":
            if rest is None or len(rest) == 0:
                raise ConfigError("--unlabeled rest needs --labels-per-class to leave images out")
            pool = rest
        else:
            pool = load_source(cfg.unlabeled).train
        unlabeled = to_model_input(pool, channels, size, cfg, skipped, "decoding unlabelled")
        if not isinstance(unlabeled, ArrayDataset):
            raise ConfigError(f"{cfg.unlabeled}: unlabelled images must fit in memory "
                              f"(--memory-limit-gb {cfg.memory_limit_gb})")
        log(f"semi-supervised ({cfg.ssl}): {len(train)} labelled, {len(unlabeled)} unlabelled "
            "images")
    return PreparedData(train, val, test, pre, source.flip_ok, source.name, train_idx, val_idx,
                        skipped, unlabeled)


def per_class_subset(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Indices of ``per_class`` images of every class (all of a smaller class), by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    keep = []
    for c in labels.unique():
        idx = torch.nonzero(labels == c).flatten()
        keep.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(keep).sort().values


AUTO_STANDARD_EPOCHS = 20
BUDGET_PROBE_STEPS = 10  # steps timed before a less-than-one-epoch --budget is re-planned


def augmentation(cfg: TrainConfig, size: int, flip_ok: bool) -> Augment:
    """The preset (``auto``: light below 20 epochs, standard from there) with overrides."""
    name = cfg.augment
    if name == "auto":
        name = "light" if cfg.epochs < AUTO_STANDARD_EPOCHS else "standard"
    aug = preset(name, size, flip_ok)
    return Augment(
        flip=aug.flip if cfg.flip is None else cfg.flip,
        translate=aug.translate if cfg.translate is None else cfg.translate,
        rotate=aug.rotate if cfg.rotate is None else cfg.rotate,
        erase=aug.erase if cfg.erase is None else cfg.erase,
    )


def make_loader(ds: Dataset, pre: Preprocess, cfg: TrainConfig, plan: ExecPlan, *,
                train: bool, augment: Augment | None = None, batch_size: int | None = None,
                rank: int = 0, world_size: int = 1) -> BatchLoader | StreamLoader:
    bs = batch_size or (cfg.batch_size // world_size if train else max(256, cfg.batch_size))
    max_batches = None
    if train and cfg.train_fraction < 1:
        max_batches = max(1, int(len(ds) // bs * cfg.train_fraction))
    # balanced sampler: each image drawn in proportion to its class's inverse frequency
    weights = class_weights(ds)[ds.labels] if train and cfg.sampler == "balanced" else None
    kw = dict(mean=pre.mean, std=pre.std, augment=augment if train else None, shuffle=train,
              drop_last=train and len(ds) >= 2 * (batch_size or cfg.batch_size),
              seed=cfg.seed, device=plan.device, channels_last=plan.channels_last,
              rank=rank, world_size=world_size, max_batches=max_batches,
              sample_weights=weights)
    if isinstance(ds, ArrayDataset):
        return BatchLoader(ds, bs, **kw)
    cache = cache_dir("stream") / cache_key(ds, pre.input_size, pre.in_chans, pre.resize)
    return StreamLoader(ds, bs, size=pre.input_size, channels=pre.in_chans, resize=pre.resize,
                        cache=cache, workers=cfg.workers, **kw)


def tta_mode(cfg: TrainConfig, flip_ok: bool) -> str:
    """The final test's TTA: auto is flip where mirror images are the same class (not for
    digits), none elsewhere; an explicit mode is obeyed."""
    if cfg.tta == "auto":
        return "flip" if flip_ok else "none"
    return cfg.tta


def teacher_targets(cfg: TrainConfig, images: ArrayDataset, labelled: Dataset, pre: Preprocess,
                    device: str, flip_ok: bool, log: Log = print) -> torch.Tensor:
    """The class probabilities that the ``--teacher`` run gives ``images`` (with the final
    test's TTA), the targets of ``--ssl distill``; several teachers (comma-separated) give
    the mean of theirs. With ``--propagate K`` refined by label propagation over the
    teachers' features, from the ``labelled`` images too; several teachers' features are
    each L2-normalised and joined, so that the similarity of two images is the mean of
    their cosine similarities in each teacher's space. Every teacher must know the same
    classes and take the same input size and channels."""
    t = time.perf_counter()
    plan = eval_plan(device)
    tta = tta_mode(cfg, flip_ok)
    probs, features, labelled_features = [], [], []
    for teacher in cfg.teachers:
        try:
            model, tpre, _ = load_run_model(teacher, device=device)
        except RunError as e:
            raise ConfigError(f"teacher: {e}") from e
        if tpre.class_names != pre.class_names:
            raise ConfigError(f"teacher: {teacher} knows classes {tpre.class_names}, this "
                              f"data has {pre.class_names}")
        if (tpre.in_chans, tpre.input_size) != (pre.in_chans, pre.input_size):
            raise ConfigError(f"teacher: {teacher} takes {tpre.in_chans}x{tpre.input_size}x"
                              f"{tpre.input_size} images, this run {pre.in_chans}x"
                              f"{pre.input_size}x{pre.input_size} (--image-size, --channels)")
        loader = partial(make_loader, pre=tpre, cfg=cfg, plan=plan, train=False)
        logits, _, feats = predict_outputs(model, loader(images), plan, tta=tta,
                                           features=cfg.propagate > 0)
        probs.append(logits.softmax(1))
        if cfg.propagate:
            labelled_feats = predict_outputs(model, loader(labelled), plan, tta=tta,
                                             features=True)[2]
            features.append(F.normalize(feats.float(), dim=1))
            labelled_features.append(F.normalize(labelled_feats.float(), dim=1))

    def accuracy(p: torch.Tensor) -> float:  # --unlabeled rest keeps the labels it hides
        return float((p.argmax(1) == images.labels).float().mean())

    def right(p: torch.Tensor) -> str:
        return f", {accuracy(p):.1%} right" if cfg.unlabeled == "rest" else ""

    how = f"TTA {tta}"
    if len(probs) > 1:
        how += f", mean of {len(probs)} teachers"
        if cfg.unlabeled == "rest":
            how += f" ({', '.join(f'{accuracy(p):.1%}' for p in probs)} right alone)"
    probs = torch.stack(probs).mean(0)
    if cfg.propagate:
        before = probs
        probs = propagate_labels(torch.cat(features, 1), probs, torch.cat(labelled_features, 1),
                                 labelled.labels, cfg.propagate)
        changed = float((probs.argmax(1) != before.argmax(1)).float().mean())
        how += (f"{right(before)}; label propagation over {cfg.propagate} neighbours changed "
                f"{changed:.1%}")
    how += right(probs)
    log(f"teacher {cfg.teacher}: class probabilities of {len(probs)} unlabelled images "
        f"({how}; mean top probability {probs.max(1).values.mean():.3f}) in "
        f"{time.perf_counter() - t:.0f} s")
    return probs


def class_weights(ds: Dataset) -> torch.Tensor:
    """Inverse-frequency loss weights N / (classes x count): 1 for every class when balanced."""
    counts = torch.bincount(ds.labels, minlength=len(ds.classes)).clamp_min(1).float()
    return len(ds) / (len(ds.classes) * counts)


def model_meta(cfg: TrainConfig, pre: Preprocess) -> dict:
    return {"model": cfg.model, "model_kwargs": cfg.model_kwargs,
            "num_classes": len(pre.class_names), "preprocess": pre.to_dict()}


def build_model(cfg: TrainConfig, pre: Preprocess, log: Log = print) -> nn.Module:
    """The model for ``cfg``, with ``cfg.pretrained`` weights loaded when given (``hub``: the
    timm / torchvision model's own pretrained weights, where the network allows)."""
    torch.manual_seed(cfg.seed)
    hub = cfg.pretrained == "hub"
    if hub and not is_external(cfg.model):
        raise ConfigError("--pretrained hub is for timm/<name> and tv/<name> models; give "
                          "imgcls models a run folder or a weights file")
    model = create_model(cfg.model, num_classes=len(pre.class_names), in_chans=pre.in_chans,
                         input_size=pre.input_size, **cfg.model_kwargs,
                         **({"pretrained": True} if hub else {}))
    if cfg.pretrained and not hub:
        load_pretrained(model, cfg.pretrained, log=log, class_names=pre.class_names)
    return model


class RunCallback(Callback):
    """Writes the run: metrics, best model file, last checkpoint; tracks early stopping."""

    def __init__(self, run: RunDir, cfg: TrainConfig, meta: dict, plan: ExecPlan,
                 log: Log, write: bool = True, ddp: DistInfo | None = None,
                 budget_start: float | None = None) -> None:
        self.run, self.cfg, self.meta, self.plan, self.log = run, cfg, meta, plan, log
        self.write = write  # False on ranks other than 0: they track, rank 0 writes
        self.ddp = ddp or DistInfo()
        # --budget: perf_counter() when the budgeted time began (None: no re-planning); the
        # first epoch is timed from here, after the one-time work that the budget counts
        self.budget_start, self.epoch_end = budget_start, time.perf_counter()
        self.epoch_times: list[float] = []

    def checkpoint(self, t: Trainer) -> None:
        if not self.write:
            return
        save_checkpoint(self.run.last_checkpoint, Checkpoint(
            model=t.model.state_dict(), meta={"state": t.state_dict(), "model_meta": self.meta},
            ema=t.ema.state_dict() if t.ema else None, optimizer=t.optimizer.state_dict(),
            scaler=t.scaler.state_dict() if t.scaler else None))

    def save_model(self, t: Trainer) -> None:
        if not self.write:
            return
        save_model_file(self.run.model_file, t.eval_model.state_dict(), self.meta)

    def on_step_end(self, t: Trainer) -> None:
        if (self.budget_start is not None and self.cfg.train_fraction < 1
                and t.state.step == BUDGET_PROBE_STEPS < t.steps_per_epoch):
            self.replan_fraction(t)
        n = self.cfg.checkpoint_every
        if n and t.state.step % n == 0 and t.state.batch < t.steps_per_epoch:
            self.checkpoint(t)

    def replan_fraction(self, t: Trainer) -> None:
        """A ``--budget`` that buys less than one epoch: after the first steps, shorten the
        epoch to what their measured time leaves room for (the start-up estimate from bare
        steps, perhaps cached on a faster day, can be far off for heavy models). Only
        shortens: the epoch's batches are already drawn. Saved in config.yaml before the
        next checkpoint, so a resumed run keeps it."""
        now = time.perf_counter()
        per_step = (now - self.epoch_end) / t.state.step  # not a teacher's pass before it
        left = parse_duration(self.cfg.budget) - (now - self.budget_start)
        val_s = (len(t.val_loader) if t.val_loader is not None else 0) * per_step / 3
        fit = t.state.step + max(0, int((left - val_s) / (1.05 * per_step)))
        steps = broadcast(min(t.steps_per_epoch, fit), self.ddp)
        if steps < t.steps_per_epoch:
            self.log(f"budget {self.cfg.budget}: {per_step:.2f}s per step; the epoch is cut "
                     f"to {steps} of its {t.steps_per_epoch} planned steps")
            full = t.train_loader.n // t.train_loader.batch_size
            t.set_steps_per_epoch(steps)
            # + 0.5: make_loader's int(full x fraction) gives back exactly ``steps``
            t.cfg = t.cfg.replace(train_fraction=min(1.0, (steps + 0.5) / full))
            self.save_plan(t)

    def replan_budget(self, t: Trainer) -> None:
        """After each epoch of a ``--budget`` run, fit the number of epochs to the time left
        (data, augmentation, validation and writes included, which the start-up estimate
        from a few bare steps cannot see). The first two epochs set it from their own time
        (the second drops the first epoch's one-time costs); later epochs from the mean pace
        of the latest epochs (at least three, spanning a tenth of the budget, so the noise
        of short epochs averages out): shrunk as soon as the plan would overrun, grown when
        more than 3% more epochs fit, so a machine that slows down mid-run still ends in
        time, one that speeds up uses the time, and the schedule is not nudged every epoch.
        Decided before the epoch's checkpoint and saved in config.yaml, so a resumed run
        keeps it."""
        now = time.perf_counter()
        self.epoch_times.append(now - self.epoch_end)
        self.epoch_end = now
        budget, done = parse_duration(self.cfg.budget), t.state.epoch
        window: list[float] = []
        for seconds in reversed(self.epoch_times[1:] if done > 2 else self.epoch_times[-1:]):
            window.append(seconds)
            if len(window) >= 3 and sum(window) >= 0.1 * budget:
                break
        pace = sum(window) / len(window)
        left = budget - (now - self.budget_start)
        fit, planned = max(done, done + int(left / (1.05 * pace))), self.cfg.epochs
        overrun = (planned - done) * pace > left
        spare = fit > planned + max(1, 0.03 * planned)
        epochs = broadcast(fit if done <= 2 or overrun or spare else planned, self.ddp)
        if epochs != self.cfg.epochs:
            self.log(f"budget {self.cfg.budget}: {pace:.1f}s per epoch; {epochs} epochs "
                     f"instead of {self.cfg.epochs}")
            t.set_epochs(epochs)
            self.save_plan(t)

    def save_plan(self, t: Trainer) -> None:
        """Adopt the trainer's re-planned config and save it as the run's config.yaml."""
        self.cfg = t.cfg
        if self.write:
            write_yaml(self.run.config, self.cfg.to_dict())

    def on_epoch_end(self, t: Trainer, record: dict) -> None:
        s = t.state
        # a planned single full epoch is re-planned too (an epoch the budget cut cannot grow:
        # its batches were drawn); the schedule then stretches over the epochs added
        cut = self.cfg.epochs == 1 and self.cfg.train_fraction < 1
        if self.budget_start is not None and not cut:
            self.replan_budget(t)
        score = record.get("val_top1")
        if score is None or score > s.best_top1:
            s.best_top1, s.best_epoch, s.bad_epochs = score or 0.0, s.epoch, 0
            self.save_model(t)
        else:
            s.bad_epochs += 1
            if self.cfg.early_stop and s.bad_epochs >= self.cfg.early_stop:
                s.stop = True
                self.log(f"early stop: no better val accuracy for {s.bad_epochs} epochs")
        if self.write:
            self.run.append_metrics(record)
        self.checkpoint(t)
        val = (f" val loss {record['val_loss']:.4f} acc {record['val_top1']:.4f}"
               if "val_top1" in record else "")
        self.log(f"epoch {record['epoch']:>3}/{self.cfg.epochs}  train loss "
                 f"{record['train_loss']:.4f} acc {record['train_top1']:.4f}{val}  "
                 f"{record['train_images_per_s']:,.0f} img/s  {record['epoch_time_s']:.1f}s")


class TensorBoardCallback(Callback):
    """Every number of an epoch record as a TensorBoard scalar (``train/loss``, ``val/top1``,
    ...), next to ``metrics.jsonl``."""

    def __init__(self, run: RunDir) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ConfigError("--tensorboard needs the tensorboard package: "
                              "pip install 'imgcls[tensorboard]'") from e
        self.writer = SummaryWriter(str(run.path / "tensorboard"))

    def on_epoch_end(self, t: Trainer, record: dict) -> None:
        for key, value in record.items():
            if key not in ("epoch", "step"):
                split, _, name = key.partition("_")
                tag = f"{split}/{name}" if split in ("train", "val") else f"misc/{key}"
                self.writer.add_scalar(tag, value, record["epoch"])
        self.writer.flush()

    def on_train_end(self, t: Trainer) -> None:
        self.writer.close()


@dataclass
class TrainResult:
    run: RunDir
    test: dict[str, float] | None
    history: list[dict]
    plan: ExecPlan
    seconds: float

    @property
    def path(self) -> Path:
        return self.run.path


def _resume_config(cfg: TrainConfig) -> tuple[TrainConfig, RunDir]:
    run = RunDir.open(cfg.resume, need_model=False)
    if not run.config.exists():
        raise RunError(f"{cfg.resume}: no config.yaml, not a run folder")
    saved = TrainConfig.from_yaml(run.config)
    # Only the number of epochs may change on resume (to extend a finished run); anything
    # else would make the resumed run differ from an uninterrupted one.
    return saved.replace(resume=cfg.resume, epochs=cfg.epochs or saved.epochs,
                         progress=cfg.progress), run


def epochs_for_budget(budget_s: float, step_s: float, train_steps: int, val_images: int,
                      batch_size: int) -> tuple[int, float]:
    """(epochs, train_fraction) that fit in ``budget_s``: training steps at the measured speed
    plus a validation pass (forward only, about a third of a step per batch), with 10% spare.
    When not even one epoch fits, one epoch over a fraction of the training set."""
    val_s = val_images / batch_size * step_s / 3
    epochs = budget_s / (1.1 * (train_steps * step_s + val_s))
    if epochs >= 1:
        return int(epochs), 1.0
    fraction = (budget_s / 1.1 - val_s) / (train_steps * step_s)
    return 1, min(1.0, max(fraction, 1 / train_steps))


def train(cfg: TrainConfig | None = None, log: Log = print, source: Source | None = None,
          callbacks: list[Callback] | None = None, **overrides: object) -> TrainResult:
    """Train a model as ``cfg`` (plus keyword overrides) says; returns the finished run.
    ``source`` replaces ``cfg.data`` with data already in memory (used by ``Classifier.fit``).
    Under ``torchrun`` every process calls this; rank 0 writes the run."""
    t_start = time.perf_counter()
    if cfg is None:
        cfg = TrainConfig.from_dict(overrides)  # a recipe fills in what overrides leave out
    elif overrides:
        cfg = cfg.replace(**overrides)
    run = None
    if cfg.resume:  # the run's own settings (threads, determinism, ...) apply from here on
        cfg, run = _resume_config(cfg)
    if not cfg.progress:
        os.environ["IMGCLS_NO_PROGRESS"] = "1"
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    ddp = init_distributed(cfg.device)
    if not ddp.is_main:
        log = _quiet  # one voice: rank 0 speaks for the run
    if ddp.is_main and not cfg.resume:
        run = RunDir.create(cfg.out, cfg.name, default_run_name(cfg.model, cfg.data))
        write_yaml(run.config, cfg.to_dict())  # at once, so a run killed early can resume
    run = RunDir(broadcast(str(run.path) if run else "", ddp))
    source = source or load_source(cfg.data, cfg.data_dir)
    data = prepare_data(cfg, log, source)
    pre = data.preprocess
    model = build_model(cfg, pre, log)
    device = resolve_device(cfg.device)
    if device == "cuda" and ddp.active:
        device = f"cuda:{ddp.local_rank}"
    probe = make_loader(data.train, pre, cfg, ExecPlan(device), train=True)
    example = next(iter(probe))
    plan, timings = broadcast(
        choose_plan(model, example, device=device, precision=cfg.precision,
                    channels_last=cfg.channels_last, key=cfg.model) if ddp.is_main else None,
        ddp)
    plan = ExecPlan(device, plan.precision, plan.channels_last)
    # the budget plans the run unless --epochs was given (or the run is resumed)
    budget_plans = bool(cfg.budget) and cfg.epochs is None
    cfg = _resolve_epochs(cfg, plan, model, example, len(probe), data, log)
    if timings:
        log("execution plan: " + ", ".join(f"{k} {1000 * v:.0f} ms/step"
                                           for k, v in timings.items())
            + f" -> {plan.describe()}")
    else:
        log(f"execution plan: {plan.describe()}")
    aug = augmentation(cfg, pre.input_size, data.flip_ok)
    train_loader = make_loader(data.train, pre, cfg, plan, train=True, augment=aug,
                               rank=ddp.rank, world_size=ddp.world_size)
    val_loader = make_loader(data.val, pre, cfg, plan, train=False) if data.val else None
    if cfg.sync_bn and ddp.active:
        if not device.startswith("cuda"):
            raise ConfigError("--sync-bn needs GPUs: torch's SyncBatchNorm does not run on CPU")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    budget_start = time.perf_counter() if budget_plans else None  # a teacher's pass counts
    unlabeled = None
    if data.unlabeled is not None:
        unlabeled = UnlabeledLoader(
            data.unlabeled.images, train_loader.batch_size * cfg.ssl_ratio, mean=pre.mean,
            std=pre.std, weak=aug, seed=cfg.seed, device=plan.device,
            channels_last=plan.channels_last, rank=ddp.rank, world_size=ddp.world_size,
            targets=teacher_targets(cfg, data.unlabeled, data.train, pre, plan.device,
                                    data.flip_ok, log)
            if cfg.teacher else None)
    trainer = Trainer(model, train_loader, val_loader, cfg, plan, log=log,
                      loss_weight=class_weights(data.train) if cfg.class_weights == "auto"
                      else None, distributed=ddp.active, unlabeled=unlabeled)
    meta = model_meta(cfg, pre)
    trainer.callbacks += [RunCallback(run, cfg, meta, plan, log, write=ddp.is_main, ddp=ddp,
                                      budget_start=budget_start),
                          *(callbacks or [])]
    if cfg.tensorboard and ddp.is_main:
        trainer.callbacks.append(TensorBoardCallback(run))
    if not (cfg.resume and _restore(trainer, run, log, write=ddp.is_main)) and ddp.is_main:
        write_yaml(run.config, cfg.to_dict())
        if data.train_idx is not None:
            write_split_manifest(run.split, source.train, data.train_idx, data.val_idx)
        n = sum(p.numel() for p in model.parameters())
        log(f"run {run.path}: {cfg.model} ({n / 1e6:.2f}M params) on {data.source}, "
            f"{len(data.train)} train / {len(data.val) if data.val else 0} val images, "
            f"{pre.in_chans}x{pre.input_size}x{pre.input_size}"
            + (f", {ddp.world_size} processes" if ddp.active else ""))
    if data.val is None and data.test is None:
        log("warning: no validation or test images: nothing will measure this model "
            "(--val-split 0.1 holds a tenth of the training images out)")
    history = trainer.fit()
    checksums = gather(weights_checksum(trainer.model), ddp)
    finish(ddp)
    if not ddp.is_main:
        return TrainResult(run, None, history, plan, time.perf_counter() - t_start)
    # decoded up front, or found bad while streaming
    skipped = data.skipped + sorted(set().union(*(getattr(ld, "skipped", set())
                                                  for ld in (train_loader, val_loader))))
    if skipped:
        atomic_write_text(run.skipped, "".join(s + "\n" for s in skipped))
        log(f"skipped {len(skipped)} unreadable image(s), listed in {run.skipped}")
    test = None
    if data.test is not None:
        eval_model, _, _ = load_run_model(run.path, device=plan.device)
        test_plan = eval_plan(plan.device)
        loader = make_loader(data.test, pre, cfg, test_plan, train=False)
        logits, labels = predict_logits(eval_model, loader, test_plan,
                                        tta=tta_mode(cfg, data.flip_ok))
        test = basic_metrics(logits, labels)
        log(f"test: loss {test['loss']:.4f}  top-1 {test['top1']:.4f}  top-5 {test['top5']:.4f} "
            f"({test['n']} images)")
    seconds = time.perf_counter() - t_start
    write_json(run.summary, {"test": test, "best_val_top1": trainer.state.best_top1,
                             "best_epoch": trainer.state.best_epoch, "seconds": seconds,
                             "plan": plan.describe(), "timings_s_per_step": timings,
                             "skipped_images": len(skipped), "world_size": ddp.world_size,
                             "ranks_identical": len(set(checksums)) == 1})
    return TrainResult(run, test, history, plan, seconds)


def _quiet(_: str) -> None:
    pass


def _resolve_epochs(cfg: TrainConfig, plan: ExecPlan, model: nn.Module, example: tuple,
                    train_steps: int, data: PreparedData, log: Log) -> TrainConfig:
    """``cfg`` with ``epochs`` set: given, the default, or what fits in ``--budget``. The
    budget's first estimate times a few steps now, not the plan's cached timings: those may
    come from another hour of a machine whose speed varies (here 1.6x: a cached 253 ms/step
    planned 17 epochs of a 19-minute budget, and the first epoch's 400 ms cut them to 11,
    squeezing the schedule's warm-up)."""
    if cfg.epochs is not None:
        return cfg
    epochs = DEFAULT_EPOCHS
    if cfg.budget:
        step_s = measure_step(model, plan, example)
        if data.unlabeled is not None:
            # a semi-supervised step also trains on ssl_ratio x the batch of unlabelled images
            # (fixmatch and freematch add a forward pass of their weak view, about a third of
            # a step); the first epochs' measured time corrects the estimate
            step_s *= 1 + cfg.ssl_ratio * (4 / 3 if cfg.ssl in ("fixmatch", "freematch") else 1)
        epochs, fraction = epochs_for_budget(
            parse_duration(cfg.budget), step_s, train_steps, len(data.val) if data.val else 0,
            example[0].shape[0])
        cfg = cfg.replace(train_fraction=fraction)
        log(f"budget {cfg.budget}: {epochs} epoch(s)"
            f"{f' of {fraction:.0%} of the training set' if fraction < 1 else ''} at "
            f"{1000 * step_s:.0f} ms/step")
    return cfg.replace(epochs=epochs)


def _restore(trainer: Trainer, run: RunDir, log: Log, write: bool = True) -> bool:
    """Load the run's last checkpoint into ``trainer``; False when there is none yet (killed
    before its first checkpoint: the run starts from the beginning). Only ``write`` touches
    files (rank 0)."""
    if write:
        for stale in run.last_checkpoint.parent.glob(".*.tmp"):  # writes cut short by a kill
            stale.unlink(missing_ok=True)
    if not (run.last_checkpoint.exists() or previous_path(run.last_checkpoint).exists()):
        log(f"{run.path}: no checkpoint yet; starting from the beginning")
        if write:
            run.truncate_metrics(0)
        return False
    ckpt, used = load_latest(run.last_checkpoint)
    if used != run.last_checkpoint:
        log(f"warning: {run.last_checkpoint} is damaged; resuming from {used}")
    trainer.model.load_state_dict(ckpt.model)
    trainer.state = TrainState(**ckpt.meta["state"])
    if trainer.ema is not None and ckpt.ema is not None:
        trainer.ema.load_state_dict(ckpt.ema)
        trainer.ema.updates = trainer.state.ema_updates
    if ckpt.optimizer is not None:
        trainer.optimizer.load_state_dict(ckpt.optimizer)
    if trainer.scaler is not None and ckpt.scaler:
        trainer.scaler.load_state_dict(ckpt.scaler)
    restore_rng(ckpt.rng["tensors"], ckpt.rng["info"])
    trainer.state.stop = False
    if write:
        run.truncate_metrics(trainer.state.epoch)
    log(f"resumed {run.path} at epoch {trainer.state.epoch + 1}, batch {trainer.state.batch}")
    return True


def load_run_model(path: str | os.PathLike, device: str = "cpu"
                   ) -> tuple[nn.Module, Preprocess, dict]:
    """The model of a run folder (or of a ``model.safetensors`` file) in eval mode, with its
    preprocessing and metadata."""
    p = Path(path)
    file = p if p.is_file() else RunDir.open(p).model_file
    tensors, meta = read_safetensors(file)
    if "model" not in meta or "preprocess" not in meta:
        raise RunError(f"{file}: not an imgcls model file (no model name or preprocessing)")
    pre = Preprocess.from_dict(meta["preprocess"])
    model = create_model(meta["model"], num_classes=meta["num_classes"], in_chans=pre.in_chans,
                         input_size=pre.input_size, **meta.get("model_kwargs", {}))
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise RunError(f"{file}: weights do not fit {meta['model']} ({e})") from e
    return model.to(device).eval(), pre, meta
