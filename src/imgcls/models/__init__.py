"""Model zoo: registry, factory and the families."""

from ._registry import (
    ModelInfo,
    create_model,
    family_model,
    is_external,
    list_families,
    list_models,
    model_info,
    register_model,
)
from .base import ClassifierHead, ImgclsModel

__all__ = [
    "ClassifierHead",
    "ImgclsModel",
    "ModelInfo",
    "create_model",
    "family_model",
    "is_external",
    "list_families",
    "list_models",
    "model_info",
    "register_model",
]
