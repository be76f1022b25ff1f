"""imgcls: image classification from labelled images to a trained, evaluated, served model."""

from .api import Classifier, History, load
from .config import TrainConfig
from .errors import ConfigError, DataError, ImgclsError, ModelError, RunError
from .evaluation import evaluate
from .models import create_model, list_models
from .pipeline import TrainResult, train
from .predict import predict

__version__ = "0.1.0"

__all__ = [
    "Classifier",
    "ConfigError",
    "DataError",
    "History",
    "ImgclsError",
    "ModelError",
    "RunError",
    "TrainConfig",
    "TrainResult",
    "create_model",
    "evaluate",
    "list_models",
    "load",
    "predict",
    "train",
]
