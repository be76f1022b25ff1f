"""Model registry: builders are plain functions registered by name (timm/torchvision style).

A builder has the signature ``name(*, num_classes, channels, image_size, **kw) -> nn.Module``
and returns a module that follows the :class:`imgcls.models.base.ImgclsModel` contract.
``list_models`` and ``create_model`` are the only entry points the rest of imgcls uses.
"""

from __future__ import annotations

import fnmatch
import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from ..errors import ModelError
from ..utils import former_keywords, no_other_keywords
from .layers import SMALL_INPUT, is_small


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows of a model without building it."""

    name: str
    family: str
    builder: Callable[..., nn.Module]
    default_image_size: int
    paper: str = ""
    # multiplies the default SGD learning rate: networks without normalisation layers
    # (VGG without BatchNorm, SqueezeNet) lose their ReLUs at the rate BatchNorm nets take
    lr_scale: float = 1.0
    # training-config defaults the model wants, {key: (value, reason)}: applied to the keys
    # a run leaves open, below anything given (keys of defaults.RECIPE_KEYS)
    recipe: dict[str, tuple[object, str]] = field(default_factory=dict, hash=False)
    # "small": the family's model for ``--model <family>`` at 64 px and below; "large":
    # above; "": not chosen by family name
    chosen_for: str = ""



_REGISTRY: dict[str, ModelInfo] = {}
# Names handled by other libraries' factories ("timm/resnet50", "tv/resnet18").
_EXTERNAL_PREFIXES = ("timm/", "tv/")


def register_model(
    family: str, *, default_image_size: int = 224, paper: str = "", lr_scale: float = 1.0,
    recipe: dict[str, tuple[object, str]] | None = None, chosen_for: str = "", **former: int,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that registers a builder under its function name; duplicates are an error.
    (``default_input_size``: the former name of ``default_image_size``.)"""
    unknown, given = former_keywords(former, "register_model", "default_input_size")
    no_other_keywords(unknown, "register_model")
    default_image_size = given.get("default_image_size", default_image_size)

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _REGISTRY:
            raise RuntimeError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelInfo(name, family, fn, default_image_size, paper, lr_scale,
                                    dict(recipe or {}), chosen_for)
        return fn

    return wrap


def _ensure_loaded() -> None:
    # Importing the package registers every family; done lazily so that the registry module
    # itself has no import cycle with the family files.
    from . import families  # noqa: F401


def list_models(pattern: str | None = None, family: str | None = None) -> list[str]:
    """Registered model names, sorted, optionally filtered by glob patterns of the name and
    of the family."""
    _ensure_loaded()
    names = sorted(_REGISTRY)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    if family:
        names = [n for n in names if fnmatch.fnmatch(_REGISTRY[n].family, family)]
    return names


def list_families() -> list[str]:
    """The families that have at least one registered model."""
    _ensure_loaded()
    return sorted({info.family for info in _REGISTRY.values()})


def family_model(family: str, image_size: int) -> str | None:
    """The model that the family name ``family`` stands for at ``image_size`` px: its
    small-image model at 64 px and below, its paper model above (the small one where the
    family has no other); None when ``family`` is no family name."""
    _ensure_loaded()
    picks = {info.chosen_for: name for name, info in _REGISTRY.items()
             if info.family == family and info.chosen_for}
    if not picks:
        return None
    want = "small" if is_small(image_size, "auto") else "large"
    return picks.get(want) or picks["small" if want == "large" else "large"]


def model_info(name: str) -> ModelInfo:
    """Registry entry of ``name``; a clear error with close matches if it is unknown."""
    _ensure_loaded()
    if name not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ModelError(
            f"unknown model {name!r}.{hint} `imgcls models` lists them (a family name, e.g. "
            "resnet, trains the family's model for the input size); timm and torchvision "
            "models are named timm/<name> and tv/<name>."
        )
    return _REGISTRY[name]


def is_external(name: str) -> bool:
    """True for names created by another library's factory (``timm/...``, ``tv/...``)."""
    return name.startswith(_EXTERNAL_PREFIXES)


def create_model(
    name: str,
    *,
    num_classes: int,
    channels: int = 3,
    image_size: int | None = None,
    **kwargs: object,
) -> nn.Module:
    """Build model ``name`` for ``num_classes`` outputs, ``channels`` input channels and
    square inputs of ``image_size`` pixels (the registry's default when None). The former
    keywords ``in_chans`` and ``input_size`` are accepted, with a DeprecationWarning."""
    kwargs, given = former_keywords(kwargs, "create_model", "in_chans", "input_size")
    channels, image_size = given.get("channels", channels), given.get("image_size", image_size)
    if channels not in (1, 3):
        raise ModelError(f"channels must be 1 or 3, got {channels}")
    if num_classes < 1:
        raise ModelError(f"num_classes must be at least 1, got {num_classes}")
    if is_external(name):
        from .external import create_external

        return create_external(
            name, num_classes=num_classes, channels=channels, image_size=image_size, **kwargs
        )
    if name not in _REGISTRY and (pick := family_model(name, image_size or SMALL_INPUT)):
        name = pick
    info = model_info(name)
    size = image_size or info.default_image_size
    try:
        return _build(info.builder, num_classes=num_classes, channels=channels, image_size=size,
                      **kwargs)
    except (TypeError, ValueError) as e:
        raise ModelError(f"cannot build {name!r} at {size}px with options {kwargs}: {e}") from e


def _build(builder: Callable[..., nn.Module], **kw: object) -> nn.Module:
    """``builder(**kw)``; a builder written for the former keywords (``in_chans``,
    ``input_size``) gets those, with a DeprecationWarning."""
    params = inspect.signature(builder).parameters
    if "channels" not in params and "in_chans" in params:
        warnings.warn(f"model builder {builder.__name__}: its keywords in_chans and input_size "
                      "are now channels and image_size; the former will be removed",
                      DeprecationWarning, stacklevel=3)
        kw["in_chans"], kw["input_size"] = kw.pop("channels"), kw.pop("image_size")
    return builder(**kw)
