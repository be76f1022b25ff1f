"""The training loop. It fits on a screen; checkpointing, early stopping and logging hang off
a few hooks (Lightning's Callback idea without its machinery)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TrainConfig
from ..errors import ImgclsError
from ..models import is_external, model_info
from ..models.transfer import freeze_backbone, set_frozen_bn_eval, split_backbone_head, unfreeze
from ..progress import make_progress
from .ema import ModelEMA
from .evaluate import basic_metrics, predict_logits
from .precision import ExecPlan
from .schedules import lr_at


@dataclass
class TrainState:
    """Counters that, with the checkpointed tensors, fix everything the next step does."""

    epoch: int = 0  # epoch in progress
    batch: int = 0  # next batch index inside that epoch
    step: int = 0  # optimisation steps done
    best_top1: float = -1.0
    best_epoch: int = 0  # 1-based epoch of the best val accuracy (0: none yet)
    bad_epochs: int = 0
    stop: bool = False
    ema_updates: int = 0
    bad_steps: int = 0  # consecutive steps with a non-finite loss
    skipped_steps: int = 0  # all of them, for the record
    lr_factor: float = 1.0  # lowered after every nonfinite_patience bad steps in a row
    # running sums of the epoch in progress, so a resumed epoch reports the whole epoch
    epoch_loss_sum: float = 0.0
    epoch_correct: int = 0
    epoch_seen: int = 0
    epoch_seconds: float = 0.0
    epoch_mask_sum: float = 0.0  # semi-supervised: share of confident pseudo-labels, summed
    # FreeMatch: running means of the unlabelled batches' top confidence and class
    # probabilities, from which its thresholds follow (empty before the first step)
    ssl_confidence: float = 0.0
    ssl_class_probs: list[float] = field(default_factory=list)


class TrainingDiverged(ImgclsError):
    """The loss stayed non-finite for too many steps in a row."""


class Callback:
    """Hooks called by :class:`Trainer`; override what you need."""

    def on_train_start(self, trainer: Trainer) -> None: ...
    def on_step_end(self, trainer: Trainer) -> None: ...
    def on_epoch_end(self, trainer: Trainer, record: dict) -> None: ...
    def on_train_end(self, trainer: Trainer) -> None: ...


def default_lr(cfg: TrainConfig) -> float:
    """SGD: 0.1 per 128 images that a step back-propagates through (the linear scaling rule),
    which with ``--unlabeled`` counts the ``ssl_ratio`` x batch unlabelled images too: on
    Fashion-MNIST with 1,000 labels, fastnet_s and FreeMatch at batch 64, peaks of 0.05 /
    0.1 / 0.2 gave 0.883 / 0.889 / 0.894 in 12 minutes, and 0.908 / 0.907 in 90-95 minutes
    (benchmarks/README.md)."""
    if cfg.lr is not None:
        return cfg.lr
    if cfg.optimizer != "sgd":
        return 1e-3
    scale = 1.0 if is_external(cfg.model) else model_info(cfg.model).lr_scale
    images = cfg.batch_size * (1 + cfg.ssl_ratio if cfg.unlabeled else 1)
    return 0.1 * images / 128 * scale


def label_smoothing(cfg: TrainConfig) -> float:
    if cfg.label_smoothing is not None:
        return cfg.label_smoothing
    return 0.0 if cfg.unlabeled else 0.1


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD / Adam / AdamW; no weight decay on biases and normalisation weights (1-d); the
    backbone's groups carry ``lr_scale`` = ``cfg.backbone_lr_scale``.

    Frozen parameters are in the optimizer too: without gradients they are not updated, and
    unfreezing later needs no new optimizer (so checkpoints and resume stay simple)."""
    backbone, head = split_backbone_head(model)
    groups = []
    for params, scale in ((backbone, cfg.backbone_lr_scale), (head, 1.0)):
        for decay in (True, False):
            ps = [p for p in params if (p.ndim > 1) == decay]
            if ps:
                groups.append({"params": ps, "weight_decay": cfg.weight_decay if decay else 0.0,
                               "lr_scale": scale})
    lr = default_lr(cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=lr)


class Trainer:
    """Runs ``cfg.epochs`` epochs of ``train_loader``, validating on ``val_loader`` after each."""

    def __init__(
        self,
        model: nn.Module,
        train_loader: object,
        val_loader: object | None,
        cfg: TrainConfig,
        plan: ExecPlan,
        callbacks: list[Callback] | None = None,
        log: Callable[[str], None] = print,
        loss_weight: torch.Tensor | None = None,
        distributed: bool = False,
        unlabeled: object | None = None,
    ) -> None:
        self.model = plan.prepare(model)
        # DDP averages gradients across processes; state dicts, EMA and validation use the
        # plain module it wraps (the same parameters)
        self.forward_model = (nn.parallel.DistributedDataParallel(self.model)
                              if distributed else self.model)
        self.train_loader, self.val_loader = train_loader, val_loader
        self.cfg, self.plan, self.log = cfg, plan, log
        self.callbacks = callbacks or []
        self.unlabeled = unlabeled  # an UnlabeledLoader for semi-supervised training
        self.loss_weight = loss_weight.to(plan.device) if loss_weight is not None else None
        self.optimizer = make_optimizer(self.model, cfg)
        self.label_smoothing = label_smoothing(cfg)
        self.scaler = torch.amp.GradScaler("cuda") if plan.precision == "fp16" else None
        self.ema = ModelEMA(self.model, cfg.ema) if cfg.ema > 0 else None
        self.state = TrainState()
        # BatchNorm statistics are updated by the forward pass itself: a step whose loss is
        # not finite restores them from this copy, so a skipped step leaves no trace.
        self._buffers = list(self.model.buffers())
        self._buffer_copy = [b.clone() for b in self._buffers]
        self.steps_per_epoch = len(train_loader)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.history: list[dict] = []

    def set_epochs(self, epochs: int) -> None:
        """Change the length of the run (the schedule stretches or shrinks to fit)."""
        self.cfg = self.cfg.replace(epochs=epochs)
        self.total_steps = self.steps_per_epoch * epochs

    def set_steps_per_epoch(self, steps: int) -> None:
        """Shorten the epochs (from the current one on) to ``steps`` batches."""
        self.train_loader.max_batches = self.steps_per_epoch = steps
        self.total_steps = steps * self.cfg.epochs

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated and saved: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def lr(self, step: int) -> float:
        c = self.cfg
        return lr_at(step, self.total_steps, default_lr(c), schedule=c.schedule,
                     warmup_steps=int(c.warmup_epochs * self.steps_per_epoch),
                     steps_per_epoch=self.steps_per_epoch, step_size=c.step_size, gamma=c.gamma)

    def train_step(self, x: torch.Tensor, y: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """One optimisation step; None when the loss was not finite and the step skipped."""
        s = self.state
        lr = self.lr(s.step) * s.lr_factor
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        if self._buffers:
            torch._foreach_copy_(self._buffer_copy, self._buffers)
        if self.unlabeled is not None:
            logits, loss = self.semi_supervised_loss(x, y)
        else:
            with self.plan.autocast():
                logits = self.forward_model(x)
            loss = F.cross_entropy(logits.float(), y, weight=self.loss_weight,
                                   label_smoothing=self.label_smoothing)
        if not torch.isfinite(loss):
            self.skip_step(float(loss.detach()))
            return None
        s.bad_steps = 0
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        s.step += 1
        return loss.detach(), (logits.detach().argmax(1) == y).sum()

    def semi_supervised_loss(self, x: torch.Tensor, y: torch.Tensor
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        """FixMatch (Sohn et al. 2020): the weak view's confident predictions (max probability
        >= ``ssl_threshold``) are hard labels for the strong view; the weak view needs no
        gradient, so it has a forward pass of its own without one (1.8x faster per step
        than passing it through backward too, measured). ``freematch``: the same with the
        thresholds of :meth:`freematch_thresholds`. ``pseudo`` (Lee 2013): the confident
        predictions are labels for the weak view itself, in one pass with the labelled
        batch. ``distill`` (Noisy Student, Xie et al. 2020): a fixed teacher's class
        probabilities, worked out once before training, are soft targets for the strong view;
        every unlabelled image teaches."""
        c = self.cfg
        weak, strong, teacher = self.unlabeled.batch(self.state.step)
        n = len(x)
        if c.ssl in ("fixmatch", "freematch"):
            with torch.no_grad(), self.plan.autocast():
                out_weak = self.forward_model(weak).float()
        with self.plan.autocast():
            out = self.forward_model(torch.cat([x, weak if c.ssl == "pseudo" else strong])).float()
        target = out[n:]
        if c.ssl == "pseudo":
            out_weak = target
        logits = out[:n]
        loss = F.cross_entropy(logits, y, weight=self.loss_weight,
                               label_smoothing=self.label_smoothing)
        if c.ssl == "distill":
            self.state.epoch_mask_sum += 1.0
            return logits, loss + c.ssl_weight * F.cross_entropy(target, teacher)
        probs = out_weak.detach().softmax(1)
        conf, pseudo = probs.max(1)
        if c.ssl == "freematch":
            mask = (conf >= self.freematch_thresholds(probs, conf)[pseudo]).float()
        else:
            mask = (conf >= c.ssl_threshold).float()
        unsup = (F.cross_entropy(target, pseudo, reduction="none") * mask).mean()
        self.state.epoch_mask_sum += float(mask.mean())
        return logits, loss + c.ssl_weight * unsup

    def freematch_thresholds(self, probs: torch.Tensor, conf: torch.Tensor) -> torch.Tensor:
        """FreeMatch's self-adaptive thresholds (Wang et al. 2023), one per class: the
        running mean (momentum 0.999, from 1/classes) of the model's top confidence on the
        unlabelled batches, scaled by each class's running mean probability relative to the
        largest. Low while the model is unsure, so the unlabelled images teach from the first
        steps instead of waiting for confidences of 0.95; lower for the classes it is least
        sure of. Kept in the train state, so a resumed run goes on with the same values; a
        batch with non-finite predictions (its step will be skipped) leaves them as they are."""
        s, m = self.state, 0.999
        if not s.ssl_class_probs:
            s.ssl_confidence = 1.0 / probs.shape[1]
            s.ssl_class_probs = [s.ssl_confidence] * probs.shape[1]
        p = torch.tensor(s.ssl_class_probs)
        if torch.isfinite(probs).all():
            s.ssl_confidence = m * s.ssl_confidence + (1 - m) * float(conf.mean())
            p = m * p + (1 - m) * probs.mean(0).cpu()
            s.ssl_class_probs = p.tolist()
        return (s.ssl_confidence * p / p.max()).to(probs.device)

    def skip_step(self, loss: float) -> None:
        """Leave weights, optimizer and BatchNorm statistics as they were; halve the learning
        rate after ``nonfinite_patience`` bad steps in a row, stop after ``nonfinite_limit``."""
        s, c = self.state, self.cfg
        if self._buffers:
            torch._foreach_copy_(self._buffers, self._buffer_copy)
        s.bad_steps += 1
        s.skipped_steps += 1
        s.step += 1  # the schedule moves on, as it would have
        if s.bad_steps >= c.nonfinite_limit:
            raise TrainingDiverged(
                f"the loss was {loss} for {s.bad_steps} steps in a row (epoch {s.epoch + 1}, "
                f"step {s.step}); stopped. The last checkpoint holds the weights from before; "
                "lower --lr, set --grad-clip or check the data")
        if s.bad_steps % c.nonfinite_patience == 0:
            s.lr_factor *= 0.5
            self.log(f"warning: loss {loss} for {s.bad_steps} steps in a row; learning rate "
                     f"lowered to {s.lr_factor:g}x")

    def validate(self) -> dict[str, float]:
        if self.val_loader is None:
            return {}
        logits, labels = predict_logits(self.eval_model, self.val_loader, self.plan)
        m = basic_metrics(logits, labels)
        return {"val_loss": m["loss"], "val_top1": m["top1"], "val_top5": m["top5"]}

    def fit(self) -> list[dict]:
        for cb in self.callbacks:
            cb.on_train_start(self)
        s = self.state
        with make_progress() as bar:
            while s.epoch < self.cfg.epochs and not s.stop:
                self.run_epoch(bar)
        for cb in self.callbacks:
            cb.on_train_end(self)
        return self.history

    def frozen(self, epoch: int) -> bool:
        c = self.cfg
        return c.freeze == "backbone" and (c.unfreeze_after == 0 or epoch < c.unfreeze_after)

    def run_epoch(self, bar: object) -> None:
        s = self.state
        self.train_loader.set_epoch(s.epoch)
        self.model.train()
        # Freezing is a function of the epoch, so a resumed run freezes exactly as before.
        if self.frozen(s.epoch):
            set_frozen_bn_eval(freeze_backbone(self.model))
        elif self.cfg.freeze == "backbone":
            unfreeze(self.model)
        task = bar.add_task(f"epoch {s.epoch + 1}/{self.cfg.epochs}",
                            total=self.steps_per_epoch, completed=s.batch, info="")
        t0, seen0 = time.perf_counter() - s.epoch_seconds, s.epoch_seen
        for x, y in self.train_loader.iter_from(s.batch):
            out = self.train_step(x, y)
            if out is not None:
                loss, hits = out
                # .item() syncs; on a CPU that costs nothing, on a GPU it is once per step
                s.epoch_loss_sum += loss.item() * len(y)
                s.epoch_correct += int(hits)
                s.epoch_seen += len(y)
            s.epoch_seconds = time.perf_counter() - t0
            s.batch += 1
            for cb in self.callbacks:
                cb.on_step_end(self)
            if s.batch % 10 == 0 or s.batch == self.steps_per_epoch:
                rate = (s.epoch_seen - seen0) / max(time.perf_counter() - t0, 1e-9)
                info = (f"loss {s.epoch_loss_sum / s.epoch_seen:.3f} "
                        f"acc {s.epoch_correct / s.epoch_seen:.3f} {rate:,.0f} img/s")
                bar.update(task, total=self.steps_per_epoch, completed=s.batch, info=info)
            if s.batch >= self.steps_per_epoch:  # the epoch was shortened (--budget)
                break
        seen = max(s.epoch_seen, 1)
        record = {"epoch": s.epoch + 1, "step": s.step, "lr": self.lr(max(s.step - 1, 0)),
                  "train_loss": s.epoch_loss_sum / seen, "train_top1": s.epoch_correct / seen,
                  "train_images_per_s": s.epoch_seen / max(s.epoch_seconds, 1e-9),
                  "epoch_time_s": s.epoch_seconds}
        if self.unlabeled is not None:
            record["train_pseudo_label_rate"] = s.epoch_mask_sum / max(s.batch, 1)
        if not math.isfinite(record["train_loss"]):
            self.log(f"warning: epoch {s.epoch + 1} train loss is {record['train_loss']}")
        record.update(self.validate())
        bar.remove_task(task)
        s.epoch, s.batch = s.epoch + 1, 0
        s.epoch_loss_sum, s.epoch_correct, s.epoch_seen, s.epoch_seconds = 0.0, 0, 0, 0.0
        s.epoch_mask_sum = 0.0
        self.history.append(record)
        for cb in self.callbacks:
            cb.on_epoch_end(self, record)

    def state_dict(self) -> dict:
        if self.ema is not None:
            self.state.ema_updates = self.ema.updates
        return asdict(self.state)
