"""``imgcls bench``: how close training and inference come to this machine's limits.

Training: images/s of real optimisation steps (the fast data path with augmentation, the
automatically chosen plan) and the achieved GFLOP/s (3 x forward FLOPs per image x images/s)
next to the fp32 and (where the CPU has bf16 instructions) bf16 GEMM peaks, measured in turns
with the training steps. Inference:
latency at batch 1 and throughput at batch 64 for eager fp32, the automatically chosen plan
and ONNX Runtime, also measured in turns. On a shared machine whose speed drifts, only figures
measured side by side can be compared.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from .data.augment import preset
from .data.dataset import ArrayDataset
from .data.loader import BatchLoader
from .engine.trainer import OptimSettings, make_optimizer
from .models import create_model
from .models.table import count_flops
from .runtime.plan import (
    ExecPlan,
    choose_inference_plan,
    choose_plan,
    native_bf16,
    plan_name,
)
from .utils import former_shape_keywords

Runner = Callable[[torch.Tensor], object]  # one inference call on a batch


def _median(times: list[float]) -> float:
    return sorted(times)[len(times) // 2]


def _gemm_seconds(a: torch.Tensor, b: torch.Tensor) -> float:
    t = time.perf_counter()
    a @ b
    return time.perf_counter() - t


def _train_rate(model: torch.nn.Module, plan: ExecPlan, channels: int, size: int, batch: int,
                steps: int, num_classes: int, n: int = 2048, block: int = 5
                ) -> tuple[float, dict[str, float]]:
    """Images/s of full training steps (data path and augmentation included) and the GEMM
    peaks (GFLOP/s of an n x n matmul in fp32 and bf16), measured in turns, two matmuls of
    each before every ``block`` steps, so the share of the peak is not skewed by a machine
    whose speed drifts (a shared CPU's peak can move several-fold within minutes). The
    first step after the matmuls (caches refilled) and the first block are not timed."""
    g = torch.Generator().manual_seed(0)
    rounds = max(1, steps // block) + 1
    total = batch * block * rounds
    ds = ArrayDataset(torch.randint(0, 256, (total, channels, size, size), dtype=torch.uint8,
                                    generator=g),
                      torch.randint(0, num_classes, (total,), generator=g), [""] * num_classes)
    loader = BatchLoader(ds, batch, mean=[0.5] * channels, std=[0.25] * channels,
                         augment=preset("light", size), shuffle=True, drop_last=True,
                         channels_last=plan.channels_last, device=plan.device)
    model = plan.prepare(model).train()
    opt = make_optimizer(model, OptimSettings())
    # bf16's peak only where the CPU has bf16 instructions: emulated (0.9 GFLOP/s on an AVX2
    # CPU) one 2048^2 matmul would take about 20 s, and no plan uses bf16 there
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    if plan.device == "cpu" and not native_bf16()[0]:
        del dtypes["bf16"]
    mats = {k: (torch.randn(n, n).to(dt), torch.randn(n, n).to(dt)) for k, dt in dtypes.items()}
    step_s: list[float] = []
    gemm_s: dict[str, list] = {k: [] for k in mats}
    batches = iter(loader)
    for r in range(rounds):
        for k, (a, b) in mats.items():
            gemm_s[k] += [_gemm_seconds(a, b) for _ in range(2)]
        for i in range(block):
            t = time.perf_counter()
            x, y = next(batches)
            with plan.autocast():
                loss = F.cross_entropy(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if r and i:
                step_s.append(time.perf_counter() - t)
    peaks = {k: 2 * n**3 / _median(v) / 1e9 for k, v in gemm_s.items()}
    return batch / _median(step_s), peaks


def _infer_times(runners: dict[str, Runner], x1: torch.Tensor, x64: torch.Tensor,
                 repeats: int) -> dict[str, dict]:
    """Latency at batch 1 and throughput at batch 64 of every runner. The runners take turns
    in short blocks, so that a machine whose speed drifts (a shared CPU) slows them all alike
    and their ratios hold (measured one after another, they would not); each block's first
    call is not timed, since the previous runtime's threads may
    still be spinning (OpenMP and ONNX Runtime both busy-wait a while after a call)."""
    for fn in runners.values():  # warm-up: compilation, kernel selection
        for x in (x1, x1, x64, x64):
            fn(x)
    times: dict[tuple[str, int], list] = {(k, len(x)): [] for k in runners for x in (x1, x64)}
    for x, block in ((x1, 5), (x64, 3)):
        for _ in range(max(2, repeats // block)):
            for k, fn in runners.items():
                fn(x)
                for _ in range(block):
                    t = time.perf_counter()
                    fn(x)
                    times[k, len(x)].append(time.perf_counter() - t)
    return {k: {"latency_ms": 1000 * _median(times[k, len(x1)]),
                "throughput": len(x64) / _median(times[k, len(x64)])} for k in runners}


def _torch_runner(model: torch.nn.Module, plan: ExecPlan) -> Runner:
    m = plan.prepare_inference(model)

    @torch.inference_mode()
    def run(x: torch.Tensor) -> torch.Tensor:
        with plan.autocast():
            return m(plan.prepare_input(x))

    return run


def _onnx_runner(model: torch.nn.Module, x: torch.Tensor, folder: Path) -> Runner:
    import onnxruntime as ort

    path = folder / "bench.onnx"
    torch.onnx.export(model.eval(), (x,), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=18,
                      dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda t: sess.run(None, {"x": t.numpy()})


def bench(model_name: str = "fastnet_s", *, image_size: int = 28, channels: int = 1,
          num_classes: int = 10, batch_size: int = 256, steps: int = 20, compile: str = "auto",  # noqa: A002
          onnx: bool = True, repeats: int = 20, log: Callable[[str], object] = print,
          **former: int) -> dict:
    """Measure one model; returns a dict of every figure (see the module docstring). The
    former keywords ``input_size``, ``in_chans`` and ``batch`` are accepted, with a
    DeprecationWarning."""
    image_size, channels, batch = former_shape_keywords(former, "bench", image_size, channels,
                                                        batch_size)

    def build() -> torch.nn.Module:
        torch.manual_seed(0)
        return create_model(model_name, num_classes=num_classes, channels=channels,
                            image_size=image_size)

    model = build()
    shape = (channels, image_size, image_size)
    flops = count_flops(model.eval(), torch.randn(1, *shape))
    example = (torch.randn(batch, *shape), torch.randint(0, num_classes, (batch,)))
    plan, timings = choose_plan(build(), example, key=model_name)
    rate, peaks = _train_rate(build(), plan, channels, image_size, batch, steps, num_classes)
    log("GEMM peak (in turns with the training steps): "
        + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items())
        + ("" if "bf16" in peaks else f" (bf16 not measured: {native_bf16()[1]})"))
    achieved = 3 * flops * rate / 1e9
    peak = peaks.get(plan.precision, peaks["fp32"])
    log(f"training ({plan_name(plan)}, batch {batch}): {rate:,.0f} img/s, "
        f"{achieved:.0f} GFLOP/s = {100 * achieved / peak:.0f}% of the {plan.precision} "
        "GEMM peak")
    x1, x64 = torch.randn(1, *shape), torch.randn(64, *shape)
    iplan, itimings = choose_inference_plan(build(), x64, compile=compile,
                                            key=model_name)
    auto = f"auto ({plan_name(iplan)})"
    runners = {"eager fp32": _torch_runner(build(), ExecPlan()),
               auto: _torch_runner(build(), iplan)}
    with tempfile.TemporaryDirectory() as d:
        if onnx:
            runners["onnxruntime fp32"] = _onnx_runner(build(), x1, Path(d))
        results = _infer_times(runners, x1, x64, repeats)
    for k, v in results.items():
        log(f"inference {k}: {v['latency_ms']:.2f} ms at batch 1, "
            f"{v['throughput']:,.0f} img/s at batch 64")
    eager = results["eager fp32"]["throughput"]
    return {"model": model_name, "input": list(shape), "flops_per_image": flops,
            "gemm_peak_gflops": peaks, "train_plan": plan_name(plan),
            "train_plan_s_per_step": timings, "train_images_per_s": rate,
            "train_gflops": achieved, "train_fraction_of_peak": achieved / peak,
            "inference": results, "inference_plan_s_per_batch": itimings,
            "auto_vs_eager_throughput": results[auto]["throughput"] / eager}
