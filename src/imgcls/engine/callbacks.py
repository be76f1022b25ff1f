"""The jobs that hang off the training loop, one small callback each (Lightning's Callback
idea without its machinery): the last checkpoint, the best model, early stopping, the
metrics log and TensorBoard. Each keeps its own state, which the checkpoint holds."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .checkpoint import save_checkpoint
from .trainer import Callback, Trainer

if TYPE_CHECKING:
    from ..run import RunDir

Log = Callable[[str], None]


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
