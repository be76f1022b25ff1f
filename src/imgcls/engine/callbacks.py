"""The jobs that hang off the training loop, one small callback each (Lightning's Callback
idea without its machinery): the last checkpoint, the best model, early stopping, the
metrics log and TensorBoard. Each keeps its own state, which the checkpoint holds."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..utils import Log
from .checkpoint import save_checkpoint
from .trainer import Callback, Trainer

if TYPE_CHECKING:
    from ..run import RunDir


class BestModel(Callback):
    """Saves the model file (the EMA weights when there are some) whenever the validation
    top-1 improves; without validation, after every epoch."""

    key = "best_model"

    def __init__(self, save: Callable[[Trainer], None]) -> None:
        self.save = save
        self.top1, self.epoch = -1.0, 0  # best val top-1 and its 1-based epoch (0: none yet)

    def on_epoch_end(self, t: Trainer, record: dict) -> None:
        score = record.get("val_top1")
        if score is None or score > self.top1:
            self.top1, self.epoch = score or 0.0, t.state.epoch
            self.save(t)

    def state_dict(self) -> dict:
        return {"top1": self.top1, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.top1, self.epoch = state["top1"], state["epoch"]

    def on_restart(self, t: Trainer) -> None:
        self.top1, self.epoch = -1.0, 0


class LearningCheck(Callback):
    """After ``after`` epochs (by then the learning rate has risen to its peak), a run whose
    training accuracy is still at the largest class's share, or whose loss is still at chance
    level (ln of the number of classes), is not learning: it says so and, when ``restarts``
    are left, starts over at a tenth of the learning rate (the usual cause is a rate too high
    for the model)."""

    def __init__(self, majority_share: float, classes: int, log: Log, *, after: int = 3,
                 restarts: int = 2) -> None:
        self.majority, self.chance_loss = majority_share, math.log(classes)
        self.log, self.after, self.restarts = log, after, restarts

    def on_epoch_end(self, t: Trainer, record: dict) -> None:
        if record["epoch"] != self.after:
            return
        acc, loss = record["train_top1"], record["train_loss"]
        if acc > self.majority + 0.02 and loss < 0.97 * self.chance_loss:
            return
        why = (f"after {self.after} epochs, training accuracy {acc:.3f} (the largest class is "
               f"{self.majority:.3f} of the images) and loss {loss:.3f} (chance: "
               f"{self.chance_loss:.3f}): the model is not learning, most likely a learning "
               "rate too high for it (or labels unrelated to the images)")
        if t.state.restarts < self.restarts:
            self.log(f"warning: {why}; starting over at a tenth of the learning rate")
            t.request_restart(0.1)
        else:
            self.log(f"warning: {why}; try a lower --lr or another --model")


class EarlyStopping(Callback):
    """Stops after ``patience`` epochs without a better validation top-1."""

    key = "early_stopping"

    def __init__(self, patience: int, log: Log) -> None:
        self.patience, self.log = patience, log
        self.best, self.bad_epochs = -1.0, 0

    def on_epoch_end(self, t: Trainer, record: dict) -> None:
        score = record.get("val_top1")
        if score is None or score > self.best:
            self.best, self.bad_epochs = score or 0.0, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            t.state.stop = True
            self.log(f"early stop: no better val accuracy for {self.bad_epochs} epochs")

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_epochs = state["best"], state["bad_epochs"]

    def on_restart(self, t: Trainer) -> None:
        self.best, self.bad_epochs = -1.0, 0


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
