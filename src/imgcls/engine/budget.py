"""``--budget``: the number of epochs (or the part of one epoch) that fits in a time budget,
first estimated from a few timed steps, then re-planned from the run's own pace."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..distributed import DistInfo, broadcast
from .schedules import progressive_scale
from .trainer import Callback, Trainer

PROBE_STEPS = 10  # steps timed before a less-than-one-epoch budget is re-planned
# The passes after training, when the budget covers them, take longer per image than the
# validation pass they are estimated from (fp32 where training may run bf16, the model loaded
# again, the temperature fitted): half again as long is kept for them.
FINAL_MARGIN = 1.5


def final_reserve(images: int, per_image_s: float) -> float:
    """Seconds kept for the passes after training over ``images`` images, classified at
    ``per_image_s`` each when validating."""
    return FINAL_MARGIN * images * per_image_s


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


def _cost(t: Trainer, epoch: int, epochs: int) -> float:
    """Time of epoch ``epoch`` of a run of ``epochs`` relative to a full-size epoch."""
    return progressive_scale(epoch, epochs, t.loop.progressive_resize) ** 2


class Budget(Callback):
    """Re-plans a budgeted run as it goes (the start-up estimate from a few bare steps cannot
    see data, augmentation, validation and writes, and a machine's speed varies). The time
    already spent and the epochs' times are its state, so a resumed run goes on with the
    time it has left (time while it was not running does not count).

    The budget covers the epochs from the callback's creation on; given ``start`` (the
    ``time.perf_counter()`` at which the run began) and ``final_images`` (the images that
    the passes after training will classify), it covers the whole run: what was spent before
    training, and the final passes, estimated from the measured validation pace."""

    key = "budget"

    def __init__(self, budget_s: float, label: str, log: Callable[[str], None], *,
                 partial_epochs: bool = False, max_epochs: int | None = None,
                 ddp: DistInfo | None = None, start: float | None = None,
                 final_images: int = 0) -> None:
        self.budget_s, self.label, self.log, self.ddp = budget_s, label, log, ddp or DistInfo()
        self.partial = partial_epochs  # epochs over part of the training set
        self.max_epochs = max_epochs  # a time cap on a planned run: never more than planned
        self.final_images = final_images
        # the first epoch is timed from here, after the one-time work the budget counts
        # (a teacher's labelling pass)
        self.epoch_end = self.step_end = time.perf_counter()
        self.start = self.epoch_end if start is None else start
        self.epoch_times: list[float] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def on_train_start(self, t: Trainer) -> None:
        self.epoch_end = time.perf_counter()

    def on_step_end(self, t: Trainer) -> None:
        self.step_end = time.perf_counter()  # after the epoch's last one, validation starts
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
        left -= final_reserve(self.final_images, per_step / t.train_loader.batch_size / 3)
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
        # epoch times in full-size epochs: with progressive resizing an epoch at scale s
        # costs about s^2 of one at the full size
        self.epoch_times.append((now - self.epoch_end) / _cost(t, t.state.epoch - 1, t.epochs))
        # the final passes at this epoch's validation pace (without one: a third of a
        # training step per image)
        per_image = ((now - self.step_end) / t.val_loader.n if t.val_loader is not None else
                     (self.step_end - self.epoch_end)
                     / (t.steps_per_epoch * t.train_loader.batch_size) / 3)
        self.epoch_end = now
        budget, done = self.budget_s, t.state.epoch
        window: list[float] = []
        for seconds in reversed(self.epoch_times[1:] if done > 2 else self.epoch_times[-1:]):
            window.append(seconds)
            if len(window) >= 3 and sum(window) >= 0.1 * budget:
                break
        pace = sum(window) / len(window)
        left = budget - (now - self.start) - final_reserve(self.final_images, per_image)

        def time_left(epochs: int) -> float:  # the epochs after ``done`` of a run of ``epochs``
            return pace * sum(_cost(t, e, epochs) for e in range(done, epochs))

        # the most epochs whose rest fits (bisection: a longer run costs more), at most as
        # many as fit at the cheapest epoch's cost, the first one's
        cheapest = _cost(t, 0, t.epochs)
        fit, high, planned = done, done + int(left / (1.05 * pace * cheapest)) + 1, t.epochs
        while fit < high:
            mid = (fit + high + 1) // 2
            fit, high = (mid, high) if 1.05 * time_left(mid) <= left else (fit, mid - 1)
        overrun = time_left(planned) > left
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
