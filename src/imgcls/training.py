"""``imgcls train``: config -> resolved run -> trainer -> run folder, and resume.
Orchestration only: the run is resolved once before training starts (``resolve``: data,
model, execution plan, epochs) and its configuration written then (its epochs again at the
end, when a budget re-planned them); each step's work lives in ``data``, ``models``,
``runtime``, ``engine`` and ``ssl``. Named
``training`` so that no module shadows the function ``imgcls.train``."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .config import TrainConfig, read_yaml
from .data.augment import choose_augment
from .data.dataset import Dataset
from .data.prepare import PreparedData, class_weights, make_loader
from .data.sources import Source
from .data.splits import write_split_manifest
from .defaults import TIME_CAP, tta_mode
from .distributed import DistInfo, broadcast, finish, gather, init_distributed, weights_checksum
from .engine.budget import Budget
from .engine.callbacks import (
    BestModel,
    Callback,
    Checkpointing,
    EarlyStopping,
    LearningCheck,
    MetricsLog,
    TensorBoard,
    TrainingMargins,
    ramp_epochs,
)
from .engine.checkpoint import Checkpoint
from .engine.trainer import CrossEntropy, LoopSettings, OptimSettings, Trainer
from .errors import ConfigError
from .metrics import basic_metrics
from .resolve import ResolvedRun, resolve_run
from .resume import is_complete, last_checkpoint, resumable, resume_config
from .run import (
    RunDir,
    default_run_name,
    ensure_writable,
    load_run_model,
    model_meta,
    save_model_file,
)
from .runtime.forward import predict_logits
from .runtime.images import skip_summary
from .runtime.plan import ExecPlan, eval_plan
from .utils import Log, atomic_write_text, settings_from, write_json, write_yaml


@dataclass
class TrainResult:
    run: RunDir
    test: dict[str, float] | None
    history: list[dict]
    plan: ExecPlan | None  # None: a finished run given to --resume, where nothing ran
    seconds: float
    held_out: tuple[str, dict[str, float]] | None = None  # (split, metrics): test, else val
    unchanged: bool = False  # --resume of a finished run: nothing trained, nothing written
    phases: dict[str, float] = field(default_factory=dict)  # startup_s, train_s, teardown_s

    @property
    def path(self) -> Path:
        return self.run.path


def _quiet(_: str) -> None:
    pass


def _setup(cfg: TrainConfig | None, overrides: dict, log: Log
           ) -> tuple[TrainConfig, RunDir | None, DistInfo, Log, Checkpoint | None, bool]:
    """The configuration (a resumed run's own), the process settings, torchrun's ranks and,
    on resume, the run folder, its last checkpoint and whether ``--epochs`` was given."""
    if cfg is None:
        cfg = TrainConfig.from_dict(overrides)  # a recipe fills in what overrides leave out
    elif overrides:
        cfg = cfg.replace(**overrides)
    run, epochs_given = None, cfg.epochs is not None
    if cfg.resume:  # the run's own settings (threads, determinism, ...) apply from here on
        cfg, run = resume_config(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    ddp = init_distributed(cfg.device)
    if not ddp.is_main:
        log = _quiet  # one voice: rank 0 speaks for the run
    if ddp.is_main and not cfg.resume:
        ensure_writable(cfg.out)  # now; the run's own folder once the run is resolved
    ckpt = last_checkpoint(run, log, ddp.is_main) if cfg.resume else None
    return cfg, run, ddp, log, ckpt, epochs_given


def train(cfg: TrainConfig | None = None, log: Log = print, source: Source | None = None,
          callbacks: list[Callback] | None = None, budget_scope: str = "training",
          started: float | None = None, **overrides: object) -> TrainResult:
    """Train a model as ``cfg`` (plus keyword overrides) says; returns the finished run.
    ``source`` replaces ``cfg.data`` with data already in memory (used by ``Classifier.fit``).
    ``--budget`` covers the epochs and their validation (``budget_scope`` ``training``), or
    the whole call (``run``: loading, planning, training and the final calibration and test
    passes, as ``imgcls compare`` gives each model). Start-up counts from ``started`` (a
    ``perf_counter`` time; default: this call). Under torchrun rank 0 writes the run."""
    if budget_scope not in ("training", "run"):
        raise ValueError(f"budget_scope must be training or run, got {budget_scope!r}")
    t_start = time.perf_counter()
    started = t_start if started is None else started
    cfg, run, ddp, log, ckpt, epochs_given = _setup(cfg, overrides, log)
    if ckpt is not None and is_complete(run, ckpt, cfg.epochs if epochs_given else None):
        finish(ddp)
        return _finished_run(run, log)
    r = resolve_run(cfg, source, ddp, log, ckpt=ckpt, epochs_given=epochs_given,
                    budget_scope=budget_scope, started=t_start)
    cfg, data, plan, model, pre = r.cfg, r.data, r.plan, r.model, r.preprocess
    if r.decisions:
        log("defaults chosen from the data (each flag overrides its own):\n"
            + "\n".join(d.line() for d in r.decisions))
    log(f"execution plan: {plan.explain(r.timings, cfg.precision)}")
    aug = choose_augment(cfg.augment, cfg.epochs, pre.image_size, cfg.flip,
                         translate=cfg.translate, rotate=cfg.rotate, erase=cfg.erase)
    shared = dict(workers=cfg.workers, max_pixels=cfg.max_pixels, **plan.placement)
    train_loader = make_loader(data.train, pre, train=True, augment=aug, seed=cfg.seed, **shared,
                               batch_size=cfg.batch_size, sampler=cfg.sampler, rank=ddp.rank,
                               train_fraction=cfg.train_fraction, world_size=ddp.world_size)
    val_loader = (make_loader(data.val, pre, train=False, batch_size=max(256, cfg.batch_size),
                              **shared) if data.val else None)
    if cfg.sync_bn and ddp.active:
        if not plan.device.startswith("cuda"):
            raise ConfigError("--sync-bn needs GPUs: torch's SyncBatchNorm does not run on CPU")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # before a teacher's pass, which the budget counts
    budget = _budget(r, log, ddp)
    objective = CrossEntropy(class_weights(data.train) if cfg.class_weights == "auto" else None,
                             cfg.label_smoothing)
    if r.unlabeled is not None:
        from .ssl import ssl_objective

        objective = ssl_objective(cfg, data, r.unlabeled, objective, aug, train_loader.batch_size,
                                  plan, ddp, log)
    trainer = Trainer(model, train_loader, val_loader, plan,
                      optim=settings_from(OptimSettings, cfg),
                      loop=settings_from(LoopSettings, cfg), objective=objective, log=log,
                      distributed=ddp.active)
    if run is None:  # a new run: its folder now that the run is resolved
        run = RunDir(broadcast(str(RunDir.create(cfg.out, cfg.name, default_run_name(
            cfg.model, cfg.data), cfg.to_dict()).path) if ddp.is_main else "", ddp))
    meta = model_meta(cfg.model, cfg.model_kwargs, pre)
    checks = LearningCheck(data.train.counts(), log, weighted=cfg.class_weights == "auto",
                           after=ramp_epochs(cfg.schedule, cfg.epochs, cfg.warmup_epochs),
                           restarts=r.restarts)
    best = _add_callbacks(trainer, cfg, run, meta, [budget, checks], ddp, log, callbacks or [])
    with resumable(run):
        _start(trainer, run, r, ckpt, epochs_given, ddp, log)
        t_fit = time.perf_counter()
        history = trainer.fit()
        t_fit_end = time.perf_counter()
        checksums = gather(weights_checksum(trainer.model), ddp)
        finish(ddp)
        if not ddp.is_main:
            return TrainResult(run, None, history, plan, time.perf_counter() - t_start)
        skipped = _write_skipped(run, data.skipped, (train_loader, val_loader), log)
        held_out = _final_figures(run, cfg, data, plan, log)
    _record_epochs(run, trainer.epochs)
    test = held_out[1] if held_out and held_out[0] == "test" else None
    seconds = (t_end := time.perf_counter()) - t_start
    phases = {"startup_s": t_fit - started, "train_s": t_fit_end - t_fit,
              "teardown_s": t_end - t_fit_end}  # from the command to the summary
    write_json(run.summary, {
        "test": test, "held_out": held_out and {"split": held_out[0], **held_out[1]},
        "best_val_top1": best.top1, "best_epoch": best.epoch, "epochs": trainer.epochs,
        "restarts": trainer.state.restarts, "lr_factor": trainer.state.lr_factor,
        "seconds": seconds, "plan": plan.describe(), "timings_s_per_step": r.timings,
        **phases, "skipped_images": len(skipped), "world_size": ddp.world_size,
        "ranks_identical": len(set(checksums)) == 1})
    return TrainResult(run, test, history, plan, seconds, held_out, phases=phases)


def _record_epochs(run: RunDir, epochs: int) -> None:
    """``config.yaml`` holds the values used, so that ``--config`` repeats a run: when a
    ``--budget`` or the time cap re-planned the epochs (or ``--resume --epochs`` extended
    them), it is rewritten, atomically, with the number of epochs of the final plan, the
    number trained (an early stop ends sooner; the file's ``early_stop`` repeats that)."""
    saved = read_yaml(run.config)
    if saved.get("epochs") != epochs:
        write_yaml(run.config, {**saved, "epochs": epochs})


def _finished_run(run: RunDir, log: Log) -> TrainResult:
    """A finished run as it is, read and not written (no file of the folder changes)."""
    summary, history = json.loads(run.summary.read_text()), run.read_metrics()
    held, planned = summary.get("held_out"), summary["epochs"]
    trained = (f"{len(history)} epochs trained" if len(history) == planned else
               f"stopped early after {len(history)} of {planned} epochs")
    log(f"{run.path} is complete ({trained}): nothing to resume; its results are in "
        f"{run.summary}, its model in {run.model_file} (--epochs above {planned} trains "
        "it further)")
    return TrainResult(run, summary.get("test"), history, None, summary["seconds"],
                       held and (held.pop("split"), held), unchanged=True)


def _budget(r: ResolvedRun, log: Log, ddp: DistInfo) -> Budget | None:
    if r.budget_kind == "budget":
        start, final = r.whole_run or (None, 0)
        return Budget(r.budget_s, f"budget {r.cfg.budget}", log, ddp=ddp,
                      partial_epochs=r.cfg.train_fraction < 1, start=start, final_images=final)
    if r.budget_kind == "cap":
        return Budget(r.budget_s, f"time cap {TIME_CAP}", log, ddp=ddp,
                      max_epochs=r.cfg.epochs)
    return None


def _start(trainer: Trainer, run: RunDir, r: ResolvedRun, ckpt: Checkpoint | None,
           epochs_given: bool, ddp: DistInfo, log: Log) -> None:
    """Resume from ``ckpt``, or describe the new run (its folder holds the resolved config
    from the start; the epochs done are recorded later, see _record_epochs)."""
    cfg = r.cfg
    if ckpt is not None:
        trainer.restore(ckpt, cfg.epochs if epochs_given else None)
        if ddp.is_main:
            run.truncate_metrics(trainer.state.epoch)
        s = trainer.state
        ended = s.epoch >= trainer.epochs or (s.stop and not s.restart_lr_factor)
        log(f"resumed {run.path} " + ("after its training ended: its final figures follow"
                                      if ended else f"at epoch {s.epoch + 1}, batch {s.batch}"))
    elif ddp.is_main:
        if cfg.resume:
            run.truncate_metrics(0)
        _describe_start(run, r, ddp, log)


def _add_callbacks(trainer: Trainer, cfg: TrainConfig, run: RunDir, meta: dict,
                   first: list[Callback | None], ddp: DistInfo, log: Log,
                   extra: list[Callback]) -> BestModel:
    """The run's callbacks, in the order their work must happen after an epoch: ``first``
    (re-plan the budget, check that the model learns), keep the best model, stop early, log
    the metrics and the training margins, then checkpoint all of it; rank 0 alone writes.
    The caller's callbacks come last."""
    def save(t: Trainer) -> None:
        if ddp.is_main:
            save_model_file(run.model_file, t.eval_model.state_dict(), meta)

    best = BestModel(save)
    cbs: list[Callback] = [cb for cb in first if cb is not None]
    cbs.append(best)
    if cfg.early_stop:
        cbs.append(EarlyStopping(cfg.early_stop, log))
    cbs.append(MetricsLog(run if ddp.is_main else None, log))
    if ddp.is_main:  # each training image's margins (rank 0's share), for the audit
        cbs.append(TrainingMargins(trainer.train_loader.n, run.margins))
        cbs.append(Checkpointing(run.last_checkpoint, meta, cfg.checkpoint_every))
        if cfg.tensorboard:
            cbs.append(TensorBoard(run.tensorboard))
    trainer.callbacks = cbs + extra
    return best


def _describe_start(run: RunDir, r: ResolvedRun, ddp: DistInfo, log: Log) -> None:
    cfg, data, source, model = r.cfg, r.data, r.source, r.model
    if data.train_idx is not None:
        unreadable = {m.split(": ", 1)[0] for m in data.skipped}  # "path: reason"
        write_split_manifest(run.split, source.train, data.train_idx, data.val_idx, unreadable)
    pre = data.preprocess
    n = sum(p.numel() for p in model.parameters())
    log(f"run {run.path}: {cfg.model} ({n / 1e6:.2f}M params) on {data.source}, "
        f"{len(data.train)} train / {len(data.val) if data.val else 0} val images, "
        f"{pre.channels}x{pre.image_size}x{pre.image_size}"
        + (f", {ddp.world_size} processes" if ddp.active else ""))
    if data.conflicts:
        atomic_write_text(run.conflicts, "".join(c + "\n" for c in data.conflicts))
        log(f"warning: {len(data.conflicts)} image file(s) have the same bytes as a file of "
            f"another class (both kept), listed in {run.conflicts}; first: {data.conflicts[0]}")
    if data.val is None and data.test is None:
        log("warning: no validation or test images: nothing will measure this model "
            "(--val-split 0.1 holds a tenth of the training images out)")


def _write_skipped(run: RunDir, skipped: list[str], loaders: tuple, log: Log) -> list[str]:
    """Images found unreadable, decoded up front or while streaming, listed in the run."""
    skipped = skipped + sorted(set().union(*(getattr(ld, "skipped", set()) for ld in loaders)))
    if skipped:
        atomic_write_text(run.skipped, "".join(s + "\n" for s in skipped))
        log(f"skipped {len(skipped)} unreadable image file(s), listed with the reason in "
            f"{run.skipped}:\n" + "\n".join(f"  {line}" for line in skip_summary(skipped)))
    return skipped


def _final_figures(run: RunDir, cfg: TrainConfig, data: PreparedData, plan: ExecPlan,
                   log: Log) -> tuple[str, dict[str, float]] | None:
    """The saved model, loaded once: its calibration temperature fitted on the validation
    split and stored in the run (the model is final when training ends), then its figures
    on the test split (else the validation split, saying so) with the run's TTA, in fp32:
    (split, metrics)."""
    split, ds = ("test", data.test) if data.test is not None else ("val", data.val)
    if ds is None:
        return None
    from .evaluation import calibrate_run

    model, pre, _ = load_run_model(run.path, device=plan.device)
    fp32 = eval_plan(plan.device)

    def logits(part: Dataset, tta: str = "none") -> tuple[torch.Tensor, torch.Tensor]:
        loader = make_loader(part, pre, train=False, workers=cfg.workers, **fp32.placement,
                             batch_size=max(256, cfg.batch_size), max_pixels=cfg.max_pixels)
        return predict_logits(model, loader, fp32, tta=tta)

    if data.val is not None:
        calibrate_run(run, *logits(data.val), log)
    m = basic_metrics(*logits(ds, tta_mode(cfg, cfg.flip)))
    note = "" if split == "test" else "; the data have no test split"
    log(f"{split}: loss {m['loss']:.4f}  top-1 {m['top1']:.4f}  top-5 {m['top5']:.4f} "
        f"({m['n']} images{note})")
    return split, m
