"""Checkpoints as single safetensors files: no pickle anywhere, so loading one cannot run code.

A training checkpoint holds the weights, the EMA weights, the optimizer state (tensors
flattened to ``optim.<param>.<key>``), the AMP scaler, the RNG states and a JSON header with
counters and config. It is written atomically; the previous one is kept as ``prev`` so a
checkpoint damaged after the fact still leaves a good one to resume from.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import RunError
from ..utils import atomic_write_bytes, read_safetensors, safetensors_bytes

FORMAT = 1


@dataclass
class Checkpoint:
    model: dict[str, torch.Tensor]
    meta: dict
    ema: dict[str, torch.Tensor] | None = None
    optimizer: dict | None = None
    scaler: dict | None = None
    rng: dict = field(default_factory=dict)


def _flatten_optimizer(state: dict, tensors: dict[str, torch.Tensor]) -> dict:
    scalars: dict[str, dict] = {}
    for pid, s in state["state"].items():
        for k, v in s.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{pid}.{k}"] = v
            else:
                scalars.setdefault(str(pid), {})[k] = v
    return {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], info: dict) -> dict:
    state: dict[int, dict] = {}
    for name, v in tensors.items():
        if name.startswith("optim."):
            _, pid, k = name.split(".", 2)
            state.setdefault(int(pid), {})[k] = v
    for pid, s in info["scalars"].items():
        state.setdefault(int(pid), {}).update(s)
    return {"state": state, "param_groups": info["param_groups"]}


def capture_rng() -> tuple[dict[str, torch.Tensor], dict]:
    """RNG states of torch (CPU and CUDA), NumPy and Python, as tensors plus JSON."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(keys.astype(np.int64))
    py = random.getstate()
    return tensors, {"numpy": [kind, int(pos), int(has_gauss), float(cached)],
                     "python": [py[0], list(py[1]), py[2]]}


def restore_rng(tensors: dict[str, torch.Tensor], info: dict) -> None:
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    if "rng.numpy" in tensors and "numpy" in info:
        kind, pos, has_gauss, cached = info["numpy"]
        np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos,
                             has_gauss, cached))
    if "python" in info:
        v, state, gauss = info["python"]
        random.setstate((v, tuple(state), gauss))


def clone_tensors(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share storage; clones also detach from autograd.
    return {prefix + k: v.detach().to("cpu").clone().contiguous() for k, v in state.items()}


def save_checkpoint(path: str | Path, ckpt: Checkpoint, keep_previous: bool = True) -> None:
    """Write ``ckpt`` atomically; the file it replaces becomes ``<name>.prev``."""
    path = Path(path)
    tensors = clone_tensors(ckpt.model, "model.")
    meta = dict(ckpt.meta, format=FORMAT)
    if ckpt.ema is not None:
        tensors.update(clone_tensors(ckpt.ema, "ema."))
    if ckpt.optimizer is not None:
        opt_tensors: dict[str, torch.Tensor] = {}
        meta["optimizer"] = _flatten_optimizer(ckpt.optimizer, opt_tensors)
        tensors.update(clone_tensors(opt_tensors, ""))
    if ckpt.scaler:
        meta["scaler"] = ckpt.scaler
    rng_t, rng_info = capture_rng() if not ckpt.rng else (ckpt.rng["tensors"], ckpt.rng["info"])
    tensors.update(clone_tensors(rng_t, ""))
    meta["rng"] = rng_info
    if keep_previous and path.exists():
        os.replace(path, previous_path(path))
    atomic_write_bytes(path, safetensors_bytes(tensors, meta))


def previous_path(path: Path) -> Path:
    return path.with_name(path.name + ".prev")


def load_checkpoint(path: str | Path) -> Checkpoint:
    tensors, meta = read_safetensors(path)
    if meta.get("format") != FORMAT:
        raise RunError(f"{path}: not an imgcls checkpoint (format {meta.get('format')!r})")

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    ema = part("ema.") or None
    optim = _unflatten_optimizer(tensors, meta["optimizer"]) if "optimizer" in meta else None
    rng = {"tensors": {k: v for k, v in tensors.items() if k.startswith("rng.")},
           "info": meta.get("rng", {})}
    return Checkpoint(part("model."), meta, ema, optim, meta.get("scaler"), rng)


def load_latest(path: str | Path) -> tuple[Checkpoint, Path]:
    """The checkpoint at ``path``, or its previous version when that one is damaged."""
    path = Path(path)
    try:
        return load_checkpoint(path), path
    except RunError as first:
        prev = previous_path(path)
        if prev.exists():
            try:
                return load_checkpoint(prev), prev
            except RunError:
                pass
        raise first
