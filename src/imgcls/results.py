"""The one shape of a classification answer per image, shared by ``imgcls predict`` (JSON and
CSV), :func:`imgcls.predict` and the server's ``/predict``::

    {"file": "a.png", "label": "zero", "probability": 0.94,
     "top_k": [{"label": "zero", "probability": 0.94}, {"label": "nine", "probability": 0.02}]}

``top_k`` holds the k most probable classes (:data:`TOP_K` unless asked otherwise; every class
when k exceeds their number), best first (ties: the lower class index first);
``probability`` is the best class's calibrated probability (``top_k[0]``) and ``label`` its
name, or ``unknown`` where an open-set threshold rejected the image. A file that cannot be
read is ``{"file": ..., "error": reason}``.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

DECIMALS = 6  # probabilities are rounded to this many decimals
TOP_K = 5  # classes per image by default: the CLI, the API and the server's /predict alike


def check_top_k(k: int, name: str = "top_k") -> int:
    """``k`` when it is a whole number of at least 1; a ConfigError naming ``name`` otherwise.
    A k above the number of classes is allowed: :func:`ranked` then gives every class."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ConfigError(f"{name} must be a whole number of at least 1, got {k!r}")
    return int(k)


def top_k(probs: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest probabilities per row, best first (ties: lower index)."""
    import numpy as np  # on use: the command line reads TOP_K while it builds its parser

    return np.argsort(-probs, axis=1, kind="stable")[:, :k]


def ranked(probs: np.ndarray, class_names: Sequence[str], k: int) -> list[list[dict]]:
    """Per row of ``probs`` (N, classes): its ``k`` best ``{"label", "probability"}``."""
    import numpy as np

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
