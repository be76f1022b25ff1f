"""Learning-rate and resolution schedules as pure functions of the step or the epoch
(nanoGPT's ``get_lr``): nothing to save or restore on resume beyond the counters."""

from __future__ import annotations

import math


def lr_at(
    step: int,
    total_steps: int,
    peak: float,
    *,
    schedule: str = "onecycle",
    warmup_steps: int = 0,
    steps_per_epoch: int = 1,
    step_size: int = 5,
    gamma: float = 0.1,
) -> float:
    """Learning rate for optimisation ``step`` (0-based) of ``total_steps``.

    * ``onecycle``: linear ramp from peak/25 to peak over the first 25% of the steps, then
      linear decay to peak/25000 (Smith & Topin; Page's fast CIFAR ResNet used the same shape).
    * ``cosine``: optional linear warm-up, then cosine decay to 0.
    * ``step``: optional warm-up, then multiply by ``gamma`` every ``step_size`` epochs
      (PyTorch's StepLR, the seed's schedule).
    * ``constant``: optional warm-up, then ``peak``.
    """
    total_steps = max(total_steps, 1)
    if schedule == "onecycle":
        up = max(1, int(0.25 * total_steps))
        if step < up:
            return peak * (0.04 + 0.96 * step / up)
        frac = (step - up) / max(1, total_steps - up)
        return peak * (1.0 - frac * (1 - 4e-5))
    if warmup_steps > 0 and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if schedule == "cosine":
        frac = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return peak * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
    if schedule == "step":
        return peak * gamma ** ((step // max(steps_per_epoch, 1)) // max(step_size, 1))
    if schedule == "constant":
        return peak
    raise ValueError(f"unknown schedule {schedule!r}")


# Progressive resizing ramps the training resolution up to the full size by this share of the
# epochs; the rest train at full size, so the weights and BatchNorm statistics end where they
# are tested.
RAMP_END = 0.75


def progressive_scale(epoch: int, epochs: int, start: float) -> float:
    """Share of the full image size epoch ``epoch`` (0-based) of ``epochs`` trains at: from
    ``start`` at the first epoch, linearly up to 1 at ``RAMP_END`` of the run; 1 when
    ``start`` is 0 or 1 (off)."""
    ramp = max(1, round(RAMP_END * epochs))
    if not 0 < start < 1 or epoch >= ramp:
        return 1.0
    return start + (1 - start) * epoch / ramp
