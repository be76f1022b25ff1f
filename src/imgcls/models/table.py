"""A comparison table of models: parameters, FLOPs and CPU speed at a given input size."""

from __future__ import annotations

import csv
import io
import json
import statistics
import time
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..errors import ConfigError, ModelError
from ._registry import create_model, is_external, model_info

FORMATS = ("table", "csv", "json")


def _family(name: str) -> str:
    if is_external(name):
        return name.split("/", 1)[0]
    try:
        return model_info(name).family
    except ModelError:
        return "?"


def count_flops(model: nn.Module, x: torch.Tensor) -> int:
    """Forward FLOPs of ``model(x)`` (a multiply-add counts 2, as FlopCounterMode does)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def _median_seconds(model: nn.Module, x: torch.Tensor, repeats: int, warmup: int = 2) -> float:
    with torch.inference_mode():
        for _ in range(warmup):  # first calls pay for allocation and kernel selection
            model(x)
        times = []
        for _ in range(max(1, repeats)):
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def model_table(names: list[str], *, input_size: int = 32, in_chans: int = 3,
                num_classes: int = 10, latency: bool = True, batch: int = 64,
                repeats: int = 5, threads: int | None = None) -> list[dict[str, Any]]:
    """One row per model: family, name, params, flops (per image at ``input_size``) and, with
    ``latency``, latency_ms (CPU, batch 1, median), throughput (images/s at ``batch``) and the
    CPU threads used (``threads``, torch's setting when None; restored afterwards).
    A model that cannot be built or run at this size gets an ``error`` field instead."""
    saved = torch.get_num_threads()
    if threads:
        # On a busy machine, torch's threads spin waiting for each other: pinning one thread
        # can be 100x faster at batch 1 than the default, so say which was used.
        torch.set_num_threads(threads)
    try:
        return [_row(name, input_size, in_chans, num_classes, latency, batch, repeats)
                for name in names]
    finally:
        torch.set_num_threads(saved)


def _row(name: str, input_size: int, in_chans: int, num_classes: int, latency: bool,
         batch: int, repeats: int) -> dict[str, Any]:
    row: dict[str, Any] = {"family": _family(name), "name": name, "input_size": input_size}
    try:
        model = create_model(name, num_classes=num_classes, in_chans=in_chans,
                             input_size=input_size).eval()
        one = torch.randn(1, in_chans, input_size, input_size)
        row["params"] = sum(p.numel() for p in model.parameters())
        row["flops"] = count_flops(model, one)
        if latency:
            row["latency_ms"] = 1000 * _median_seconds(model, one, repeats)
            many = torch.randn(batch, in_chans, input_size, input_size)
            row["throughput"] = batch / _median_seconds(model, many, repeats)
            row["threads"] = torch.get_num_threads()
    except (ModelError, RuntimeError, ValueError) as e:
        # RuntimeError/ValueError: built, but the input is too small for its down-sampling.
        row = {"family": row["family"], "name": name, "input_size": input_size,
               "error": str(e).splitlines()[0]}
    return row


def _text_table(rows: list[dict[str, Any]]) -> str:
    header = ["family", "name", "params (M)", "GFLOPs", "latency ms", "img/s"]
    lines = []
    for r in rows:
        if "error" in r:
            lines.append([r["family"], r["name"], f"error: {r['error']}"])
            continue
        lat = "latency_ms" in r
        lines.append([r["family"], r["name"], f"{r['params'] / 1e6:.3f}", f"{r['flops'] / 1e9:.4f}",
                      f"{r['latency_ms']:.2f}" if lat else "-",
                      f"{r['throughput']:.0f}" if lat else "-"])
    # Error rows (3 cells) do not widen the numeric columns; their message just runs on.
    widths = [max([len(header[i])] + [len(cells[i]) for cells in lines if i < 2 or len(cells) == 6])
              for i in range(6)]
    right = {2, 3, 4, 5}

    def fmt(cells: list[str]) -> str:
        if len(cells) < 6:
            return "  ".join([cells[0].ljust(widths[0]), cells[1].ljust(widths[1]), cells[2]])
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join(fmt(c) for c in [header, *lines])


def format_table(rows: list[dict[str, Any]], fmt: str) -> str:
    """``rows`` of :func:`model_table` as aligned text ("table"), "csv" or "json"."""
    if fmt == "table":
        return _text_table(rows)
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "csv":
        fields = ["family", "name", "input_size", "params", "flops", "latency_ms", "throughput",
                  "threads", "error"]
        used = [f for f in fields if any(f in r for r in rows)]
        out = io.StringIO()
        writer = csv.DictWriter(out, used, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    raise ConfigError(f"table format must be one of {', '.join(FORMATS)}, got {fmt!r}")
