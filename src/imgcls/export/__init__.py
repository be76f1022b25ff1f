"""Export a run's model to ONNX or TorchScript with the preprocessing inside, then prove it.

The exported graph takes the raw uint8 image batch (N, C, H, W) and returns calibrated
probabilities (and the logits), so a client cannot get the normalisation wrong. Every export
is followed by a parity check against the PyTorch model on real images of the run's data;
a file that disagrees is never written.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, ImgclsError
from ..run import EXPORT_FILES, RunDir, export_sidecar, load_run_model
from ..runtime.preprocess import Preprocess, calibrated_softmax
from ..utils import FORMER_NAMES, Log

__all__ = ["FORMATS", "ProbabilityModel", "check_parity", "export_model", "input_facts",
           "onnx_metadata", "parity_images", "preprocess_from_metadata", "read_sidecar",
           "reference_probs"]

FORMATS = tuple(EXPORT_FILES)  # onnx, torchscript
INPUT_NAME, OUTPUT_NAMES = "images", ("probabilities", "logits")
PARITY_IMAGES = 256
PROB_TOLERANCE = 1e-3
MIN_OPSET = 17
LAYOUT = "NCHW"
# ONNX metadata_props whose values are JSON (lists, numbers); the other values are plain text
JSON_KEYS = ("class_names", "mean", "std", "image_size", "channels", "temperature")


class ProbabilityModel(nn.Module):
    """uint8 (N, C, H, W) -> (probabilities, logits): the run's normalisation, the model, the
    temperature and the softmax in one module."""

    def __init__(self, model: nn.Module, pre: Preprocess) -> None:
        super().__init__()
        self.model = model
        std = torch.tensor(pre.std, dtype=torch.float32)[:, None, None]
        mean = torch.tensor(pre.mean, dtype=torch.float32)[:, None, None]
        # (x / 255 - mean) / std folded into one multiply-add, as Preprocess.normalize does
        self.register_buffer("scale", 1.0 / (255.0 * std))
        self.register_buffer("shift", -mean / std)
        self.temperature = float(pre.temperature)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(images.float() * self.scale + self.shift).float()
        return calibrated_softmax(logits, self.temperature), logits


@torch.no_grad()
def reference_probs(model: nn.Module, pre: Preprocess, images: torch.Tensor) -> torch.Tensor:
    """What ``imgcls.load(run).predict`` computes, independently of :class:`ProbabilityModel`
    (so a fault in the wrapper shows up in the parity check)."""
    logits = torch.cat([model(pre.normalize(c)).float() for c in images.split(256)])
    return pre.probabilities(logits)


def parity_images(run: Path, pre: Preprocess, n: int = PARITY_IMAGES, log: Log = print
                  ) -> tuple[torch.Tensor, str]:
    """Up to ``n`` images of the run's data (test split, else val, else train: the check is
    about numerics, so seen images serve as well), spread over the split so that every class
    appears; random images when the data cannot be loaded (e.g. a run trained on arrays)."""
    from ..config import read_yaml
    from ..data.dataset import ArrayDataset
    from ..data.prepare import conform
    from ..data.sources import load_source
    from ..runtime.images import ImageDecodeError

    try:
        cfg = read_yaml(RunDir(run).config)
        source = load_source(cfg["data"], cfg.get("data_dir"))
        split, ds = next((s, getattr(source, s)) for s in ("test", "val", "train")
                         if getattr(source, s) is not None and len(getattr(source, s)))
        idx = torch.linspace(0, len(ds) - 1, min(n, len(ds))).round().long().unique()
        ds = ds.subset(idx)
        if isinstance(ds, ArrayDataset):
            images = conform(ds, pre.channels, pre.image_size, pre.resize).images
        else:
            images = []
            for p in ds.paths:
                with contextlib.suppress(ImageDecodeError):
                    images.append(pre.load_images([p])[0])
            images = torch.stack(images)
        return images, f"{len(images)} {split} images of {cfg['data']}"
    except Exception as e:  # any reason the data are unavailable: fall back, say so
        log(f"parity check on random images: the run's data are not available ({e})")
        g = torch.Generator().manual_seed(0)
        shape = (64, pre.channels, pre.image_size, pre.image_size)
        return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8), "64 random images"


def input_facts(pre: Preprocess) -> dict:
    """What a client must know to build the exported model's input, beyond the preprocessing:
    the memory layout, the channel order of the decoded image and the pixel type."""
    return {"layout": LAYOUT, "color_order": "RGB" if pre.channels == 3 else "L",
            "input_dtype": "uint8"}


def onnx_metadata(pre: Preprocess, version: str) -> dict[str, str]:
    """The ONNX model's ``metadata_props`` (so the file alone is enough to use it): the class
    names, mean/std (JSON lists), input size, channels, temperature (JSON numbers), layout,
    colour order, input dtype, resize rule, tensor names and imgcls version (text)."""
    d = pre.to_dict()
    meta = {k: json.dumps(d[k]) for k in JSON_KEYS}
    meta.update(input_facts(pre), resize=pre.resize, interpolation=pre.interpolation,
                input_name=INPUT_NAME, output_names=",".join(OUTPUT_NAMES),
                imgcls_version=version)
    return meta


def preprocess_from_metadata(meta: dict[str, str]) -> Preprocess:
    """The :class:`Preprocess` that :func:`onnx_metadata` wrote (e.g. from onnxruntime's
    ``session.get_modelmeta().custom_metadata_map``); ImgclsError when it is not there."""
    meta = {FORMER_NAMES.get(k, k): v for k, v in meta.items()}  # an export of an older imgcls
    missing = [k for k in JSON_KEYS if k not in meta]
    if missing:
        raise ImgclsError(f"the ONNX model holds no imgcls metadata ({', '.join(missing)} "
                          "missing); re-run `imgcls export` or keep its .json sidecar")
    d = {k: json.loads(meta[k]) for k in JSON_KEYS}
    return Preprocess.from_dict(dict(d, **{k: meta[k] for k in ("resize", "interpolation")
                                           if k in meta}))


def _onnx_bytes(wrapper: ProbabilityModel, example: torch.Tensor, opset: int, log: Log,
                metadata: dict[str, str] | None = None) -> tuple[bytes, int]:
    """The serialised ONNX model (with ``metadata`` as its ``metadata_props``) and its actual
    opset (the exporter may not reach a low one)."""
    import onnx

    names = dict(input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), opset_version=opset)
    try:
        # torch.export-based exporter (dynamo=True): torch's supported path since 2.9 and
        # the one that gives a clean dynamic batch dimension. Its progress lines go to stdout.
        batch = torch.export.Dim("batch", min=1, max=1 << 20)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(wrapper, (example,), None, dynamo=True,
                                        external_data=False, verbose=False,
                                        dynamic_shapes=({0: batch},), **names)
        proto = program.model_proto
    except Exception as e:
        # Models torch.export cannot trace still go through the legacy TorchScript exporter
        # (deprecated in torch, hence only a fallback); parity is checked either way.
        log(f"torch.export-based ONNX export failed ({type(e).__name__}: {e}); "
            "using the legacy exporter (dynamo=False)")
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, (example,), buf, dynamo=False,
                              dynamic_axes={n: {0: "batch"} for n in (INPUT_NAME, *OUTPUT_NAMES)},
                              **names)
        proto = onnx.load_from_string(buf.getvalue())
    if metadata:
        kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in metadata]
        del proto.metadata_props[:]
        for key, value in [*kept, *metadata.items()]:
            proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    actual = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if actual != opset:
        log(f"ONNX opset {actual} (opset {opset} was asked for; the exporter could not reach it)")
    return proto.SerializeToString(), actual


def _torchscript_bytes(wrapper: ProbabilityModel, example: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():  # torch.jit is deprecated in favour of torch.export
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(wrapper, (example,)), buf)
    return buf.getvalue()


def _runner(exported: bytes | str | os.PathLike, fmt: str
            ) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 (N, C, H, W) -> probabilities, with the runtime a deployment would use."""
    if isinstance(exported, str | os.PathLike):
        exported = Path(exported).read_bytes()
    if fmt == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(exported, providers=["CPUExecutionProvider"])
        return lambda x: sess.run([OUTPUT_NAMES[0]], {INPUT_NAME: x})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(io.BytesIO(exported), map_location="cpu").eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x))[0].numpy()
    return run


def check_parity(exported: bytes | str | os.PathLike, fmt: str, model: nn.Module,
                 pre: Preprocess, images: torch.Tensor, tolerance: float = PROB_TOLERANCE
                 ) -> dict:
    """Run the exported model (ONNX Runtime, or torch for TorchScript) and the PyTorch model
    on ``images``; ImgclsError unless top-1 agrees on every image and no probability differs
    by more than ``tolerance``. Batches of 1, 100 and the rest exercise the dynamic batch."""
    run = _runner(exported, fmt)
    x = images.cpu().contiguous().numpy()
    chunks = [x[:1]] + [x[i:i + 100] for i in range(1, len(x), 100)]
    got = torch.from_numpy(np.concatenate([run(c) for c in chunks]))
    ref = reference_probs(model.cpu(), pre, images.cpu())
    if got.shape != ref.shape:
        raise ImgclsError(f"parity check failed: exported model returned {tuple(got.shape)}, "
                          f"expected {tuple(ref.shape)}")
    agree = (got.argmax(1) == ref.argmax(1)).double().mean().item()
    diff = (got.double() - ref.double()).abs().max().item()
    figures = {"images": len(x), "top1_agreement": agree, "max_abs_prob_diff": diff,
               "tolerance": tolerance}
    if not (agree == 1.0 and diff <= tolerance):  # `not <=` also catches NaN
        raise ImgclsError(f"parity check failed for the {fmt} export: top-1 agreement "
                          f"{agree:.2%} (need 100%), max |prob difference| {diff:.2e} "
                          f"(need <= {tolerance:g}) on {len(x)} images")
    return figures


def read_sidecar(path: str | os.PathLike) -> dict:
    """The JSON written next to an exported model (``model.onnx.json``)."""
    side = export_sidecar(path)
    try:
        return json.loads(side.read_text())
    except (OSError, ValueError) as e:
        raise ImgclsError(f"{side}: cannot read the export's sidecar ({e}); re-run "
                          "`imgcls export`") from e


def export_model(run: str | os.PathLike, fmt: str = "onnx", out: str | os.PathLike | None = None,
                 opset: int = 18, log: Log = print) -> Path:
    """Export the run's model as ``fmt`` (``onnx`` or ``torchscript``) to ``out`` (default
    ``<run>/model.onnx`` or ``<run>/model.torchscript.pt``) with a ``<out>.json`` sidecar
    that holds the preprocessing, the input's layout, colour order and dtype, the tensor
    names and the parity figures. An ONNX file also carries all but the parity figures in
    its own ``metadata_props`` (:func:`onnx_metadata`). The file is only written when the
    parity check passes."""
    from .. import __version__
    from ..utils import atomic_write_bytes, write_json

    if fmt not in FORMATS:
        raise ConfigError(f"export format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "onnx" and opset < MIN_OPSET:
        raise ConfigError(f"--opset must be at least {MIN_OPSET}, got {opset}")
    run = Path(run)
    run_dir = run.parent if run.is_file() else run
    model, pre, meta = load_run_model(run, "cpu")
    out = Path(out) if out else RunDir(run_dir).export_file(fmt)
    wrapper = ProbabilityModel(model, pre).eval()
    # batch 2: torch.export specialises a size-1 dimension to a constant
    example = torch.zeros(2, pre.channels, pre.image_size, pre.image_size, dtype=torch.uint8)
    if fmt == "onnx":
        data, opset = _onnx_bytes(wrapper, example, opset, log, onnx_metadata(pre, __version__))
    else:
        data = _torchscript_bytes(wrapper, example)
    images, where = parity_images(run_dir, pre, log=log)
    figures = check_parity(data, fmt, model, pre, images)  # raises before anything is written
    figures["data"] = where
    atomic_write_bytes(out, data)
    c, s = pre.channels, pre.image_size
    write_json(export_sidecar(out), {
        "format": fmt, **({"opset": opset} if fmt == "onnx" else {}),
        "imgcls_version": __version__, "model": meta["model"], "run": str(run_dir.resolve()),
        **pre.to_dict(), **input_facts(pre),
        "inputs": [{"name": INPUT_NAME, "datatype": "UINT8", "shape": [-1, c, s, s]}],
        "outputs": [{"name": n, "datatype": "FP32", "shape": [-1, len(pre.class_names)]}
                    for n in OUTPUT_NAMES],
        "parity": figures,
    })
    log(f"exported {out} ({fmt}); parity on {where}: top-1 agreement "
        f"{figures['top1_agreement']:.2%}, max |prob difference| "
        f"{figures['max_abs_prob_diff']:.2e}")
    return out
