"""The run-folder contract: every path a run has, and the model file that eval, predict,
export, serve and ``imgcls.load`` read. The inference side imports this module, never the
training code.

    config.yaml          resolved configuration (enough to repeat the run)
    metrics.jsonl        one JSON record per epoch
    split.csv            which training-source images were used for train and for val
    skipped.txt          image files that could not be decoded, with the reason
    conflicts.txt        byte-identical image files found in two classes
    train_margins.safetensors  each training image's margin at every epoch (the audit's
                         evidence of mislabelled images)
    audit/               audit.csv (one row per finding) and report.html of ``imgcls audit``
    model.safetensors    best weights + model name, options and preprocessing
    checkpoints/last.safetensors   full training state for --resume (previous one: .prev)
    summary.json         final figures (test accuracy, time, chosen execution plan)
    tensorboard/         TensorBoard event files (--tensorboard)
    eval-<split>/        metrics.json, plots (<name>.png) and report.html of ``imgcls eval`` on
                         the run's data
    eval-<data>-<split>/ the same for other data (``imgcls eval --data``)
    report.html, model_card.md      the report and model card of the latest evaluation on
                         the run's own data
    model.onnx, model.torchscript.pt   exports, each with its sidecar (model.onnx.json)
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import RunError
from .utils import (
    atomic_write_bytes,
    atomic_write_text,
    read_safetensors,
    safetensors_bytes,
    write_yaml,
)

if TYPE_CHECKING:
    from torch import nn

    from .runtime.preprocess import Preprocess

PROBE = ".write-test"  # written and removed to prove a new run folder is writable
EXPORT_FILES = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}  # by format


class RunDir:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    config = property(lambda self: self.path / "config.yaml")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    split = property(lambda self: self.path / "split.csv")
    skipped = property(lambda self: self.path / "skipped.txt")
    conflicts = property(lambda self: self.path / "conflicts.txt")
    model_file = property(lambda self: self.path / "model.safetensors")
    last_checkpoint = property(lambda self: self.path / "checkpoints" / "last.safetensors")
    summary = property(lambda self: self.path / "summary.json")
    tensorboard = property(lambda self: self.path / "tensorboard")
    report = property(lambda self: self.path / "report.html")
    model_card = property(lambda self: self.path / "model_card.md")
    margins = property(lambda self: self.path / "train_margins.safetensors")
    audit_dir = property(lambda self: self.path / "audit")
    audit_csv = property(lambda self: self.path / "audit" / "audit.csv")
    audit_report = property(lambda self: self.path / "audit" / "report.html")
    audit_section = property(lambda self: self.path / "audit" / "section.html")
    audit_summary = property(lambda self: self.path / "audit" / "summary.json")

    def eval_dir(self, split: str, data: str | None = None) -> EvalDir:
        """Where ``imgcls eval`` writes the metrics, plots and report of ``split``: of the
        run's own data, or of other ``data`` (a folder named for them, so that evaluating
        them leaves the run's own evaluations in place)."""
        return EvalDir(self.path / (f"eval-{split}" if data is None
                                    else f"eval-{data_name(data)}-{split}"))

    def export_file(self, fmt: str) -> Path:
        """The default path of an export of format ``fmt`` (:data:`EXPORT_FILES`)."""
        return self.path / EXPORT_FILES[fmt]

    @classmethod
    def create(cls, out: str | os.PathLike, name: str | None, default_name: str,
               config: dict) -> RunDir:
        """Make a new run folder (``name`` or ``default_name`` with a numeric suffix if taken)
        holding ``config`` as its ``config.yaml``, before any training starts. Writing that
        file claims the folder: of runs started at once under one name, each gets its own."""
        out = Path(out)
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", name or default_name).strip("-") or "run"
        path, i = out / base, 2
        while True:
            try:
                if not _taken(path):
                    (path / "checkpoints").mkdir(parents=True, exist_ok=True)
                    write_yaml(path / "config.yaml", config, exclusive=True)
                    return cls(path)
            except FileExistsError:  # another run claimed it first
                pass
            except OSError as e:
                raise RunError(f"{path}: cannot create or write the run folder "
                               f"({e.strerror or e}); choose another --out") from e
            path, i = out / f"{base}-{i}", i + 1

    @classmethod
    def open(cls, path: str | os.PathLike, need_model: bool = True) -> RunDir:
        """An existing run; RunError saying what is missing otherwise."""
        run = cls(path)
        if not run.path.is_dir():
            raise RunError(f"{path}: no such run folder")
        if need_model and not run.model_file.exists():
            hint = (" (training has not finished an epoch yet?)"
                    if run.last_checkpoint.exists() or run.config.exists() else "")
            raise RunError(f"{path}: not a finished run, {run.model_file.name} is missing{hint}")
        return run

    def append_metrics(self, record: dict) -> None:
        with open(self.metrics, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read_metrics(self) -> list[dict]:
        if not self.metrics.exists():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line]

    def truncate_metrics(self, epochs_done: int) -> None:
        """On resume, forget records of epochs after the checkpoint (they will be redone)."""
        keep = [r for r in self.read_metrics() if r.get("epoch", 0) <= epochs_done]
        atomic_write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in keep))


class EvalDir:
    """The folder of one evaluation (:meth:`RunDir.eval_dir`)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    metrics = property(lambda self: self.path / "metrics.json")
    report = property(lambda self: self.path / "report.html")

    def plot(self, name: str) -> Path:
        """The PNG of one plot: curves, confusion, reliability, per_class, errors."""
        return self.path / f"{name}.png"


def export_sidecar(export: str | os.PathLike) -> Path:
    """The JSON written next to an exported model (``model.onnx.json`` beside ``model.onnx``),
    in the run folder or wherever the export went."""
    return Path(f"{export}.json")


def ensure_writable(out: str | os.PathLike) -> None:
    """Prove that run folders can be made in ``out`` before any data is loaded; the run's
    own folder is made once the run is resolved, so a run that fails before training
    leaves nothing that looks like a run."""
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=PROBE)  # each run started at once its own
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise RunError(f"{out}: cannot create or write the run folder there "
                       f"({e.strerror or e}); choose another --out") from e


def _taken(path: Path) -> bool:
    """A folder holds something other than what a run killed while being created leaves
    behind: an empty ``checkpoints/``, the write probe, a temp file of an atomic write cut
    short (that one is reused rather than skipped)."""
    if not path.exists():
        return False
    return any(not (p.name.startswith(PROBE) or p.name.startswith(".") and p.name.endswith(".tmp"))
               and (p.name != "checkpoints" or any(p.iterdir())) for p in path.iterdir())


def data_name(data: str) -> str:
    """A data set name, or a path's last part, as a folder name may hold it."""
    name = Path(data).name if ("/" in data or os.sep in data) else data
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "data"


def default_run_name(model: str, data: str) -> str:
    return f"{model.replace('/', '-')}-{data_name(data)}-{time.strftime('%Y%m%d-%H%M%S')}"


MODEL_FORMAT = 1  # the model file's header version


def model_meta(model: str, model_kwargs: dict, pre: Preprocess) -> dict:
    """What a model file records besides its weights: enough to rebuild the model and
    prepare its input."""
    return {"model": model, "model_kwargs": model_kwargs,
            "num_classes": len(pre.class_names), "preprocess": pre.to_dict()}


def save_model_file(path: str | os.PathLike, state: dict, meta: dict) -> None:
    """The inference file of a run: weights plus the model name, options and preprocessing."""
    tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in state.items()}
    atomic_write_bytes(path, safetensors_bytes(tensors, dict(meta, format=MODEL_FORMAT)))


def load_run_model(path: str | os.PathLike, device: str = "cpu"
                   ) -> tuple[nn.Module, Preprocess, dict]:
    """The model of a run folder (or of a ``model.safetensors`` file) in eval mode, with its
    preprocessing and metadata."""
    from .models import create_model
    from .runtime.preprocess import Preprocess

    p = Path(path)
    file = p if p.is_file() else RunDir.open(p).model_file
    tensors, meta = read_safetensors(file)
    if "model" not in meta or "preprocess" not in meta:
        raise RunError(f"{file}: not an imgcls model file (no model name or preprocessing)")
    pre = Preprocess.from_dict(meta["preprocess"])
    model = create_model(meta["model"], num_classes=meta["num_classes"], channels=pre.channels,
                         image_size=pre.image_size, **meta.get("model_kwargs", {}))
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise RunError(f"{file}: weights do not fit {meta['model']} ({e})") from e
    return model.to(device).eval(), pre, meta


def set_temperature(path: str | os.PathLike, temperature: float) -> None:
    """Store ``temperature`` in the run's model file (rewritten atomically)."""
    file = RunDir.open(path).model_file
    tensors, meta = read_safetensors(file)
    meta["preprocess"]["temperature"] = temperature
    save_model_file(file, tensors, meta)
