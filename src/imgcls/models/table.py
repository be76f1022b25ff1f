"""A comparison table of models: parameters, FLOPs and CPU speed at a given input size."""

from __future__ import annotations

import csv
import io
import json
import logging
import statistics
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..errors import ConfigError, ModelError
from ..utils import atomic_write_text, cache_dir, former_shape_keywords
from ._registry import create_model, is_external, list_families, list_models, model_info

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


def _no_cuda_runtime_note(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("No CUDA runtime is found")


def _benchmark() -> ModuleType:
    """``torch.utils.benchmark``, imported without the warning that its import of
    ``torch.utils.cpp_extension`` logs on a machine with a CUDA toolkit but no GPU ("No CUDA
    runtime is found, using CUDA_HOME=..."): the timing runs on the CPU, where it means
    nothing, and ``imgcls models`` and ``imgcls compare`` would print it."""
    log = logging.getLogger("torch.utils.cpp_extension")
    log.addFilter(_no_cuda_runtime_note)
    try:
        from torch.utils import benchmark
    finally:
        log.removeFilter(_no_cuda_runtime_note)
    return benchmark


def _timer(model: nn.Module, x: torch.Tensor, threads: int) -> object:
    benchmark = _benchmark()
    return benchmark.Timer("model(x)", globals={"model": model, "x": x}, num_threads=threads)


def measure_latency(models: dict[str, nn.Module], make_input: object, *, batch: int = 64,
                    rounds: int = 5, threads: int | None = None,
                    min_run_time: float = 0.1) -> dict[str, tuple[float, float]]:
    """{name: (latency in seconds at batch 1, images/s at ``batch``)}, measured with
    ``torch.utils.benchmark`` (blocked autorange: as many calls per block as fill
    ``min_run_time``) at a fixed number of ``threads``, the models interleaved over
    ``rounds`` rounds and each figure the median of its rounds: a machine whose speed drifts
    affects every model alike, and the result does not depend on the order given."""
    threads = threads or torch.get_num_threads()
    one, many = make_input(1), make_input(batch)
    timers = {name: (_timer(m, one, threads), _timer(m, many, threads))
              for name, m in models.items()}
    times: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in models}
    with torch.inference_mode():
        for m in models.values():  # first calls pay for allocation and kernel selection
            m(one), m(many)
        for _ in range(rounds):
            for name, (t1, tb) in timers.items():
                times[name][0].append(t1.blocked_autorange(min_run_time=min_run_time).median)
                times[name][1].append(tb.blocked_autorange(min_run_time=min_run_time).median)
    return {n: (statistics.median(a), batch / statistics.median(b))
            for n, (a, b) in times.items()}


def _count(name: str, image_size: int, channels: int, num_classes: int,
           device: str = "meta") -> dict[str, int]:
    """Parameters and forward FLOPs of one image. On the meta device tensors have shapes but
    no data: nothing is initialised or computed, so every registered model is counted in
    seconds rather than a minute, with the same counts."""
    with torch.device(device):
        model = create_model(name, num_classes=num_classes, channels=channels,
                             image_size=image_size).eval()
        x = torch.zeros(1, channels, image_size, image_size)
    return {"params": sum(p.numel() for p in model.parameters()),
            "flops": count_flops(model, x)}


def _static_row(name: str, image_size: int, channels: int, num_classes: int
                ) -> dict[str, Any]:
    """The row's family, input shape, parameters and FLOPs, from the cache when counted
    before."""
    row: dict[str, Any] = {"family": _family(name), "name": name, "image_size": image_size,
                           "channels": channels}
    key = f"{name}|{image_size}|{channels}|{num_classes}|{torch.__version__}"
    cache = _cache()
    if key in cache:
        return {**row, **cache[key]}
    try:
        counted = _count(name, image_size, channels, num_classes)
    except ModelError:
        raise
    except Exception:  # a forward that needs values (.item(), data-dependent shapes)
        counted = _count(name, image_size, channels, num_classes, device="cpu")
    cache[key] = counted
    _save_cache(cache)
    return {**row, **counted}


def _cache_path() -> Path:
    return cache_dir() / "model_table.json"


def _cache() -> dict:
    try:
        return json.loads(_cache_path().read_text())
    except (OSError, ValueError):
        return {}


def _save_cache(cache: dict) -> None:
    atomic_write_text(_cache_path(), json.dumps(cache))


def model_table(names: list[str], *, image_size: int = 32, channels: int = 3,
                num_classes: int = 10, latency: bool = True, batch_size: int = 64,
                repeats: int = 5, threads: int | None = None, **former: int
                ) -> list[dict[str, Any]]:
    """One row per model: family, name, params, flops (per image at ``image_size``; cached
    per model and shape) and, with ``latency``, latency_ms (CPU, batch 1), throughput
    (images/s at ``batch_size``) and the CPU threads used (:func:`measure_latency`, ``repeats``
    rounds). A model that cannot be built or run at this size gets an ``error`` field. The
    former keywords ``input_size``, ``in_chans`` and ``batch`` are accepted, with a
    DeprecationWarning."""
    image_size, channels, batch_size = former_shape_keywords(
        former, "model_table", image_size, channels, batch_size)
    rows, models = [], {}
    for name in names:
        try:
            row = _static_row(name, image_size, channels, num_classes)
            if latency:
                models[name] = create_model(name, num_classes=num_classes, channels=channels,
                                            image_size=image_size).eval()
        except (ModelError, RuntimeError, ValueError) as e:
            # RuntimeError/ValueError: built, but the input is too small for its down-sampling
            row = {"family": _family(name), "name": name, "image_size": image_size,
                   "channels": channels, "error": str(e).splitlines()[0]}
        rows.append(row)
    if models:
        threads = threads or torch.get_num_threads()
        speed = measure_latency(models, lambda n: torch.randn(n, channels, image_size,
                                                              image_size),
                                batch=batch_size, rounds=repeats, threads=threads)
        for row in rows:
            if row["name"] in speed:
                lat, thr = speed[row["name"]]
                row.update(latency_ms=1000 * lat, throughput=thr, batch_size=batch_size,
                           threads=threads)
    return rows


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

    return "\n".join([*(fmt(c) for c in [header, *lines]), _caption(rows)])


def _caption(rows: list[dict[str, Any]]) -> str:
    """What the figures were measured on: the input shape, and the batch and threads of
    the timing."""
    shapes = sorted({(r["image_size"], r.get("channels", 3)) for r in rows})
    text = "input " + ", ".join(f"{s}x{s} px, {c} channel{'s' * (c != 1)}" for s, c in shapes)
    timed = next((r for r in rows if "latency_ms" in r), None)
    if timed:
        text += (f"; latency at batch 1, img/s at batch {timed['batch_size']}, "
                 f"{timed['threads']} thread{'s' * (timed['threads'] != 1)}")
    return text


def select_models(pattern: str | None = None, family: str | None = None) -> list[str]:
    """The models ``imgcls models`` measures: registered names matching the glob patterns
    ``pattern`` and ``family``, or one timm / torchvision model named in full as
    ``pattern``; a ModelError naming the families when nothing matches."""
    names = list_models(pattern, family)
    if not names and pattern and is_external(pattern) and not set("*?[") & set(pattern):
        return [pattern]
    if not names:
        raise ModelError(
            f"no model matches{f' {pattern!r}' if pattern else ''}"
            f"{f' in family {family!r}' if family else ''}; the families are "
            f"{', '.join(list_families())} (--family takes them or a glob pattern, e.g. "
            "'res*'). timm and torchvision models are not listed: name one to measure it, "
            "e.g. `imgcls models timm/resnet18`")
    return names


def format_table(rows: list[dict[str, Any]], fmt: str) -> str:
    """``rows`` of :func:`model_table` as aligned text ("table"), "csv" or "json"."""
    if fmt == "table":
        return _text_table(rows)
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "csv":
        fields = ["family", "name", "image_size", "channels", "params", "flops", "latency_ms",
                  "throughput", "batch_size", "threads", "error"]
        used = [f for f in fields if any(f in r for r in rows)]
        out = io.StringIO()
        writer = csv.DictWriter(out, used, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    raise ConfigError(f"table format must be one of {', '.join(FORMATS)}, got {fmt!r}")
