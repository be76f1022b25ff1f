"""``imgcls bench``: how close training and inference come to this machine's limits.

Training: images/s of real optimisation steps (the fast data path with augmentation, the
automatically chosen plan) and the achieved GFLOP/s (3 x forward FLOPs per image x images/s)
next to the measured fp32 and bf16 GEMM peaks. Inference: latency at batch 1 and throughput
at batch 64 for eager fp32, the automatically chosen plan and ONNX Runtime.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from .config import TrainConfig
from .data.augment import preset
from .data.dataset import ArrayDataset
from .data.loader import BatchLoader
from .engine.precision import ExecPlan, choose_inference_plan, choose_plan, plan_name
from .engine.trainer import make_optimizer
from .models import create_model
from .models.table import count_flops


def _median(times: list[float]) -> float:
    return sorted(times)[len(times) // 2]


def gemm_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n x n matmul in ``dtype`` (median of ``repeats``)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    times = []
    for i in range(repeats + 1):
        t = time.perf_counter()
        a @ b
        if i:
            times.append(time.perf_counter() - t)
    return 2 * n**3 / _median(times) / 1e9


def _train_rate(model: torch.nn.Module, plan: ExecPlan, in_chans: int, size: int, batch: int,
                steps: int, num_classes: int) -> float:
    """Images/s of ``steps`` full training steps, data path and augmentation included."""
    n = batch * (steps + 2)
    g = torch.Generator().manual_seed(0)
    ds = ArrayDataset(torch.randint(0, 256, (n, in_chans, size, size), dtype=torch.uint8,
                                    generator=g),
                      torch.randint(0, num_classes, (n,), generator=g), [""] * num_classes)
    loader = BatchLoader(ds, batch, mean=[0.5] * in_chans, std=[0.25] * in_chans,
                         augment=preset("light", size), shuffle=True, drop_last=True,
                         channels_last=plan.channels_last, device=plan.device)
    model = plan.prepare(model).train()
    opt = make_optimizer(model, TrainConfig())
    t0 = 0.0
    for i, (x, y) in enumerate(loader):
        if i == 2:  # after warm-up
            t0 = time.perf_counter()
        with plan.autocast():
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return batch * steps / (time.perf_counter() - t0)


def _infer_times(fn: object, x1: torch.Tensor, x64: torch.Tensor, repeats: int) -> dict:
    lat, thr = [], []
    for i in range(repeats + 2):
        t = time.perf_counter()
        fn(x1)
        if i >= 2:
            lat.append(time.perf_counter() - t)
    for i in range(max(3, repeats // 4) + 1):
        t = time.perf_counter()
        fn(x64)
        if i:
            thr.append(time.perf_counter() - t)
    return {"latency_ms": 1000 * _median(lat), "throughput": len(x64) / _median(thr)}


def _torch_runner(model: torch.nn.Module, plan: ExecPlan) -> object:
    m = plan.prepare_inference(model)

    @torch.inference_mode()
    def run(x: torch.Tensor) -> torch.Tensor:
        with plan.autocast():
            return m(plan.prepare_input(x))

    return run


def _onnx_runner(model: torch.nn.Module, x: torch.Tensor, folder: Path) -> object:
    import onnxruntime as ort

    path = folder / "bench.onnx"
    torch.onnx.export(model.eval(), (x,), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=18,
                      dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda t: sess.run(None, {"x": t.numpy()})


def bench(model_name: str = "fastnet_s", *, input_size: int = 28, in_chans: int = 1,
          num_classes: int = 10, batch: int = 256, steps: int = 20, compile: str = "auto",  # noqa: A002
          onnx: bool = True, repeats: int = 20, log: Callable[[str], object] = print) -> dict:
    """Measure one model; returns a dict of every figure (see the module docstring)."""
    def build() -> torch.nn.Module:
        torch.manual_seed(0)
        return create_model(model_name, num_classes=num_classes, in_chans=in_chans,
                            input_size=input_size)

    model = build()
    shape = (in_chans, input_size, input_size)
    flops = count_flops(model.eval(), torch.randn(1, *shape))
    peaks = {"fp32": gemm_peak(torch.float32), "bf16": gemm_peak(torch.bfloat16)}
    log(f"GEMM peak: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
    example = (torch.randn(batch, *shape), torch.randint(0, num_classes, (batch,)))
    plan, timings = choose_plan(build(), example, key=model_name)
    rate = _train_rate(build(), plan, in_chans, input_size, batch, steps, num_classes)
    achieved = 3 * flops * rate / 1e9
    log(f"training ({plan_name(plan)}, batch {batch}): {rate:,.0f} img/s, "
        f"{achieved:.0f} GFLOP/s = {100 * achieved / peaks['bf16']:.0f}% of the bf16 GEMM peak")
    x1, x64 = torch.randn(1, *shape), torch.randn(64, *shape)
    results = {"eager fp32": _infer_times(_torch_runner(build(), ExecPlan()), x1, x64, repeats)}
    iplan, itimings = choose_inference_plan(build(), x64, compile=compile,
                                            key=model_name)
    results[f"auto ({plan_name(iplan)})"] = _infer_times(_torch_runner(build(), iplan), x1, x64,
                                                         repeats)
    if onnx:
        with tempfile.TemporaryDirectory() as d:
            results["onnxruntime fp32"] = _infer_times(_onnx_runner(build(), x1, Path(d)), x1,
                                                       x64, repeats)
    for k, v in results.items():
        log(f"inference {k}: {v['latency_ms']:.2f} ms at batch 1, "
            f"{v['throughput']:,.0f} img/s at batch 64")
    eager = results["eager fp32"]["throughput"]
    return {"model": model_name, "input": list(shape), "flops_per_image": flops,
            "gemm_peak_gflops": peaks, "train_plan": plan_name(plan),
            "train_plan_s_per_step": timings, "train_images_per_s": rate,
            "train_gflops": achieved, "train_fraction_of_bf16_peak": achieved / peaks["bf16"],
            "inference": results, "inference_plan_s_per_batch": itimings,
            "auto_vs_eager_throughput": results[f"auto ({plan_name(iplan)})"]["throughput"]
            / eager}
