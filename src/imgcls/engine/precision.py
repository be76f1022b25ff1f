"""Choosing how to run a model: device, arithmetic (fp32 / bf16 / fp16) and memory format.

On a CPU nothing is assumed: bf16 with AMX can be 4x faster than fp32 for training on one
machine and slower on another, and channels_last helps some nets and not others. ``auto``
times a few real training steps of each candidate on a throw-away copy of the model and keeps
the fastest; the answer is cached per machine, torch version, model and input shape.
"""

from __future__ import annotations

import contextlib
import copy
import json
import platform
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..utils import atomic_write_text, cache_dir


@dataclass(frozen=True)
class ExecPlan:
    device: str = "cpu"
    precision: str = "fp32"  # fp32 | bf16 | fp16
    channels_last: bool = False

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision: fp32 master weights and norm statistics, low-precision matmuls."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(self.device).type, dtype=self.dtype)

    def prepare(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def describe(self) -> str:
        return f"{self.device} {self.precision}{' channels_last' if self.channels_last else ''}"


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available here")
    return device


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure_step(model: nn.Module, plan: ExecPlan,
                 example: tuple[torch.Tensor, torch.Tensor], steps: int = 3) -> float:
    """Median seconds of one training step of ``model`` under ``plan`` on ``example``."""
    return _time_steps(model, plan, example[0], example[1], steps)


def _time_steps(model: nn.Module, plan: ExecPlan, x: torch.Tensor, y: torch.Tensor,
                steps: int) -> float:
    """Median seconds of a training step (forward, backward, SGD update) under ``plan``."""
    model = plan.prepare(copy.deepcopy(model)).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = x.to(plan.device)
    if plan.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = y.to(plan.device)
    times = []
    for i in range(steps + 2):
        t = time.perf_counter()
        with plan.autocast():
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if plan.device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= 2:  # the first steps pay for allocation and kernel selection
            times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def choose_plan(
    model: nn.Module,
    example: tuple[torch.Tensor, torch.Tensor],
    *,
    device: str = "auto",
    precision: str = "auto",
    channels_last: str = "auto",
    key: str = "",
    steps: int = 3,
    log: bool = True,
) -> tuple[ExecPlan, dict[str, float]]:
    """Pick the training plan. Returns the plan and the measured seconds per step of each
    candidate (empty when nothing was measured)."""
    device = resolve_device(device)
    cl = {"yes": True, "no": False}.get(channels_last)
    if device.startswith("cuda"):
        if precision == "auto":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return ExecPlan(device, precision, True if cl is None else cl), {}
    if precision == "fp16":
        raise ValueError("fp16 is for CUDA; on a CPU use bf16 or fp32")
    candidates = [
        ExecPlan(device, p, c)
        for p in (["fp32", "bf16"] if precision == "auto" else [precision])
        for c in ([False, True] if cl is None else [cl])
        # bf16 without channels_last falls into slow reorder paths on oneDNN; not worth timing
        if not (p == "bf16" and not c and cl is None)
    ]
    if len(candidates) == 1:
        return candidates[0], {}
    x, y = example
    cache_key = "|".join([cpu_name(), torch.__version__, str(torch.get_num_threads()), key,
                          str(tuple(x.shape)), "train"])
    cache_file = cache_dir() / "autotune.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    timings = cache.get(cache_key)
    if not timings or any(plan_name(c) not in timings for c in candidates):
        timings = {plan_name(c): _time_steps(model, c, x, y, steps) for c in candidates}
        cache[cache_key] = timings
        atomic_write_text(cache_file, json.dumps(cache, indent=1))
    best = min(candidates, key=lambda c: timings[plan_name(c)])
    return best, {plan_name(c): timings[plan_name(c)] for c in candidates}


def plan_name(plan: ExecPlan) -> str:
    """Short name of a plan, as in the timings: fp32, fp32+cl, bf16+cl."""
    return f"{plan.precision}{'+cl' if plan.channels_last else ''}"


def plan_to_dict(plan: ExecPlan) -> dict:
    return asdict(plan)
