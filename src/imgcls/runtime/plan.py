"""Choosing how to run a model: device, arithmetic (fp32 / bf16 / fp16) and memory format.

On a CPU nothing is assumed: bf16 may be much faster than fp32 on one machine and slower on
another, and channels_last helps some nets and not others. ``auto`` times each candidate
on a scratch copy of the model and keeps the fastest: a few real training steps for the
training plan (:func:`choose_plan`), forward passes for the served model
(:func:`choose_inference_plan`); the answer is cached per machine, torch version, model
and input shape. Evaluation and prediction run under the fixed :func:`eval_plan`.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import functools
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..utils import atomic_write_text, cache_dir


@dataclass(frozen=True)
class ExecPlan:
    device: str = "cpu"
    precision: str = "fp32"  # fp32 | bf16 | fp16
    channels_last: bool = False
    compile: bool = False  # torch.compile (inference only)

    @property
    def placement(self) -> dict:
        """Where input batches go: ``device`` and ``channels_last`` keywords of a loader."""
        return {"device": self.device, "channels_last": self.channels_last}

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

    def prepare_inference(self, model: nn.Module) -> nn.Module:
        model = self.prepare(model).eval()
        return torch.compile(model, dynamic=False) if self.compile else model

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def describe(self) -> str:
        return (f"{self.device} {self.precision}{' channels_last' if self.channels_last else ''}"
                f"{' compiled' if self.compile else ''}")

    def explain(self, timings: dict[str, float], precision: str = "auto") -> str:
        """The plan as a run's log gives it: each candidate's measured time per step, this
        plan, and, when ``auto`` left bf16 out on a CPU without bf16 instructions, why."""
        measured = ", ".join(f"{k} {1000 * v:.0f} ms/step" for k, v in timings.items())
        native, why = native_bf16()
        note = f" ({why})" if precision == "auto" and self.device == "cpu" and not native else ""
        return f"{measured + ' -> ' if measured else ''}{self.describe()}{note}"


def eval_plan(device: str) -> ExecPlan:
    """How evaluation runs (the end-of-training test, ``imgcls eval``, ``predict``, the Python
    API): fp32, so every one of them reports the weights' own numbers, in channels_last, the
    memory format in which convnets run faster than in NCHW at the same arithmetic."""
    return ExecPlan(device, "fp32", channels_last=True)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available here")
    return device


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


@functools.cache
def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of giving it back to the OS.

    glibc serves large blocks (above an adaptive threshold of up to 32 MiB) with a fresh
    mmap and unmaps them when freed, so every training step of a CNN on batches of small
    images would fault in and zero its activations anew, its time going to the kernel. With
    no mmap and a 1 GiB trim threshold the heap keeps those pages for the next step
    (``benchmarks/malloc.py`` measures the difference). The price is that the process holds
    on to its peak memory. Process-wide, once; ``IMGCLS_MALLOC=system`` leaves malloc as it
    is. Returns whether the setting is in force (False off glibc)."""
    if os.environ.get("IMGCLS_MALLOC") == "system" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# what keeps torch's CPU kernels below what the CPU has (the AVX2 stand-in sets all three)
_KERNEL_LIMITS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def kernels() -> str:
    """The CPU kernels torch uses here: its capability (AVX512, AVX2, ...) and any limit set
    on oneDNN's or MKL's instruction set. Timings measured under one do not hold for another
    on the same CPU."""
    limits = [f"{k}={os.environ[k]}" for k in _KERNEL_LIMITS if os.environ.get(k)]
    return ",".join([torch.backends.cpu.get_cpu_capability(), *limits])


def measure_step(model: nn.Module, plan: ExecPlan,
                 example: tuple[torch.Tensor, torch.Tensor], steps: int = 3) -> float:
    """Median seconds of one training step of ``model`` under ``plan`` on ``example``."""
    return _time_steps(model, plan, example[0], example[1], steps)


# A candidate whose warm-up steps alone take longer is not timed further: its last step's
# time is its figure (it loses to any plan that trains at a usable pace).
TRIAL_LIMIT_S = 2.0


def _time_steps(model: nn.Module, plan: ExecPlan, x: torch.Tensor, y: torch.Tensor,
                steps: int) -> float:
    """Median seconds of a training step (forward, backward, SGD update) under ``plan``.
    The global RNG is left as it was (dropout draws from it): a run must not depend on
    whether its timings were measured or came from the cache, or --seed would not repeat it."""
    model = plan.prepare(copy.deepcopy(model)).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = x.to(plan.device)
    if plan.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = y.to(plan.device)
    times = []
    cuda = plan.device.startswith("cuda")
    with torch.random.fork_rng(devices=[plan.device] if cuda else []):
        start = time.perf_counter()
        for i in range(steps + 2):
            t = time.perf_counter()
            with plan.autocast():
                loss = F.cross_entropy(model(x).float(), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if cuda:
                torch.cuda.synchronize()
            if i >= 2:  # the first steps pay for allocation and kernel selection
                times.append(time.perf_counter() - t)
            elif time.perf_counter() - start > TRIAL_LIMIT_S:  # hopeless: that step's time
                return time.perf_counter() - t
    return sorted(times)[len(times) // 2]


def _cached_timings(kind: str, key: str, model: nn.Module, shape: tuple,
                    candidates: list[ExecPlan],
                    measure: Callable[[ExecPlan], float]) -> dict[str, float]:
    """Seconds per step of every candidate, measured once per machine and its :func:`kernels`,
    torch version, thread count, model (its name and its layers: a changed default of a
    builder is another model) and input shape and kept in ``<cache>/autotune.json``."""
    layers = hashlib.sha1(repr(model).encode()).hexdigest()[:12]
    cache_key = "|".join([cpu_name(), kernels(), torch.__version__,
                          str(torch.get_num_threads()), key, layers, str(shape), kind])
    cache_file = cache_dir() / "autotune.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    timings = cache.get(cache_key) or {}
    missing = [c for c in candidates if plan_name(c) not in timings]
    if missing:
        timings.update({plan_name(c): measure(c) for c in missing})
        cache[cache_key] = timings
        atomic_write_text(cache_file, json.dumps(cache, indent=1))
    return {plan_name(c): timings[plan_name(c)] for c in candidates}


def _onednn_bf16() -> bool:
    return bool(torch.backends.mkldnn.is_available()
                and torch.ops.mkldnn._is_mkldnn_bf16_supported())


@functools.lru_cache(maxsize=1)
def native_bf16() -> tuple[bool, str]:
    """Whether this CPU computes in bf16 with instructions of its own, and the reason: the
    ``avx512_bf16``/``amx_bf16`` (x86) or ``bf16`` (Arm) flags of /proc/cpuinfo, where
    oneDNN may use them; without that file, whether oneDNN has bf16 kernels. Without them
    torch emulates bf16 at a small fraction of fp32's speed."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags.update(line.split(":", 1)[1].split())
    except OSError:
        pass
    if not flags:
        ok = _onednn_bf16()
        return ok, f"oneDNN {'has' if ok else 'lacks'} bf16 kernels for this CPU"
    found = sorted(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    if found and not _onednn_bf16():
        # the instructions are there but kept from torch (ONEDNN_MAX_CPU_ISA=AVX2, say)
        return False, (f"the CPU has {', '.join(found)}, but torch's kernels are limited to "
                       f"{torch.backends.cpu.get_cpu_capability()}: bf16 not tried")
    if found:
        return True, f"the CPU has {', '.join(found)}"
    return False, "the CPU has no bf16 instructions (avx512_bf16, amx_bf16): bf16 not tried"


def _cpu_candidates(device: str, precision: str, channels_last: str,
                    compile_: str = "no") -> list[ExecPlan]:
    if precision == "fp16":
        raise ValueError("fp16 is for CUDA; on a CPU use bf16 or fp32")
    cl = {"yes": True, "no": False}.get(channels_last)
    auto = ["fp32", "bf16"] if native_bf16()[0] else ["fp32"]
    return [
        ExecPlan(device, p, c, k)
        for p in (auto if precision == "auto" else [precision])
        for c in ([False, True] if cl is None else [cl])
        # bf16 without channels_last falls into slow reorder paths on oneDNN; not worth timing
        if not (p == "bf16" and not c and cl is None)
        for k in ([False, True] if compile_ == "auto" else [compile_ == "yes"])
    ]


def _cuda_plan(device: str, precision: str, channels_last: str, compile_: bool) -> ExecPlan:
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return ExecPlan(device, precision, channels_last != "no", compile_)


def choose_plan(
    model: nn.Module,
    example: tuple[torch.Tensor, torch.Tensor],
    *,
    device: str = "auto",
    precision: str = "auto",
    channels_last: str = "auto",
    key: str = "",
    steps: int = 3,
) -> tuple[ExecPlan, dict[str, float]]:
    """Pick the training plan (never compiled: torch.compile trains slower than eager mode
    on a CPU, ``benchmarks/README.md``). Returns the plan and the measured seconds per step
    of each candidate (empty when nothing was measured)."""
    device = resolve_device(device)
    if device.startswith("cuda"):
        return _cuda_plan(device, precision, channels_last, False), {}
    keep_freed_memory()
    candidates = _cpu_candidates(device, precision, channels_last)
    if len(candidates) == 1:
        return candidates[0], {}
    x, y = example
    timings = _cached_timings("train", key, model, tuple(x.shape), candidates,
                              lambda c: _time_steps(model, c, x, y, steps))
    return min(candidates, key=lambda c: timings[plan_name(c)]), timings


def _time_inference(model: nn.Module, plan: ExecPlan, x: torch.Tensor, steps: int) -> float:
    m = plan.prepare_inference(copy.deepcopy(model))
    x = plan.prepare_input(x)
    times = []
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(steps + 2):  # the first calls compile and pick kernels
            t = time.perf_counter()
            with plan.autocast():
                m(x)
            if plan.device.startswith("cuda"):
                torch.cuda.synchronize()
            if i >= 2:
                times.append(time.perf_counter() - t)
            elif not plan.compile and time.perf_counter() - start > TRIAL_LIMIT_S:
                return time.perf_counter() - t  # hopeless (compiling may take longer)
    return sorted(times)[len(times) // 2]


def choose_inference_plan(
    model: nn.Module,
    example: torch.Tensor,
    *,
    device: str = "auto",
    precision: str = "auto",
    channels_last: str = "auto",
    compile: str = "no",  # noqa: A002 - the user-facing option's name
    key: str = "",
    steps: int = 5,
) -> tuple[ExecPlan, dict[str, float]]:
    """Pick the inference plan for batches shaped like ``example``: fp32 / bf16, memory
    format and (with ``compile='auto'``) torch.compile, by measurement, cached."""
    device = resolve_device(device)
    if device.startswith("cuda"):
        return _cuda_plan(device, precision, channels_last, compile == "yes"), {}
    keep_freed_memory()
    candidates = _cpu_candidates(device, precision, channels_last, compile)
    if len(candidates) == 1:
        return candidates[0], {}
    timings = _cached_timings("infer", key, model, tuple(example.shape), candidates,
                              lambda c: _time_inference(model, c, example, steps))
    return min(candidates, key=lambda c: timings[plan_name(c)]), timings


def plan_name(plan: ExecPlan) -> str:
    """Short name of a plan, as in the timings: fp32, fp32+cl, bf16+cl, bf16+cl+compile."""
    return (f"{plan.precision}{'+cl' if plan.channels_last else ''}"
            f"{'+compile' if plan.compile else ''}")
