"""``imgcls predict``: top-k labels and calibrated probabilities for image files.

Paths may be files, folders (searched recursively for image extensions) and glob patterns.
A file that cannot be decoded is reported with its reason and the rest are predicted.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
from pathlib import Path

import torch

from .data.images import IMAGE_EXTENSIONS, ImageDecodeError
from .engine.evaluate import predict_logits
from .engine.precision import eval_plan, resolve_device
from .errors import DataError
from .metrics import unknown_scores
from .preprocess import Preprocess
from .run import load_run_model

UNKNOWN = "unknown"


def expand_paths(paths: list[str]) -> list[Path]:
    """Files, folders (recursive, image extensions only) and globs, in order, deduplicated."""
    out: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            out += sorted(f for f in path.rglob("*")
                          if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
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
    """One record per file: ``top`` (label, probability) pairs, or ``error``."""
    records: list[dict] = []
    k = min(top_k, len(pre.class_names))
    for start in range(0, len(files), batch_size):
        chunk = files[start:start + batch_size]
        images, ok = [], []
        for f in chunk:
            try:
                images.append(pre.load_image(f))
                ok.append(f)
            except ImageDecodeError as e:
                records.append({"file": str(f), "error": str(e)})
        if not images:
            continue
        x = pre.normalize(torch.stack(images)).to(device)
        logits, _ = predict_logits(model, [(x, torch.zeros(len(x), dtype=torch.long))],
                                   eval_plan(device))
        probs = (logits / pre.temperature).softmax(1)
        top_p, top_i = probs.topk(k, 1)
        scores = unknown_scores(logits, score, pre.temperature)
        for j, f in enumerate(ok):
            rec = {"file": str(f),
                   "top": [(pre.class_names[i], round(float(p), 6))
                           for p, i in zip(top_p[j].tolist(), top_i[j].tolist())]}
            rec["label"] = rec["top"][0][0]
            if reject_below is not None and float(scores[j]) < reject_below:
                rec["label"] = UNKNOWN
            records.append(rec)
    order = {str(f): i for i, f in enumerate(files)}
    return sorted(records, key=lambda r: order[r["file"]])


def predict(run: str | os.PathLike, paths: list[str], *, top_k: int = 5, batch_size: int = 64,
            reject_below: float | None = None, score: str = "maxprob",
            device: str = "auto") -> list[dict]:
    """Predict every image under ``paths`` with the run's model and preprocessing."""
    device = resolve_device(device)
    model, pre, _ = load_run_model(run, device)
    files = expand_paths(paths)
    if not files:
        raise DataError(f"no image files under {' '.join(paths)}")
    return predict_files(model, pre, files, top_k=top_k, batch_size=batch_size,
                         reject_below=reject_below, score=score, device=device)


def to_csv(records: list[dict]) -> str:
    """``file,label,prob,top_k,error``: top_k as ``label:prob`` joined by ``|``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "label", "probability", "top_k", "error"])
    for r in records:
        if "error" in r:
            w.writerow([r["file"], "", "", "", r["error"]])
        else:
            w.writerow([r["file"], r["label"], r["top"][0][1],
                        "|".join(f"{lb}:{p:.6f}" for lb, p in r["top"]), ""])
    return buf.getvalue()


def to_json(records: list[dict]) -> str:
    return json.dumps(records, indent=1)
