"""The training loop. It fits on a screen; checkpointing, early stopping and logging hang off
a few hooks (:mod:`imgcls.engine.callbacks`), and what a step minimises is an objective the
trainer is given (cross-entropy here, the semi-supervised methods in :mod:`imgcls.ssl`).

The trainer takes small settings objects, not the run configuration: what the optimiser,
the loop and the execution plan need, resolved before training starts."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ImgclsError
from ..metrics import basic_metrics
from ..models.transfer import freeze_backbone, set_frozen_bn_eval, split_backbone_head, unfreeze
from ..progress import make_progress
from ..runtime.forward import predict_logits
from ..runtime.plan import ExecPlan
from .checkpoint import Checkpoint, restore_rng
from .ema import ModelEMA
from .schedules import lr_at, progressive_scale

Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class OptimSettings:
    """The optimiser, its learning-rate schedule and gradient clipping."""

    optimizer: str = "sgd"
    lr: float = 0.1  # peak learning rate, resolved
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    depthwise_decay: bool = True  # False: none on depthwise convolution filters either
    backbone_lr_scale: float = 1.0
    schedule: str = "onecycle"
    warmup_epochs: float = 0.0
    step_size: int = 5
    gamma: float = 0.1
    grad_clip: float = 0.0


@dataclass(frozen=True)
class LoopSettings:
    """How long the loop runs and what it does around the steps."""

    epochs: int = 10
    ema: float = 0.0
    progressive_resize: float = 0.0  # first epoch's share of the image size (0: off)
    freeze: str = "none"
    unfreeze_after: int = 0
    nonfinite_patience: int = 5
    nonfinite_limit: int = 25
    progress: bool = True  # a bar per epoch on an interactive terminal


@dataclass
class TrainState:
    """Counters that, with the checkpointed tensors, fix everything the next step does."""

    epoch: int = 0  # epoch in progress
    batch: int = 0  # next batch index inside that epoch
    step: int = 0  # optimisation steps done
    stop: bool = False
    ema_updates: int = 0
    bad_steps: int = 0  # consecutive steps with a non-finite loss
    skipped_steps: int = 0  # all of them, for the record
    lr_factor: float = 1.0  # lowered after every nonfinite_patience bad steps in a row
    restarts: int = 0  # times the run started over (a run that did not learn)
    restart_lr_factor: float = 0.0  # a start-over requested at the end of this epoch
    # the plan, when it differs from the settings (a --budget re-plans it): 0 = as set
    epochs: int = 0
    steps_per_epoch: int = 0
    # running sums of the epoch in progress, so a resumed epoch reports the whole epoch
    epoch_loss_sum: float = 0.0
    epoch_correct: int = 0
    epoch_seen: int = 0
    epoch_seconds: float = 0.0

    @classmethod
    def from_dict(cls, d: dict) -> TrainState:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class Callback:
    """Hooks called by :class:`Trainer`; override what you need (the run's own callbacks are
    in :mod:`imgcls.engine.callbacks`). A callback with state returns it from ``state_dict``;
    the checkpoint holds it under ``key`` and a resumed run gives it back."""

    key: str = ""  # name of the state in the checkpoint (empty: the callback keeps none)

    def on_train_start(self, trainer: Trainer) -> None: ...
    def on_step_end(self, trainer: Trainer) -> None: ...
    def on_epoch_end(self, trainer: Trainer, record: dict) -> None: ...
    def on_train_end(self, trainer: Trainer) -> None: ...
    def on_restart(self, trainer: Trainer) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


class TrainingDiverged(ImgclsError):
    """The loss stayed non-finite for too many steps in a row."""


class CrossEntropy:
    """The supervised objective: cross-entropy of the labelled batch, optionally weighted
    by class and label-smoothed. Objectives with state (the semi-supervised ones) return it
    from ``state_dict`` for the checkpoint and may add numbers to the epoch's record."""

    def __init__(self, weight: torch.Tensor | None = None, label_smoothing: float = 0.0) -> None:
        self.weight, self.label_smoothing = weight, label_smoothing

    def to(self, device: str | torch.device) -> CrossEntropy:
        if self.weight is not None:
            self.weight = self.weight.to(device)
        return self

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), y, weight=self.weight,
                               label_smoothing=self.label_smoothing)

    def __call__(self, forward: Forward, x: torch.Tensor, y: torch.Tensor, step: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits of ``x``, loss) for optimisation step ``step``."""
        logits = forward(x)
        return logits, self.loss(logits, y)

    def epoch_record(self, batches: int) -> dict[str, float]:
        """Numbers of the epoch just ended (``batches`` steps) for its metrics record."""
        return {}

    def end_epoch(self) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


def _depthwise_weights(model: nn.Module) -> set[int]:
    """ids of the weights of ``model``'s depthwise convolutions (one filter per channel)."""
    return {id(m.weight) for m in model.modules()
            if isinstance(m, nn.Conv2d) and 1 < m.groups == m.in_channels}


def make_optimizer(model: nn.Module, o: OptimSettings) -> torch.optim.Optimizer:
    """SGD / Adam / AdamW; no weight decay on biases and normalisation weights (1-d), nor on
    depthwise filters unless ``o.depthwise_decay``; the backbone's groups carry ``lr_scale``
    = ``o.backbone_lr_scale``.

    Frozen parameters are in the optimizer too: without gradients they are not updated, and
    unfreezing later needs no new optimizer (so checkpoints and resume stay simple)."""
    backbone, head = split_backbone_head(model)
    exempt = set() if o.depthwise_decay else _depthwise_weights(model)
    groups = []
    for params, scale in ((backbone, o.backbone_lr_scale), (head, 1.0)):
        for decay in (True, False):
            ps = [p for p in params if (p.ndim > 1 and id(p) not in exempt) == decay]
            if ps:
                groups.append({"params": ps, "weight_decay": o.weight_decay if decay else 0.0,
                               "lr_scale": scale})
    if o.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum,
                               nesterov=o.nesterov and o.momentum > 0)
    cls = torch.optim.Adam if o.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=o.lr)


class Trainer:
    """Runs ``loop.epochs`` epochs of ``train_loader``, validating on ``val_loader`` after
    each, minimising ``objective`` (default: plain cross-entropy)."""

    def __init__(
        self,
        model: nn.Module,
        train_loader: object,
        val_loader: object | None,
        plan: ExecPlan,
        *,
        optim: OptimSettings,
        loop: LoopSettings,
        objective: CrossEntropy | None = None,
        callbacks: list[Callback] | None = None,
        log: Callable[[str], None] = print,
        distributed: bool = False,
    ) -> None:
        self.model = plan.prepare(model)
        # DDP averages gradients across processes; state dicts, EMA and validation use the
        # plain module it wraps (the same parameters)
        self.forward_model = (nn.parallel.DistributedDataParallel(self.model)
                              if distributed else self.model)
        self.train_loader, self.val_loader = train_loader, val_loader
        self.optim, self.loop, self.plan, self.log = optim, loop, plan, log
        self.objective = (objective or CrossEntropy()).to(plan.device)
        self.callbacks = callbacks or []
        self.optimizer = make_optimizer(self.model, optim)
        self.scaler = torch.amp.GradScaler("cuda") if plan.precision == "fp16" else None
        self.ema = ModelEMA(self.model, loop.ema) if loop.ema > 0 else None
        self.state = TrainState()
        self._initial = {"model": {k: v.clone() for k, v in self.model.state_dict().items()}}
        # BatchNorm statistics are updated by the forward pass itself: a step whose loss is
        # not finite restores them from this copy, so a skipped step leaves no trace.
        self._buffers = list(self.model.buffers())
        self._buffer_copy = [b.clone() for b in self._buffers]
        self.epochs = loop.epochs
        self.steps_per_epoch = len(train_loader)
        self.total_steps = self.steps_per_epoch * self.epochs
        self.history: list[dict] = []
        # the last step's (logits, labels), for callbacks that record per-image figures
        self.step_output: tuple[torch.Tensor, torch.Tensor] | None = None

    def set_epochs(self, epochs: int) -> None:
        """Change the length of the run (the schedule stretches or shrinks to fit); the new
        plan is part of the state, so a resumed run keeps it."""
        self.epochs = self.state.epochs = epochs
        self.total_steps = self.steps_per_epoch * epochs

    def set_steps_per_epoch(self, steps: int) -> None:
        """Shorten the epochs (from the current one on) to ``steps`` batches."""
        self.train_loader.max_batches = self.steps_per_epoch = self.state.steps_per_epoch = steps
        self.total_steps = steps * self.epochs

    def load_state(self, state: TrainState) -> None:
        """Take over a checkpoint's counters, and the plan they were made under."""
        self.state = state
        if state.steps_per_epoch:
            self.set_steps_per_epoch(state.steps_per_epoch)
        if state.epochs:
            self.set_epochs(state.epochs)

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated and saved: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def lr(self, step: int) -> float:
        o = self.optim
        return lr_at(step, self.total_steps, o.lr, schedule=o.schedule,
                     warmup_steps=int(o.warmup_epochs * self.steps_per_epoch),
                     steps_per_epoch=self.steps_per_epoch, step_size=o.step_size, gamma=o.gamma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The training forward pass, under the plan's autocast."""
        with self.plan.autocast():
            return self.forward_model(x)

    def train_step(self, x: torch.Tensor, y: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """One optimisation step; None when the loss was not finite and the step skipped."""
        s = self.state
        lr = self.lr(s.step) * s.lr_factor
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        if self._buffers:
            torch._foreach_copy_(self._buffer_copy, self._buffers)
        logits, loss = self.objective(self.forward, x, y, s.step)
        if not torch.isfinite(loss):
            self.step_output = None
            self.skip_step(float(loss.detach()))
            return None
        s.bad_steps = 0
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.optim.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.optim.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        s.step += 1
        logits = logits.detach()
        self.step_output = (logits, y)
        return loss.detach(), (logits.argmax(1) == y).sum()

    def skip_step(self, loss: float) -> None:
        """Leave weights, optimizer and BatchNorm statistics as they were; halve the learning
        rate after ``nonfinite_patience`` bad steps in a row, stop after ``nonfinite_limit``."""
        s, c = self.state, self.loop
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
        with make_progress(self.loop.progress) as bar:
            while True:
                while self.state.epoch < self.epochs and not self.state.stop:
                    self.run_epoch(bar)
                if not self.state.restart_lr_factor:
                    break
                self.restart()
        for cb in self.callbacks:
            cb.on_train_end(self)
        return self.history

    def request_restart(self, lr_factor: float) -> None:
        """Start over after this epoch, from the initial weights, with the learning rate
        scaled by ``lr_factor`` (for a run that is not learning)."""
        self.state.restart_lr_factor, self.state.stop = lr_factor, True

    def restart(self) -> None:
        s = self.state
        self.model.load_state_dict(self._initial["model"])
        if self.ema is not None:
            self.ema.module.load_state_dict(self._initial["model"])
            self.ema.updates = 0
        self.optimizer.state.clear()  # momentum and Adam's moments
        self.state = TrainState(lr_factor=s.lr_factor * s.restart_lr_factor,
                                restarts=s.restarts + 1, epochs=s.epochs,
                                steps_per_epoch=s.steps_per_epoch)
        self.history = []
        for cb in self.callbacks:
            cb.on_restart(self)

    def frozen(self, epoch: int) -> bool:
        c = self.loop
        return c.freeze == "backbone" and (c.unfreeze_after == 0 or epoch < c.unfreeze_after)

    def run_epoch(self, bar: object) -> None:
        s = self.state
        self.train_loader.set_epoch(s.epoch)
        self.train_loader.scale = progressive_scale(s.epoch, self.epochs,
                                                    self.loop.progressive_resize)
        self.model.train()
        # Freezing is a function of the epoch, so a resumed run freezes exactly as before.
        if self.frozen(s.epoch):
            set_frozen_bn_eval(freeze_backbone(self.model))
        elif self.loop.freeze == "backbone":
            unfreeze(self.model)
        task = bar.add_task(f"epoch {s.epoch + 1}/{self.epochs}",
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
        record = {"epoch": s.epoch + 1, "step": s.step,
                  "lr": self.lr(max(s.step - 1, 0)) * s.lr_factor,  # the rate used
                  "train_loss": s.epoch_loss_sum / seen, "train_top1": s.epoch_correct / seen,
                  "train_images_per_s": s.epoch_seen / max(s.epoch_seconds, 1e-9),
                  "epoch_time_s": s.epoch_seconds}
        if self.train_loader.scale < 1:
            record["train_scale"] = self.train_loader.scale
        record.update(self.objective.epoch_record(s.batch))
        if not math.isfinite(record["train_loss"]):
            self.log(f"warning: epoch {s.epoch + 1} train loss is {record['train_loss']}")
        record.update(self.validate())
        bar.remove_task(task)
        s.epoch, s.batch = s.epoch + 1, 0
        s.epoch_loss_sum, s.epoch_correct, s.epoch_seen, s.epoch_seconds = 0.0, 0, 0, 0.0
        self.objective.end_epoch()
        self.history.append(record)
        for cb in self.callbacks:
            cb.on_epoch_end(self, record)

    def state_dict(self) -> dict:
        if self.ema is not None:
            self.state.ema_updates = self.ema.updates
        return asdict(self.state)

    def checkpoint(self, meta: dict) -> Checkpoint:
        """Everything a resumed run needs: weights, EMA, optimizer, scaler, the counters and
        the state of the objective and of every callback (``meta`` added to the header)."""
        callbacks = {cb.key: cb.state_dict() for cb in self.callbacks if cb.key}
        return Checkpoint(
            model=self.model.state_dict(),
            meta={"state": self.state_dict(), "objective": self.objective.state_dict(),
                  "callbacks": callbacks, **meta},
            ema=self.ema.state_dict() if self.ema else None,
            optimizer=self.optimizer.state_dict(),
            scaler=self.scaler.state_dict() if self.scaler else None)

    def restore(self, ckpt: Checkpoint, epochs: int | None = None) -> None:
        """Continue from ``ckpt`` exactly (RNG states included); ``epochs`` given replaces the
        planned number."""
        self.model.load_state_dict(ckpt.model)
        self.load_state(TrainState.from_dict(ckpt.meta["state"]))
        if epochs is not None:
            self.set_epochs(epochs)
        self.objective.load_state_dict(ckpt.meta.get("objective", {}))
        saved = ckpt.meta.get("callbacks", {})
        for cb in self.callbacks:
            if cb.key in saved:
                cb.load_state_dict(saved[cb.key])
        if self.ema is not None and ckpt.ema is not None:
            self.ema.load_state_dict(ckpt.ema)
            self.ema.updates = self.state.ema_updates
        if ckpt.optimizer is not None:
            self.optimizer.load_state_dict(ckpt.optimizer)
        if self.scaler is not None and ckpt.scaler:
            self.scaler.load_state_dict(ckpt.scaler)
        restore_rng(ckpt.rng["tensors"], ckpt.rng["info"])
        if epochs is not None and not self.state.restart_lr_factor:
            self.state.stop = False  # more epochs asked of a run that stopped early: train on
