"""``imgcls predict``: top-k labels and calibrated probabilities for image files.

Paths may be files, folders (searched as a training folder is: image extensions, links
followed without loops, OS litter left out) and glob patterns.
A file that cannot be decoded is reported with its reason and the rest are predicted. Each
file's record has the shape of :mod:`imgcls.results`, as the API and the server's
``/predict`` answer it.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
from pathlib import Path

import torch

from .data.images import ImageDecodeError, display_name
from .data.sources import folder_images
from .engine.evaluate import predict_logits
from .engine.precision import eval_plan, resolve_device
from .errors import DataError
from .metrics import unknown_scores
from .preprocess import Preprocess
from .results import failure, prediction, ranked
from .run import load_run_model

UNKNOWN = "unknown"


def expand_paths(paths: list[str]) -> list[Path]:
    """Files, folders (recursive, image extensions only) and globs, in order, deduplicated."""
    out: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            out += folder_images(path)
        elif path.exists():
            out.append(path)
        elif any(c in p for c in "*?["):
            out += sorted(Path(f) for f in glob.glob(p, recursive=True) if Path(f).is_file())
        else:
            raise DataError(f"{p}: no such file, folder or matching pattern")
    seen: set[Path] = set()
    return [p for p in out if not (p in seen or seen.add(p))]


def predict_files(
    model: torch.nn.Module, pre: Preprocess, files: list[Path], *, top_k: int = 5,
    batch_size: int = 64, reject_below: float | None = None, score: str = "maxprob",
    device: str = "cpu",
) -> list[dict]:
    """One record per file (:mod:`imgcls.results`): ``file``, ``label``, ``probability`` and
    ``top_k``, or ``file`` and ``error``."""
    records: list[dict] = []
    for start in range(0, len(files), batch_size):
        chunk = files[start:start + batch_size]
        images, ok = [], []
        for f in chunk:
            try:
                images.append(pre.load_image(f))
                ok.append(f)
            except ImageDecodeError as e:
                records.append(failure(display_name(f), str(e)))
        if not images:
            continue
        x = pre.normalize(torch.stack(images)).to(device)
        logits, _ = predict_logits(model, [(x, torch.zeros(len(x), dtype=torch.long))],
                                   eval_plan(device))
        probs = (logits / pre.temperature).softmax(1)
        scores = unknown_scores(logits, score, pre.temperature)
        tops = ranked(probs.cpu().numpy(), pre.class_names, top_k)
        for j, f in enumerate(ok):
            rejected = reject_below is not None and float(scores[j]) < reject_below
            records.append(prediction(display_name(f), tops[j], UNKNOWN if rejected else None))
    order = {display_name(f): i for i, f in enumerate(files)}
    return sorted(records, key=lambda r: order[r["file"]])


def predict(run: str | os.PathLike, paths: str | os.PathLike | list[str | os.PathLike], *,
            top_k: int = 5, batch_size: int = 64, reject_below: float | None = None,
            score: str = "maxprob", device: str = "auto") -> list[dict]:
    """Predict every image under ``paths`` (one path or a list of files, folders and glob
    patterns) with the run's model and preprocessing: one record per file,
    ``{"file", "label", "probability", "top_k": [{"label", "probability"}, ...]}`` or
    ``{"file", "error"}`` (:mod:`imgcls.results`)."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    paths = [os.fspath(p) for p in paths]
    device = resolve_device(device)
    model, pre, _ = load_run_model(run, device)
    files = expand_paths(paths)
    if not files:
        raise DataError(f"no image files under {' '.join(paths)}")
    return predict_files(model, pre, files, top_k=top_k, batch_size=batch_size,
                         reject_below=reject_below, score=score, device=device)


def to_csv(records: list[dict]) -> str:
    """Columns ``file,label,probability,top_k,error``; ``top_k`` holds the record's JSON list
    of ``{"label", "probability"}``; an unreadable file has only ``file`` and ``error``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "label", "probability", "top_k", "error"])
    for r in records:
        if "error" in r:
            w.writerow([r["file"], "", "", "", r["error"]])
        else:
            w.writerow([r["file"], r["label"], r["probability"],
                        json.dumps(r["top_k"], ensure_ascii=False), ""])
    return buf.getvalue()


def to_json(records: list[dict]) -> str:
    return json.dumps(records, indent=1, ensure_ascii=False)
