"""The jobs that hang off the training loop, one small callback each (Lightning's Callback
idea without its machinery): the last checkpoint, the best model, early stopping, the
metrics log, TensorBoard and each training image's margins (which the audit reads). Each
keeps its own state, which the checkpoint holds."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from ..errors import ConfigError
from ..utils import Log, atomic_write_bytes, read_safetensors, safetensors_bytes
from .checkpoint import save_checkpoint
from .trainer import Callback, Trainer

if TYPE_CHECKING:
    from ..run import RunDir


def improves(record: dict, top1: float, loss: float) -> bool:
    """Whether the epoch ``record`` is better on validation than ``top1`` / ``loss``: a
    higher top-1, or the same top-1 at a lower loss. A small validation split ties often,
    and of two tied epochs the one of lower loss is the more certain, better-calibrated
    model (usually the later one)."""
    return (record["val_top1"], -record["val_loss"]) > (top1, -loss)


class BestModel(Callback):
    """Saves the model file (the EMA weights when there are some) whenever the validation
    top-1 improves, or ties at a lower validation loss; without validation, after every
    epoch."""

    key = "best_model"

    def __init__(self, save: Callable[[Trainer], None]) -> None:
        self.save = save
        self.on_restart(None)

    def on_epoch_end(self, t: Trainer, record: dict) -> None:
        if "val_top1" not in record or improves(record, self.top1, self.loss):
            self.top1, self.loss = record.get("val_top1", 0.0), record.get("val_loss", math.inf)
            self.epoch = t.state.epoch
            self.save(t)

    def state_dict(self) -> dict:
        return {"top1": self.top1, "loss": self.loss, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        # checkpoints written before ties were broken by the loss have no "loss"
        self.top1, self.loss = state["top1"], state.get("loss", math.inf)
        self.epoch = state["epoch"]

    def on_restart(self, t: Trainer | None) -> None:
        # best val top-1, its loss and its 1-based epoch (0: none yet)
        self.top1, self.loss, self.epoch = -1.0, math.inf, 0


def ramp_epochs(schedule: str, epochs: int, warmup_epochs: float) -> int:
    """The epoch by which a run should have learnt something: 3, or the end of the learning
    rate's ramp (one-cycle rises over the first quarter of the steps) when that is later."""
    ramp = 0.25 * epochs if schedule == "onecycle" else warmup_epochs
    return max(3, math.ceil(ramp))


class LearningCheck(Callback):
    """After ``after`` epochs (by then the learning rate has risen to its peak), a run whose
    training accuracy is still at the largest class's share (with ``weighted`` classes, which
    do not favour the largest, at one over their number), or whose loss is still at chance
    level (ln of the number of classes), is not learning: it says so and, when ``restarts``
    are left, starts over at a tenth of the learning rate (the usual cause is a rate too high
    for the model). When the start at the lower rate has a loss no lower than the start
    before it had at the same epoch, the rate was not the cause (a slow start on hard images,
    or labels unrelated to the images): the run starts over once more at the rate before,
    and is not checked again."""

    def __init__(self, counts: list[int], log: Log, *, weighted: bool = False, after: int = 3,
                 restarts: int = 2) -> None:
        self.chance_loss = math.log(len(counts))
        self.guess = 1 / len(counts) if weighted else max(counts) / sum(counts)
        self.guess_why = (f"chance with the classes weighted: {self.guess:.3f}" if weighted else
                          f"the largest class is {self.guess:.3f} of the images")
        self.log, self.after, self.restarts = log, after, restarts
        self.last_loss: float | None = None  # the previous start's loss at the check
        self.done = False

    def on_epoch_end(self, t: Trainer, record: dict) -> None:
        if record["epoch"] != self.after or self.done:
            return
        acc, loss = record["train_top1"], record["train_loss"]
        if acc > self.guess + 0.02 and loss < 0.97 * self.chance_loss:
            return
        why = (f"after {self.after} epochs, training accuracy {acc:.3f} ({self.guess_why}) "
               f"and loss {loss:.3f} (chance: "
               f"{self.chance_loss:.3f}): the model is not learning")
        if self.last_loss is not None and loss >= self.last_loss and (
                t.state.restarts < self.restarts):
            self.log(f"warning: {why}, and no faster than at ten times the rate (loss "
                     f"{self.last_loss:.3f}): the rate is not the cause; starting over at the "
                     "rate before (hard images learn slowly at first; or are the labels "
                     "unrelated to the images?)")
            self.done = True
            t.request_restart(10.0)
            return
        why += ", most likely a learning rate too high for it (or labels unrelated to the images)"
        if t.state.restarts < self.restarts:
            self.log(f"warning: {why}; starting over at a tenth of the learning rate")
            self.last_loss = loss
            t.request_restart(0.1)
        else:
            self.log(f"warning: {why}; try a lower --lr or another --model")


class EarlyStopping(Callback):
    """Stops after ``patience`` epochs without a better validation top-1 (nor the same one
    at a lower loss: the epochs :class:`BestModel` would keep)."""

    key = "early_stopping"

    def __init__(self, patience: int, log: Log) -> None:
        self.patience, self.log = patience, log
        self.on_restart(None)

    def on_epoch_end(self, t: Trainer, record: dict) -> None:
        if "val_top1" not in record or improves(record, self.best, self.best_loss):
            self.best = record.get("val_top1", 0.0)
            self.best_loss, self.bad_epochs = record.get("val_loss", math.inf), 0
            return
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            t.state.stop = True
            self.log(f"early stop: no better val accuracy (nor loss at the same accuracy) "
                     f"for {self.bad_epochs} epochs")

    def state_dict(self) -> dict:
        return {"best": self.best, "best_loss": self.best_loss, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_epochs = state["best"], state["bad_epochs"]
        self.best_loss = state.get("best_loss", math.inf)  # as BestModel's "loss"

    def on_restart(self, t: Trainer | None) -> None:
        self.best, self.best_loss, self.bad_epochs = -1.0, math.inf, 0


class MetricsLog(Callback):
    """One line per epoch on the log and, when ``run`` is given, one record in
    ``metrics.jsonl``."""

    def __init__(self, run: RunDir | None, log: Log) -> None:
        self.run, self.log = run, log

    def on_epoch_end(self, t: Trainer, record: dict) -> None:
        if self.run is not None:
            self.run.append_metrics(record)
        val = (f" val loss {record['val_loss']:.4f} acc {record['val_top1']:.4f}"
               if "val_top1" in record else "")
        self.log(f"epoch {record['epoch']:>3}/{t.epochs}  train loss "
                 f"{record['train_loss']:.4f} acc {record['train_top1']:.4f}{val}  "
                 f"{record['train_images_per_s']:,.0f} img/s  {record['epoch_time_s']:.1f}s")


    def on_restart(self, t: Trainer) -> None:
        if self.run is not None:
            self.run.truncate_metrics(0)


class Checkpointing(Callback):
    """Writes the full training state to ``path`` after every epoch and, with ``every``,
    every that many steps inside an epoch: the weights, EMA, optimizer, RNG states, the
    trainer's counters and the state of every callback. Place it after the callbacks whose
    state it saves."""

    def __init__(self, path: object, model_meta: dict, every: int = 0) -> None:
        self.path, self.model_meta, self.every = path, model_meta, every

    def save(self, t: Trainer) -> None:
        save_checkpoint(self.path, t.checkpoint({"model_meta": self.model_meta}))

    def on_step_end(self, t: Trainer) -> None:
        if self.every and t.state.step % self.every == 0 and t.state.batch < t.steps_per_epoch:
            self.save(t)

    def on_epoch_end(self, t: Trainer, record: dict) -> None:
        self.save(t)

    def on_restart(self, t: Trainer) -> None:
        self.save(t)  # a resumed run starts over too


class TensorBoard(Callback):
    """Every number of an epoch record as a TensorBoard scalar (``train/loss``, ``val/top1``,
    ...), next to ``metrics.jsonl``."""

    def __init__(self, folder: object) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ConfigError("--tensorboard needs the tensorboard package: "
                              "pip install 'imgcls[tensorboard]'") from e
        self.writer = SummaryWriter(str(folder))

    def on_epoch_end(self, t: Trainer, record: dict) -> None:
        for key, value in record.items():
            if key not in ("epoch", "step"):
                split, _, name = key.partition("_")
                tag = f"{split}/{name}" if split in ("train", "val") else f"misc/{key}"
                self.writer.add_scalar(tag, value, record["epoch"])
        self.writer.flush()

    def on_train_end(self, t: Trainer) -> None:
        self.writer.close()


def margins(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(margin, runner-up) of each row: the logit of the given label minus the largest other
    logit (Pleiss et al. 2020: negative when another class wins), and that other class."""
    given = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], -math.inf)
    best, runner_up = others.max(1)
    return given - best, runner_up


MARGINS_FORMAT = 1


class TrainingMargins(Callback):
    """Every training image's margin (:func:`margins`) at the step that trained on it, one
    row per epoch, and the class that came closest, written to ``path`` after every epoch
    (float16 and int16/int32: 4 bytes per image per epoch). Their mean over the epochs is
    the area under the margin (AUM) by which the audit finds mislabelled images: out-of-sample
    evidence of a sort, since an image whose label is wrong keeps a low margin until the
    network memorises it. It costs one gather and one max over the logits of a step.

    Images are numbered as the training loader numbers them (``last_indices``); one not seen
    in an epoch (a partial epoch, a balanced sampler, another rank's share) is NaN there."""

    key = "margins"

    def __init__(self, images: int, path: str | os.PathLike) -> None:
        self.images, self.path = images, path
        self.on_restart(None)

    def on_restart(self, t: Trainer | None) -> None:
        self.rows: list[torch.Tensor] = []
        self.others: list[torch.Tensor] = []
        self._new_epoch()

    def _new_epoch(self) -> None:
        self.cur = torch.full((self.images,), math.nan, dtype=torch.float16)
        self.cur_other = torch.full((self.images,), -1, dtype=torch.int32)

    def on_step_end(self, t: Trainer) -> None:
        out, idx = t.step_output, getattr(t.train_loader, "last_indices", None)
        if out is None or idx is None or len(idx) != len(out[1]):
            return
        m, other = margins(out[0].float(), out[1])
        idx = idx.cpu()
        self.cur[idx] = m.cpu().clamp(-6e4, 6e4).half()
        self.cur_other[idx] = other.cpu().int()

    def on_epoch_end(self, t: Trainer, record: dict) -> None:
        self.rows.append(self.cur)
        self.others.append(self.cur_other)
        self._new_epoch()
        other = torch.stack(self.others)
        if int(other.max()) < 2**15:  # classes fit in int16
            other = other.short()
        atomic_write_bytes(self.path, safetensors_bytes(
            {"margin": torch.stack(self.rows), "runner_up": other},
            {"images": self.images, "epochs": len(self.rows), "format": MARGINS_FORMAT}))

    def state_dict(self) -> dict:
        return {"epochs": len(self.rows)}

    def load_state_dict(self, state: dict) -> None:
        epochs = int(state.get("epochs", 0))
        if not epochs or not os.path.exists(self.path):
            return
        tensors, meta = read_safetensors(self.path)
        if meta.get("images") == self.images:
            self.rows = list(tensors["margin"][:epochs])
            self.others = list(tensors["runner_up"][:epochs].int())
