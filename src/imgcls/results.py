"""The one shape of a classification answer per image, shared by ``imgcls predict`` (JSON and
CSV), :func:`imgcls.predict` and the server's ``/predict``::

    {"file": "a.png", "label": "zero", "probability": 0.94,
     "top_k": [{"label": "zero", "probability": 0.94}, {"label": "nine", "probability": 0.02}]}

``top_k`` holds the k most probable classes, best first (ties: the lower class index first);
``probability`` is the best class's calibrated probability (``top_k[0]``) and ``label`` its
name, or ``unknown`` where an open-set threshold rejected the image. A file that cannot be
read is ``{"file": ..., "error": reason}``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DECIMALS = 6  # probabilities are rounded to this many decimals


def top_k(probs: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest probabilities per row, best first (ties: lower index)."""
    return np.argsort(-probs, axis=1, kind="stable")[:, :k]


def ranked(probs: np.ndarray, class_names: Sequence[str], k: int) -> list[list[dict]]:
    """Per row of ``probs`` (N, classes): its ``k`` best ``{"label", "probability"}``."""
    probs = np.asarray(probs, dtype=np.float64)
    idx = top_k(probs, min(k, probs.shape[1]))
    return [[{"label": class_names[j] if j < len(class_names) else str(j),
              "probability": round(float(probs[i, j]), DECIMALS)} for j in row]
            for i, row in enumerate(idx)]


def prediction(file: str, top: list[dict], label: str | None = None) -> dict:
    """The record of a classified file from its ranked classes (``label`` overrides the best
    class's name, e.g. with ``unknown``)."""
    return {"file": file, "label": top[0]["label"] if label is None else label,
            "probability": top[0]["probability"], "top_k": top}


def failure(file: str, error: str) -> dict:
    """The record of a file that could not be read."""
    return {"file": file, "error": error}
