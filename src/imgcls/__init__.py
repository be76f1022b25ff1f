"""imgcls: image classification from labelled images to a trained, evaluated, served model.

The names below are imported on first use, so that ``import imgcls.serve`` (or any one
part) does not load the rest: inference never imports the training code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import ConfigError, DataError, ImgclsError, ModelError, RunError

__version__ = "0.1.0"

_LAZY = {
    "Classifier": "api", "History": "api", "load": "api",
    "TrainConfig": "config",
    "evaluate": "evaluation",
    "create_model": "models", "list_models": "models",
    "predict": "prediction",
    "TrainResult": "training", "train": "training",
}

__all__ = [
    "Classifier", "ConfigError", "DataError", "History", "ImgclsError", "ModelError",
    "RunError", "TrainConfig", "TrainResult", "create_model", "evaluate", "list_models",
    "load", "predict", "train",
]

if TYPE_CHECKING:
    from .api import Classifier, History, load
    from .config import TrainConfig
    from .evaluation import evaluate
    from .models import create_model, list_models
    from .prediction import predict
    from .training import TrainResult, train


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'imgcls' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value
