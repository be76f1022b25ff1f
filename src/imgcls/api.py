"""The Python API: ``imgcls.train``, ``imgcls.load`` and a Keras-like :class:`Classifier`.

The seed's Keras workflow maps one to one::

    clf = imgcls.Classifier("seed_keras_cnn")          # model = Sequential([...])
    history = clf.fit(x_train, y_train, epochs=5,       # model.compile(...); model.fit(...)
                      validation_split=0.1)
    clf.evaluate(x_test, y_test)                        # model.evaluate(...)
    clf.predict(x_test)                                 # model.predict(...)
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from .config import TrainConfig
from .data.dataset import ArrayDataset
from .data.prepare import make_loader
from .data.sources import Source
from .errors import DataError, RunError
from .metrics import basic_metrics
from .prediction import PathsLike, image_files, ood_score_given, predict_files
from .results import TOP_K
from .run import load_run_model
from .runtime.forward import predict_logits
from .runtime.images import ImageDecodeError, convert_channels, convert_image, resize_to
from .runtime.plan import eval_plan, resolve_device
from .runtime.preprocess import Preprocess

if TYPE_CHECKING:
    from .audit import AuditResult

__all__ = ["Classifier", "History", "load"]

# One image as a file path, its encoded bytes or a PIL image; a str or path may also be a
# folder or a glob pattern, as imgcls.predict takes them.
ONE_IMAGE = (str, os.PathLike, bytes, bytearray, Image.Image)
ImageInput = (np.ndarray | torch.Tensor | str | os.PathLike | bytes | Image.Image
              | list | tuple)


@dataclass
class History:
    """Per-epoch metrics as Keras returns them: ``history.history["val_accuracy"]``."""

    epoch: list[int] = field(default_factory=list)
    history: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def from_records(cls, records: list[dict]) -> History:
        names = {"train_loss": "loss", "train_top1": "accuracy", "val_loss": "val_loss",
                 "val_top1": "val_accuracy", "lr": "lr"}
        h = cls([r["epoch"] for r in records])
        for src, dst in names.items():
            if records and src in records[0]:
                h.history[dst] = [r[src] for r in records]
        return h


def as_uint8_images(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Arrays as Keras users hold them -> uint8 (N, C, H, W).

    (N, H, W) is grayscale; (N, H, W, 1|3) is channels-last (Keras); (N, 1|3, H, W) is
    channels-first. Floats with a maximum of at most 1 are taken as 0..1, others as 0..255.
    """
    t = x if isinstance(x, torch.Tensor) else _tensor(x)
    if t.dim() == 3:
        t = t[:, None]
    elif t.dim() == 4 and t.shape[-1] in (1, 3) and t.shape[1] not in (1, 3):
        t = t.permute(0, 3, 1, 2)
    elif t.dim() != 4 or t.shape[1] not in (1, 3):
        raise DataError(f"images must be (N,H,W), (N,H,W,C) or (N,C,H,W) with C 1 or 3, "
                        f"got shape {tuple(t.shape)}")
    if t.dtype != torch.uint8:
        t = t.float()
        if t.numel() and t.max() <= 1.0:
            t = t * 255
        t = t.round().clamp(0, 255).to(torch.uint8)
    return t.contiguous()


def _tensor(x: object) -> torch.Tensor:
    """``x`` as a tensor; a read-only array (``np.asarray`` of a PIL image, ``np.frombuffer``)
    is copied, since torch cannot share memory it may not write (and warns)."""
    a = np.asarray(x)
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def _image_items(x: object) -> list | None:
    """``x`` as a list of single images (files, encoded bytes, PIL images) with its folders
    and glob patterns expanded as :func:`imgcls.predict` expands them; None for arrays."""
    if isinstance(x, ONE_IMAGE):
        x = [x]
    if not (isinstance(x, list | tuple) and x and all(isinstance(v, ONE_IMAGE) for v in x)):
        return None
    items: list = []
    for v in x:
        items += image_files(v) if isinstance(v, str | os.PathLike) else [v]
    return items


def _label_names(y: object) -> np.ndarray | None:
    """``y`` as an array of str when its labels are class names, else None."""
    if isinstance(y, torch.Tensor):
        return None
    a = np.asarray(y)
    if a.dtype.kind in "US" or (a.dtype.kind == "O" and a.size
                                and all(isinstance(v, str | bytes) for v in a.ravel())):
        return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in a.ravel()]
                        ).reshape(a.shape)
    return None


def _labels(y: np.ndarray | torch.Tensor | list, n: int,
            classes: list[str] | None = None) -> torch.Tensor:
    """Labels as class indices (N,): integers, one-hot rows, or class names (looked up in
    ``classes``)."""
    names = _label_names(y)
    if names is not None:
        if names.shape != (n,):
            raise DataError(f"labels must have shape ({n},), got {names.shape}")
        index = {c: i for i, c in enumerate(classes or [])}
        unknown = sorted(set(names.tolist()) - index.keys())
        if unknown:
            raise DataError(f"labels {', '.join(map(repr, unknown[:5]))} are not among the "
                            f"classes {classes}")
        return torch.tensor([index[v] for v in names.tolist()], dtype=torch.long)
    try:
        t = y if isinstance(y, torch.Tensor) else _tensor(y)
    except (TypeError, ValueError):
        raise DataError("labels must be integers, one-hot rows or class names") from None
    if t.dim() == 2:  # one-hot, as keras.utils.to_categorical makes
        t = t.argmax(1)
    if t.shape != (n,):
        raise DataError(f"labels must have shape ({n},) or ({n}, classes), got {tuple(t.shape)}")
    if t.is_floating_point() and not torch.equal(t, t.round()):
        raise DataError("labels must be integers, one-hot rows or class names")
    t = t.long()
    if t.numel() and (t.min() < 0 or (classes and t.max() >= len(classes))):
        raise DataError(f"labels must lie in 0..{len(classes) - 1 if classes else 'classes'}, "
                        f"got {int(t.min())}..{int(t.max())}")
    return t


class Classifier:
    """A model with its preprocessing: ``fit`` / ``evaluate`` / ``predict`` on arrays or files.

    Built from a model name (weights created on the first ``fit``) or loaded from a run with
    :func:`load`.
    """

    def __init__(self, model: str = "seed_torch_cnn", **config: object) -> None:
        self.config = TrainConfig(model=model, **config)
        self.model: torch.nn.Module | None = None
        self.preprocess: Preprocess | None = None
        self.run_path: Path | None = None

    @classmethod
    def from_run(cls, path: str | os.PathLike, device: str = "cpu") -> Classifier:
        model, pre, meta = load_run_model(path, device)
        clf = cls(meta["model"], model_kwargs=meta.get("model_kwargs", {}))
        clf.model, clf.preprocess = model, pre
        clf.run_path = Path(path)
        return clf

    @property
    def classes(self) -> list[str]:
        return self.preprocess.class_names if self.preprocess else []

    def fit(self, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor | list, *,
            epochs: int = 10, batch_size: int = 128, validation_split: float = 0.0,
            validation_data: tuple | None = None, class_names: list[str] | None = None,
            out: str = "runs", verbose: bool = True, **config: object) -> History:
        """Train on in-memory images (any layout :func:`as_uint8_images` takes) and labels
        (integers, one-hot rows or class names such as ``np.array(["cat", "dog", ...])``);
        writes a run folder under ``out`` like ``imgcls train`` and keeps the best weights.

        ``class_names`` default to the sorted distinct names of string labels, else "0",
        "1", ... A second ``fit`` (or a ``fit`` after :func:`load`) continues from the current
        weights, as Keras does: it trains with ``pretrained=<the current run folder>`` (the
        weights of the same shape are loaded; the optimizer and the learning-rate schedule
        start afresh) and writes a new run folder, which becomes :attr:`run_path`. Its classes
        stay the current ones when the new labels are among them; pass ``pretrained=None``
        to start from scratch."""
        images = as_uint8_images(x)
        val_x = as_uint8_images(validation_data[0]) if validation_data is not None else None
        ys = [y] + ([validation_data[1]] if validation_data is not None else [])
        classes = list(class_names) if class_names else self._fit_classes(
            ys, [len(images)] + ([len(val_x)] if val_x is not None else []))
        train_ds = ArrayDataset(images, _labels(y, len(images), classes), classes)
        val_ds = (ArrayDataset(val_x, _labels(validation_data[1], len(val_x), classes), classes)
                  if val_x is not None else None)
        if self.run_path is not None and "pretrained" not in config:
            config["pretrained"] = str(self.run_path)  # continue from the current weights
        cfg = self.config.replace(epochs=epochs, batch_size=batch_size, out=out,
                                  val_split=validation_split if val_ds is None else 0.0,
                                  data="arrays", **config)
        source = Source("arrays", train_ds, None, val_ds)
        from .training import train  # training code only when training

        result = train(cfg, log=print if verbose else (lambda _: None), source=source)
        self.model, self.preprocess, _ = load_run_model(result.path)
        self.run_path = result.path
        return History.from_records(result.history)

    def _fit_classes(self, ys: list, sizes: list[int]) -> list[str]:
        """The class names of a ``fit`` without ``class_names``: the current ones when this
        classifier has weights and the labels fit them, else the sorted distinct names of
        string labels, else "0", "1", ... up to the largest integer label."""
        current = self.classes if self.run_path is not None else []
        names = [_label_names(y) for y in ys]
        if any(n is not None for n in names):
            if not all(n is not None for n in names):
                raise DataError("training and validation labels must both be class names or "
                                "both be integers")
            found = sorted(set().union(*(set(n.ravel().tolist()) for n in names)))
            return current if current and set(found) <= set(current) else found
        n_classes = max(int(_labels(y, n).max()) + 1 for y, n in zip(ys, sizes))
        return current if len(current) >= n_classes else [str(i) for i in range(n_classes)]

    def _require(self) -> tuple[torch.nn.Module, Preprocess]:
        if self.model is None or self.preprocess is None:
            raise RuntimeError("the classifier has no weights yet: call fit() or imgcls.load()")
        return self.model, self.preprocess

    def _input(self, x: ImageInput, strict: bool = True
               ) -> tuple[torch.Tensor, list[tuple[int, str]]]:
        """uint8 (N, C, S, S) of the images of ``x`` that can be read, and (position, reason)
        of those that cannot: with ``strict`` the first one raises instead."""
        _, pre = self._require()
        items = _image_items(x)
        if items is None:  # arrays
            images = convert_channels(as_uint8_images(x), pre.channels)
            return resize_to(images, pre.image_size, pre.resize), []
        good, bad = [], []
        for i, item in enumerate(items):
            try:
                good.append(resize_to(convert_image(item, pre.channels), pre.image_size,
                                      pre.resize) if isinstance(item, Image.Image)
                            else pre.load_image(item))
            except ImageDecodeError as e:
                if strict:
                    raise
                bad.append((i, str(e)))
        empty = torch.zeros(0, pre.channels, pre.image_size, pre.image_size, dtype=torch.uint8)
        return (torch.stack(good) if good else empty), bad

    def _logits(self, images: torch.Tensor, y: torch.Tensor | None, batch_size: int,
                tta: bool | str) -> tuple[torch.Tensor, torch.Tensor]:
        model, pre = self._require()
        device = next(model.parameters()).device
        ds = ArrayDataset(images, y if y is not None else torch.zeros(len(images),
                                                                       dtype=torch.long),
                          pre.class_names)
        plan = eval_plan(str(device))
        loader = make_loader(ds, pre, train=False, batch_size=batch_size, **plan.placement)
        return predict_logits(model, loader, plan, tta=tta)

    def evaluate(self, x: ImageInput, y: np.ndarray | torch.Tensor | list, *,
                 batch_size: int = 256, tta: bool | str = False) -> dict[str, float]:
        """``{"loss", "top1", "top5", "n"}`` (the keys of every imgcls result) on images ``x``
        (arrays, or images as :meth:`predict` takes them; one that cannot be read raises)
        with labels ``y`` (integers, one-hot rows or names of :attr:`classes`); ``tta``:
        False, "flip" (or True) or "shift" (:func:`imgcls.runtime.forward.tta_views`)."""
        images, _ = self._input(x)
        labels = _labels(y, len(images), self.classes)
        logits, labels = self._logits(images, labels, batch_size, tta)
        return basic_metrics(logits, labels)

    def predict(self, x: ImageInput, *, batch_size: int = 256,
                tta: bool | str = False) -> np.ndarray:
        """Class probabilities (N, classes), columns in the order of :attr:`classes`, one row
        per image: of an array batch, of one image (a file, its bytes or a PIL image of any
        mode: N is 1) or of a list of them, where a folder or glob pattern stands for its
        image files in :func:`imgcls.predict`'s order. An image that cannot be read gets a
        row of NaN and one warning names each with its reason (:meth:`predict_files` gives
        per-file records instead); ``tta`` as in :meth:`evaluate`."""
        _, pre = self._require()
        images, bad = self._input(x, strict=False)
        probs = np.full((len(images) + len(bad), len(self.classes)), np.nan, np.float32)
        if len(images):
            logits, _ = self._logits(images, None, batch_size, tta)
            ok = np.ones(len(probs), bool)
            ok[[i for i, _ in bad]] = False
            probs[ok] = pre.probabilities(logits).numpy()
        if bad:
            warnings.warn(f"{len(bad)} image(s) could not be read, their rows are NaN: "
                          + "; ".join(reason for _, reason in bad), stacklevel=2)
        return probs

    def predict_files(self, paths: PathsLike, *, top_k: int = TOP_K, batch_size: int = 64,
                      reject_below: float | None = None, ood_score: str = "maxprob",
                      score: str | None = None) -> list[dict]:
        """One record per image file under ``paths`` (files, folders, glob patterns), as
        :func:`imgcls.predict` gives them: ``{"file", "label", "probability", "top_k"}``,
        or ``{"file", "error"}`` for a file that cannot be read."""
        model, pre = self._require()
        return predict_files(model, pre, image_files(paths), top_k=top_k,
                             batch_size=batch_size, reject_below=reject_below,
                             ood_score=ood_score_given(ood_score, score),
                             device=str(next(model.parameters()).device))

    def audit(self, **kwargs: object) -> AuditResult:
        """Audit the data of the run this classifier was loaded from (or trained into):
        mislabelled images, duplicates, train/test leaks and outliers, written to
        ``RUN/audit/audit.csv`` and the report (:func:`imgcls.audit.audit`, whose keyword
        arguments it passes on)."""
        if self.run_path is None:
            raise RunError("this classifier has no run folder to audit: imgcls.load(RUN) "
                           "one, or fit it first")
        from .audit import audit

        run = self.run_path if self.run_path.is_dir() else self.run_path.parent
        return audit(run, **kwargs)  # type: ignore[arg-type]


def load(path: str | os.PathLike, device: str = "auto") -> Classifier:
    """Load a finished run (or its ``model.safetensors``) as a :class:`Classifier`."""
    return Classifier.from_run(path, resolve_device(device))
