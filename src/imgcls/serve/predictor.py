"""What the server runs: uint8 images (N, C, H, W) in, probabilities (N, classes) out (and
the logits, which an exported ``model.onnx`` also gives), with ONNX Runtime on an exported
``model.onnx`` or with torch on the run's weights."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, ImgclsError, RunError
from ..export import OUTPUT_NAMES
from ..run import RunDir, export_sidecar, load_run_model
from ..runtime.plan import ExecPlan
from ..runtime.preprocess import Preprocess

BACKENDS = ("auto", "onnx", "torch")
PROBABILITIES, LOGITS = OUTPUT_NAMES  # the outputs of an exported model.onnx


class Predictor:
    """A loaded model with its preprocessing; ``name`` is the default served model name.

    ``predictor(images)`` gives the probabilities; :meth:`run` gives every output of
    :attr:`outputs` by name from one model run (what the server calls). A subclass that
    overrides only ``__call__`` serves the probabilities alone."""

    backend = "none"
    outputs: tuple[str, ...] = (PROBABILITIES,)

    def __init__(self, pre: Preprocess, name: str) -> None:
        self.pre, self.name = pre, name

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.pre.channels, self.pre.image_size, self.pre.image_size

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Probabilities (N, classes) of uint8 images (N, C, H, W)."""
        return self.run(images)[PROBABILITIES]

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Each output of :attr:`outputs`, (N, classes), by name."""
        return {PROBABILITIES: self(images)}


class OnnxPredictor(Predictor):
    backend = "onnx"

    def __init__(self, path: Path, pre: Preprocess | None, name: str) -> None:
        """``pre`` None: the preprocessing that the model file carries in its metadata."""
        import onnxruntime as ort

        from ..export import preprocess_from_metadata

        opts = ort.SessionOptions()
        # idle intra-op threads spin by default, taking the CPU from the event loop that
        # parses the next requests; a serving process wants them asleep
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        if pre is None:
            pre = preprocess_from_metadata(self.session.get_modelmeta().custom_metadata_map)
        super().__init__(pre, name)
        self.path = path
        self.input_name = self.session.get_inputs()[0].name
        names = [o.name for o in self.session.get_outputs()]
        # probabilities come first; the logits are served when the file has them
        self.outputs = (PROBABILITIES, *([LOGITS] if LOGITS in names else []))
        self.output_names = [names[0], *self.outputs[1:]]

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(self.output_names, {self.input_name: images})
        return dict(zip(self.outputs, values))


class TorchPredictor(Predictor):
    backend = "torch"
    outputs = OUTPUT_NAMES

    def __init__(self, model: torch.nn.Module, pre: Preprocess, name: str,
                 plan: ExecPlan | None = None) -> None:
        super().__init__(pre, name)
        self.plan = plan or ExecPlan(str(next(model.parameters()).device))
        self.model = self.plan.prepare_inference(model)

    @torch.inference_mode()
    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        # binary request data arrive as read-only buffers, which torch will not wrap
        x = self.pre.normalize(torch.from_numpy(np.require(images, requirements="W"))
                               .to(self.plan.device))
        with self.plan.autocast():
            logits = self.model(self.plan.prepare_input(x)).float()
        return {PROBABILITIES: self.pre.probabilities(logits).cpu().numpy(),
                LOGITS: logits.cpu().numpy()}


def model_name(path: Path) -> str:
    """The run folder's name, reduced to characters that are safe in a URL path."""
    folder = path.parent if path.is_file() else path
    return re.sub(r"[^A-Za-z0-9._-]+", "-", folder.resolve().name).strip("-") or "model"


def load_predictor(target: str | os.PathLike, backend: str = "auto", device: str = "auto",
                   precision: str = "fp32", compile: str = "no",  # noqa: A002
                   batch: int = 32) -> Predictor:
    """A run folder (ONNX Runtime when it holds an up-to-date ``model.onnx`` and ``backend``
    is ``auto``; else torch), a ``model.safetensors`` file (torch) or a ``.onnx`` file (its
    ``.json`` sidecar, else the metadata inside it, gives the preprocessing). Only local
    paths: a model is never fetched from a URL.

    The torch backend runs in fp32 eager mode unless ``precision`` / ``compile`` ask for more
    ('auto' measures the candidates on batches of ``batch`` and keeps the fastest, cached);
    fp32 keeps its probabilities identical to ``imgcls predict``."""
    from ..export import read_sidecar
    from ..runtime.plan import choose_inference_plan, resolve_device

    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if "://" in str(target):
        raise ConfigError(f"{target}: models are served from local paths only, not URLs")
    path = Path(target)
    if not path.exists():
        raise RunError(f"{target}: no such run folder or model file")
    name = model_name(path)
    run = RunDir(path) if path.is_dir() else None
    onnx_path = path if path.suffix == ".onnx" else (run.export_file("onnx") if run else None)
    if path.suffix == ".onnx" and backend == "torch":
        raise ConfigError(f"{target}: an ONNX file is served with the onnx backend; give the "
                          "run folder for --backend torch")
    use_onnx = onnx_path is not None and onnx_path.exists() and backend != "torch"
    if use_onnx and backend == "auto" and run:
        weights = run.model_file
        if weights.exists() and weights.stat().st_mtime > onnx_path.stat().st_mtime:
            # the run was trained further after the export: the ONNX file is stale
            print(f"warning: {onnx_path} is older than {weights}; serving the torch backend "
                  "(re-run `imgcls export` to use ONNX Runtime)")
            use_onnx = False
    if backend == "onnx" and not use_onnx:
        raise RunError(f"{target}: no model.onnx; run `imgcls export {target}` first")
    if use_onnx:
        pre = None  # without a sidecar: the metadata inside the ONNX file
        if export_sidecar(onnx_path).exists():
            side = read_sidecar(onnx_path)
            if side.get("format") != "onnx":
                raise ImgclsError(f"{export_sidecar(onnx_path)}: not the sidecar of an ONNX export")
            pre = Preprocess.from_dict(side)
        return OnnxPredictor(onnx_path, pre, name)
    model, pre, meta = load_run_model(path, resolve_device(device))
    example = torch.zeros(batch, pre.channels, pre.image_size, pre.image_size)
    plan, _ = choose_inference_plan(model, example, device=device, precision=precision,
                                    compile=compile, channels_last="no" if precision == "fp32"
                                    and compile == "no" else "auto", key=meta["model"])
    return TorchPredictor(model, pre, name, plan)
