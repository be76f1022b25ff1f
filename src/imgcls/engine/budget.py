"""``--budget``: the number of epochs (or the part of one epoch) that fits in a time budget,
first estimated from a few timed steps, then re-planned from the run's own pace."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..distributed import DistInfo, broadcast
from .trainer import Callback, Trainer

PROBE_STEPS = 10  # steps timed before a less-than-one-epoch budget is re-planned


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


class Budget(Callback):
    """Re-plans a budgeted run as it goes (the start-up estimate from a few bare steps cannot
    see data, augmentation, validation and writes, and a machine's speed varies). The time
    already spent and the epochs' times are its state, so a resumed run goes on with the
    time it has left (time while it was not running does not count)."""

    key = "budget"

    def __init__(self, budget_s: float, label: str, log: Callable[[str], None], *,
                 partial_epochs: bool = False, max_epochs: int | None = None,
                 ddp: DistInfo | None = None) -> None:
        self.budget_s, self.label, self.log, self.ddp = budget_s, label, log, ddp or DistInfo()
        self.partial = partial_epochs  # epochs over part of the training set
        self.max_epochs = max_epochs  # a time cap on a planned run: never more than planned
        # the first epoch is timed from here, after the one-time work the budget counts
        # (a teacher's labelling pass)
        self.start = self.epoch_end = time.perf_counter()
        self.epoch_times: list[float] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def on_train_start(self, t: Trainer) -> None:
        self.epoch_end = time.perf_counter()

    def on_step_end(self, t: Trainer) -> None:
        if self.partial and t.state.step == PROBE_STEPS < t.steps_per_epoch:
            self.replan_fraction(t)

    def on_epoch_end(self, t: Trainer, record: dict) -> None:
        # a planned single epoch over part of the data cannot grow (its batches were drawn);
        # a single full epoch is re-planned too, the schedule stretching over those added
        if not (t.epochs == 1 and self.partial):
            self.replan_epochs(t)

    def replan_fraction(self, t: Trainer) -> None:
        """A budget that buys less than one epoch: after the first steps, shorten the epoch
        to what their measured time leaves room for (the start-up estimate from bare steps,
        perhaps cached on a faster day, can be far off for heavy models). Only shortens:
        the epoch's batches are already drawn."""
        now = time.perf_counter()
        per_step = (now - self.epoch_end) / t.state.step  # not a teacher's pass before it
        left = self.budget_s - (now - self.start)
        val_s = (len(t.val_loader) if t.val_loader is not None else 0) * per_step / 3
        fit = t.state.step + max(0, int((left - val_s) / (1.05 * per_step)))
        steps = broadcast(min(t.steps_per_epoch, fit), self.ddp)
        if steps < t.steps_per_epoch:
            self.log(f"{self.label}: {per_step:.2f}s per step; the epoch is cut "
                     f"to {steps} of its {t.steps_per_epoch} planned steps")
            t.set_steps_per_epoch(steps)

    def replan_epochs(self, t: Trainer) -> None:
        """After each epoch, fit the number of epochs to the time left. The first two epochs
        set it from their own time (the second drops the first epoch's one-time costs);
        later epochs from the mean pace of the latest epochs (at least three, spanning a
        tenth of the budget, so the noise of short epochs averages out): shrunk as soon as
        the plan would overrun, grown when more than 3% more epochs fit, so a machine that
        slows down mid-run still ends in time, one that speeds up uses the time, and the
        schedule is not nudged every epoch."""
        now = time.perf_counter()
        self.epoch_times.append(now - self.epoch_end)
        self.epoch_end = now
        budget, done = self.budget_s, t.state.epoch
        window: list[float] = []
        for seconds in reversed(self.epoch_times[1:] if done > 2 else self.epoch_times[-1:]):
            window.append(seconds)
            if len(window) >= 3 and sum(window) >= 0.1 * budget:
                break
        pace = sum(window) / len(window)
        left = budget - (now - self.start)
        fit, planned = max(done, done + int(left / (1.05 * pace))), t.epochs
        overrun = (planned - done) * pace > left
        spare = fit > planned + max(1, 0.03 * planned)
        if self.max_epochs:
            fit = min(fit, self.max_epochs)
        epochs = broadcast(fit if done <= 2 or overrun or spare else planned, self.ddp)
        if epochs != t.epochs:
            self.log(f"{self.label}: {pace:.1f}s per epoch; {epochs} epochs "
                     f"instead of {t.epochs}")
            t.set_epochs(epochs)

    def state_dict(self) -> dict:
        return {"elapsed_s": self.elapsed(), "epoch_times": self.epoch_times}

    def load_state_dict(self, state: dict) -> None:
        self.start = time.perf_counter() - state["elapsed_s"]
        self.epoch_times = list(state["epoch_times"])
