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

from .data.sources import folder_images
from .errors import DataError
from .metrics import unknown_scores
from .results import TOP_K, check_top_k, failure, prediction, ranked
from .run import load_run_model
from .runtime.forward import predict_logits
from .runtime.images import MAX_PIXELS, display_name
from .runtime.plan import eval_plan, resolve_device
from .runtime.preprocess import Preprocess
from .utils import former_keywords

UNKNOWN = "unknown"


PathsLike = str | os.PathLike | list[str | os.PathLike] | tuple[str | os.PathLike, ...]


def expand_paths(paths: PathsLike) -> list[Path]:
    """Files, folders (recursive, image extensions only) and globs, in order, deduplicated;
    ``paths`` is one path or a list of them."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    out: list[Path] = []
    for p in map(os.fspath, paths):
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


def ood_score_given(ood_score: str, score: str | None) -> str:
    """``ood_score``, or the former keyword ``score`` when a caller still gives it (with a
    DeprecationWarning: it is accepted for one release)."""
    _, given = former_keywords({} if score is None else {"score": score}, "predict", "score",
                               stacklevel=4)
    return given.get("ood_score", ood_score)


def predict_files(
    model: torch.nn.Module, pre: Preprocess, files: list[Path], *, top_k: int = TOP_K,
    batch_size: int = 64, reject_below: float | None = None, ood_score: str = "maxprob",
    device: str = "cpu", max_pixels: int = MAX_PIXELS,
) -> list[dict]:
    """One record per file (:mod:`imgcls.results`): ``file``, ``label``, ``probability`` and
    ``top_k``, or ``file`` and ``error`` (unreadable, or more than ``max_pixels``)."""
    top_k = check_top_k(top_k)
    records: list[dict] = []
    for start in range(0, len(files), batch_size):
        images, ok, bad = pre.load_readable(files[start:start + batch_size], max_pixels)
        records += [failure(display_name(f), reason) for f, reason in bad]
        if not images:
            continue
        x = pre.normalize(torch.stack(images)).to(device)
        logits, _ = predict_logits(model, [(x, torch.zeros(len(x), dtype=torch.long))],
                                   eval_plan(device))
        probs = pre.probabilities(logits)
        scores = unknown_scores(logits, ood_score, pre.temperature)
        tops = ranked(probs.cpu().numpy(), pre.class_names, top_k)
        for j, f in enumerate(ok):
            rejected = reject_below is not None and float(scores[j]) < reject_below
            records.append(prediction(display_name(f), tops[j], UNKNOWN if rejected else None))
    order = {display_name(f): i for i, f in enumerate(files)}
    return sorted(records, key=lambda r: order[r["file"]])


def image_files(paths: PathsLike) -> list[Path]:
    """:func:`expand_paths`, refusing paths that hold no image file at all."""
    files = expand_paths(paths)
    if not files:
        named = [paths] if isinstance(paths, str | os.PathLike) else paths
        raise DataError(f"no image files under {' '.join(map(os.fspath, named))}")
    return files


def predict(run: str | os.PathLike, paths: PathsLike, *, top_k: int = TOP_K,
            batch_size: int = 64, reject_below: float | None = None,
            ood_score: str = "maxprob", device: str = "auto", max_pixels: int = MAX_PIXELS,
            score: str | None = None) -> list[dict]:
    """Predict every image under ``paths`` (one path or a list of files, folders and glob
    patterns) with the run's model and preprocessing: one record per file,
    ``{"file", "label", "probability", "top_k": [{"label", "probability"}, ...]}`` or
    ``{"file", "error"}`` (:mod:`imgcls.results`)."""
    top_k = check_top_k(top_k)  # before the model is loaded
    ood_score = ood_score_given(ood_score, score)
    device = resolve_device(device)
    model, pre, _ = load_run_model(run, device)
    return predict_files(model, pre, image_files(paths), top_k=top_k, batch_size=batch_size,
                         reject_below=reject_below, ood_score=ood_score, device=device,
                         max_pixels=max_pixels)


def common_folder(files: list[str]) -> tuple[str, list[str]]:
    """The folder that all ``files`` share and each file's path relative to it: a table shows
    the part that tells the files apart instead of a long shared prefix."""
    if not files:
        return "", []
    absolute = [os.path.abspath(f) for f in files]
    try:
        root = os.path.commonpath([os.path.dirname(f) for f in absolute])
    except ValueError:  # paths on different drives share nothing
        return "", list(files)
    return root, [os.path.relpath(f, root) for f in absolute]


def print_table(records: list[dict]) -> None:
    """The predicted files of ``records`` as a table on the terminal: each file's path
    relative to the folder they share (named in the title), its label and probability, then
    the next most probable classes of its top k."""
    from rich.console import Console
    from rich.table import Table

    good = [r for r in records if "error" not in r]
    root, names = common_folder([r["file"] for r in good])
    t = Table(title=f"files under {root}" if root else None, title_justify="left")
    # folded, not cut with an ellipsis: the end of a path is what tells the files apart
    t.add_column("file", overflow="fold")
    t.add_column("label", overflow="fold")
    t.add_column("probability", justify="right")
    # the rest of the top k; all of it where the label is UNKNOWN (rejected)
    rest = [r["top_k"][r["label"] == r["top_k"][0]["label"]:] for r in good]
    if any(rest):
        t.add_column("next most probable", overflow="fold")
    for name, r, more in zip(names, good, rest):
        t.add_row(name, r["label"], f"{r['probability']:.3f}",
                  *([", ".join(f"{c['label']} {c['probability']:.3f}" for c in more)]
                    if any(rest) else []))
    Console().print(t)


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
