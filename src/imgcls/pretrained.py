"""Initial weights trained elsewhere (``--pretrained``): a run folder, a ``.safetensors``
file (a model file or a training checkpoint) or a pickled state dict, read without running
any code, and loaded into a model.

Only the classifier and the stem's channel count may differ between the file and the model;
everything else has to match exactly, so a wrong file fails loudly instead of leaving parts of
the network at random initialisation.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from .errors import ModelError, RunError
from .models.transfer import adapt_input_conv
from .run import RunDir
from .utils import read_safetensors

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
# Wrappers that prefix every key: DataParallel/DDP ("module.") and torch.compile ("_orig_mod.").
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _keys(keys: Iterable[str], limit: int = 10) -> str:
    keys = list(keys)
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def read_state_dict(source: str | Path) -> tuple[dict[str, torch.Tensor], str, Path]:
    """Tensors of a run folder, ``.safetensors`` or pickled state dict, a description of what
    the file holds, and the file's path."""
    path = Path(source)
    if path.is_dir():
        path = RunDir(path).model_file
    if not path.is_file():
        raise ModelError(f"{path}: no such weights file (give a run folder, a .safetensors "
                         f"file or a {'/'.join(PICKLE_SUFFIXES)} state dict)")
    what = "state dict"
    if path.suffix == ".safetensors":
        try:
            state, meta = read_safetensors(path)
        except RunError as e:
            raise ModelError(str(e)) from e
        if any(k.startswith("rng.") for k in state):  # a training checkpoint: its model part
            state = {k[6:]: v for k, v in state.items() if k.startswith("model.")}
        if meta.get("model"):
            what = f"weights of {meta['model']} ({meta.get('num_classes', '?')} classes)"
    elif path.suffix in PICKLE_SUFFIXES:
        # weights_only=True passed explicitly: torch 2.14 lets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD
        # override only an *unset* weights_only, so pickled code is refused whatever the env
        # (tests/test_transfer.py checks this, should a later torch change it).
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            # torch's message suggests weights_only=False; only name the offending object.
            found = re.search(r"GLOBAL (\S+)", str(e))
            culprit = f" ({found.group(1)})" if found else ""
            raise ModelError(
                f"{path}: refused: it holds Python objects besides tensors{culprit}, and loading "
                "those could run arbitrary code. Save only the model's state_dict, or convert "
                "it to .safetensors.") from e
        except Exception as e:  # truncated zip, not a torch file, ...
            raise ModelError(f"{path}: cannot read as a torch state dict ({e})") from e
        if isinstance(obj, dict):  # training scripts often wrap the weights
            for key in ("state_dict", "model"):
                if isinstance(obj.get(key), dict):
                    obj, what = obj[key], f"state dict (under {key!r})"
                    break
        state = ({k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
                 if isinstance(obj, dict) else {})
    else:
        raise ModelError(f"{path}: unknown weights format {path.suffix!r} "
                         f"(use .safetensors or {'/'.join(PICKLE_SUFFIXES)})")
    if not state:
        raise ModelError(f"{path}: holds no tensors")
    for prefix in _WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state, f"{what}, {len(state)} tensors", path


def load_pretrained(model: nn.Module, source: str | Path,
                    log: Callable[[str], object] = print,
                    class_names: list[str] | None = None) -> dict[str, int]:
    """Load ``source`` (run folder, ``.safetensors``, ``.pth``/``.pt``/``.bin``) into ``model``.

    The classifier (``model.classifier``) keeps its fresh initialisation when the file's has
    another shape or is absent, or when the file is an imgcls model whose class names differ
    from ``class_names`` (same count, other classes: the old classifier would be confidently
    wrong); a 3-channel stem is summed into a 1-channel one (and a 1-channel
    one repeated / 3). Any other missing, unexpected or wrongly shaped key is a ModelError.
    Returns counts: ``loaded`` tensors, ``replaced_head`` classifier tensors left fresh,
    ``adapted_stem`` (0 or 1).
    """
    state, what, path = read_state_dict(source)
    file_classes = _class_names(path)
    other_classes = bool(class_names and file_classes and list(file_classes) != list(class_names))
    if hasattr(model, "from_native"):  # timm/torchvision adapters: library key names
        state = model.from_native(state)
    own = model.state_dict()
    head = getattr(model, "classifier", "head.fc") + "."
    stem = f"{model.first_conv}.weight" if getattr(model, "first_conv", "") else None
    load: dict[str, torch.Tensor] = {}
    unexpected, mismatched, head_differs, adapted = [], [], False, 0
    for k, v in state.items():
        want = own[k].shape if k in own else None
        if want is None:
            unexpected.append(k)
        elif v.shape == want:
            load[k] = v
        elif k.startswith(head):
            head_differs = True
        elif (k == stem and v.dim() == 4 and v.shape[0] == want[0] and v.shape[2:] == want[2:]
              and {v.shape[1], want[1]} == {1, 3}):
            load[k], adapted = adapt_input_conv(v, want[1]), 1
        else:
            mismatched.append(f"{k} (file {tuple(v.shape)}, model {tuple(want)})")
    if head_differs or other_classes:  # never mix an old bias with a new weight
        load = {k: v for k, v in load.items() if not k.startswith(head)}
    # Files saved before BatchNorm counted batches lack num_batches_tracked; torch allows that.
    missing = [k for k in own if k not in state and not k.startswith(head)
               and not k.endswith("num_batches_tracked")]
    problems = [f"{label}: {_keys(keys)}" for label, keys in
                (("missing keys", missing), ("unexpected keys", unexpected),
                 ("shape mismatches", mismatched)) if keys]
    if problems:
        raise ModelError(
            f"{path}: its weights do not fit {type(model).__name__} "
            f"({getattr(model, 'num_classes', '?')} classes, "
            f"{getattr(model, 'channels', '?')} channels): {'; '.join(problems)}. "
            f"The file holds a {what}, e.g. {_keys(list(state), 5)}.")
    model.load_state_dict(load, strict=False)
    fresh = [k for k in own if k.startswith(head) and k not in load]
    if fresh:
        why = ("the file's was trained on other classes" if other_classes
               else "the file's has another shape or is absent")
        log(f"pretrained {path.name}: classifier {', '.join(fresh)} newly initialised ({why})")
    if adapted:
        log(f"pretrained {path.name}: stem {stem} adapted to {own[stem].shape[1]} channel(s)")
    return {"loaded": len(load), "replaced_head": len(fresh), "adapted_stem": adapted}


def _class_names(path: Path) -> list[str] | None:
    """Class names recorded in an imgcls model file, if ``path`` is one."""
    if path.suffix != ".safetensors":
        return None
    try:
        _, meta = read_safetensors(path)
    except RunError:
        return None
    return (meta.get("preprocess") or meta.get("model_meta", {}).get("preprocess") or {}).get(
        "class_names")
