"""What the layers of each family cost on this CPU, and what whole networks reach.

Layers: forward + backward of one convolution at a size the small-image models use (batch
128, 14x14 maps), per precision (fp32, bf16 autocast) and memory format (NCHW,
channels_last), as GFLOP/s (3 x forward FLOPs / time), beside a dense 3x3 convolution.
Networks: training steps (SGD, batch 64, fp32 channels_last as the execution plan picks on
a CPU without native bf16) of every family's small-image model and of its paper variant at
28 px, as images/s and GFLOP/s, beside resnet_mini, the dense reference. Everything is
measured in turns (each round times every case once), each figure the median of its rounds.

    python benchmarks/kernels.py [--rounds 5] [--nets-only | --layers-only]

Writes benchmarks/kernels.md and appends to benchmarks/kernels_results.jsonl.
"""

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _record import append_row
from torch import nn

from imgcls.models import create_model
from imgcls.models.table import count_flops
from imgcls.runtime.plan import keep_freed_memory

HERE = Path(__file__).parent
# (name, in channels, out channels, kernel, stride, groups, input side)
LAYERS = [("dense 3x3 (reference)", 64, 64, 3, 1, 1, 14),
          ("depthwise 3x3", 288, 288, 3, 1, 288, 14),
          ("depthwise 3x3 stride 2", 144, 144, 3, 2, 144, 28),
          ("grouped 3x3, 8 groups", 128, 128, 3, 1, 8, 14),
          ("1x1 expand 48->288", 48, 288, 1, 1, 1, 14),
          ("1x1 project 288->48", 288, 48, 1, 1, 1, 14),
          ("1x1 squeeze 128->16 (fire)", 128, 16, 1, 1, 1, 14)]
# family: (small-image model, paper variant at 28 px)
NETS = {"resnet": ("resnet_mini", "resnet18"), "vgg": ("vgg_mini", "vgg16_bn"),
        "mobilenet": ("mobilenet_mini", "mobilenet_v2"),
        "xception": ("xception_mini", "xception"),
        "densenet": ("densenet_mini", "densenet_bc_100"),
        "inception": ("googlenet_mini", "googlenet"),
        "squeezenet": ("squeezenet_mini", "squeezenet1_1")}


def _step_fn(module: nn.Module, x: torch.Tensor, precision: str):
    dtype = torch.bfloat16 if precision == "bf16" else None

    def step() -> None:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            out = module(x)
        out.float().sum().backward()

    return step


def _time(fn, calls: int) -> float:
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t) / calls


def in_turns(cases: dict, rounds: int, calls) -> dict[str, float]:
    """Median seconds per call of every case, the cases timed in turns each round."""
    for fn in cases.values():
        fn()  # kernel selection, allocation
    times: dict[str, list] = {k: [] for k in cases}
    for _ in range(rounds):
        for k, fn in cases.items():
            times[k].append(_time(fn, calls(k)))
    return {k: statistics.median(v) for k, v in times.items()}


def layers(rounds: int, precisions: list[str]) -> list[dict]:
    cases, flops = {}, {}
    for name, cin, cout, k, s, g, side in LAYERS:
        conv = nn.Conv2d(cin, cout, k, s, k // 2, groups=g, bias=False)
        x = torch.randn(128, cin, side, side, requires_grad=True)
        flops[name] = count_flops(conv, x)
        for fmt in ("nchw", "channels_last"):
            mf = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
            c = conv.to(memory_format=mf)
            xi = x.detach().to(memory_format=mf).requires_grad_()
            for p in precisions:
                cases[name, p, fmt] = _step_fn(c, xi, p)
    secs = in_turns(cases, rounds, lambda _: 5)
    return [{"layer": n, "precision": p, "format": f, "ms": 1000 * t,
             "gflops_per_s": 3 * flops[n] / t / 1e9} for (n, p, f), t in secs.items()]


def nets(rounds: int, batch: int = 64) -> list[dict]:
    cases, flops, models = {}, {}, {}
    for family, names in NETS.items():
        for name in names:
            torch.manual_seed(0)
            m = create_model(name, num_classes=10, channels=1, image_size=28)
            flops[name] = count_flops(m.eval(), torch.zeros(1, 1, 28, 28))
            m = m.train().to(memory_format=torch.channels_last)
            opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
            x = torch.randn(batch, 1, 28, 28).to(memory_format=torch.channels_last)
            y = torch.randint(0, 10, (batch,))

            def step(m=m, opt=opt, x=x, y=y) -> None:
                F.cross_entropy(m(x), y).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            cases[name], models[name] = step, family
    # about a second of steps per case and round, at least one
    per_step = {k: _time(fn, 1) for k, fn in cases.items()}
    secs = in_turns(cases, rounds, lambda k: max(1, round(1.0 / per_step[k])))
    return [{"family": models[n], "model": n, "gflops": flops[n] / 1e9,
             "images_per_s": batch / t, "gflops_per_s": 3 * flops[n] * batch / t / 1e9}
            for n, t in secs.items()]


def markdown(layer_rows: list[dict], net_rows: list[dict], machine: str) -> str:
    out = ["# Kernels and networks on this CPU", "",
           "Written by `python benchmarks/kernels.py` (what it measures: its docstring). "
           f"Machine: {machine}.", ""]
    if layer_rows:
        ref = {(r["precision"], r["format"]): r["gflops_per_s"] for r in layer_rows
               if r["layer"].startswith("dense")}
        out += ["| layer (batch 128) | precision | format | ms fwd+bwd | GFLOP/s | "
                "vs dense 3x3 |", "|---|---|---|---|---|---|"]
        out += [f"| {r['layer']} | {r['precision']} | {r['format']} | {r['ms']:.1f} | "
                f"{r['gflops_per_s']:.0f} | "
                f"{r['gflops_per_s'] / ref[r['precision'], r['format']]:.2f} |"
                for r in layer_rows]
        out.append("")
    if net_rows:
        dense = next(r["gflops_per_s"] for r in net_rows if r["model"] == "resnet_mini")
        out += ["| family | model | GFLOPs / image | train img/s | GFLOP/s | vs resnet_mini |",
                "|---|---|---|---|---|---|"]
        out += [f"| {r['family']} | {r['model']} | {r['gflops']:.3f} | "
                f"{r['images_per_s']:,.0f} | {r['gflops_per_s']:.0f} | "
                f"{r['gflops_per_s'] / dense:.2f} |" for r in net_rows]
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--layers-only", action="store_true")
    p.add_argument("--nets-only", action="store_true")
    a = p.parse_args()
    keep_freed_memory()  # as imgcls trains: freed memory reused, not returned to the system
    layer_rows = [] if a.nets_only else layers(a.rounds, a.precisions.split(","))
    net_rows = [] if a.layers_only else nets(a.rounds)
    row = append_row(HERE / "kernels_results.jsonl", {
        "threads": torch.get_num_threads(), "layers": layer_rows, "nets": net_rows})
    text = markdown(layer_rows, net_rows, f"{row['machine']}, {row['threads']} threads, "
                    f"torch {row['torch']}, measured {row['date'][:10]}")
    (HERE / "kernels.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
