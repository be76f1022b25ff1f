"""The model contract every imgcls model follows (after timm's ResNet):

``forward_features(x)`` returns the last feature map, ``forward_head(x, pre_logits=False)``
pools it and applies the classifier, ``reset_classifier(n)`` swaps the classifier for ``n``
classes. Transfer learning, feature extraction and freezing rely on nothing else.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ..errors import ConfigError


class ClassifierHead(nn.Module):
    """Pool (global average, max or flatten) -> optional hidden layers -> dropout -> ``fc``."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        pool: str = "avg",
        hidden: nn.Module | None = None,
        hidden_features: int | None = None,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        pools = {"avg": nn.AdaptiveAvgPool2d(1), "max": nn.AdaptiveMaxPool2d(1), "flatten": None}
        if pool not in pools:
            raise ValueError(f"pool must be one of {sorted(pools)}, got {pool!r}")
        self.pool = nn.Sequential(pools[pool], nn.Flatten(1)) if pools[pool] else nn.Flatten(1)
        self.hidden = hidden if hidden is not None else nn.Identity()
        self.num_features = hidden_features if hidden is not None else in_features
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc: nn.Module = nn.Linear(self.num_features, num_classes)

    def reset(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.hidden(self.pool(x)))
        return x if pre_logits else self.fc(x)


class ImgclsModel(nn.Module):
    """Base class of imgcls's own models.

    Subclasses set ``self.head`` (a :class:`ClassifierHead` or anything with ``reset`` and a
    ``fc`` attribute), ``num_classes``, ``channels``, ``num_features`` and ``first_conv`` (the
    dotted name of the stem convolution, used to adapt 3-channel weights to 1 channel), and
    implement :meth:`forward_features`.
    """

    first_conv: str = ""
    classifier: str = "head.fc"

    def __init__(self, num_classes: int, channels: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.channels = channels
        self.num_features = 0
        self.head: nn.Module

    @property
    def in_chans(self) -> int:
        """Deprecated: :attr:`channels` (the name is kept for one release)."""
        warnings.warn("a model's in_chans is now channels; in_chans will be removed",
                      DeprecationWarning, stacklevel=2)
        return self.channels

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialised one for ``num_classes`` classes."""
        self.head.reset(num_classes)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def feature_shape(features: nn.Module, channels: int, image_size: int) -> torch.Size:
    """Shape (C, H, W) that ``features`` produces for one input of ``image_size`` pixels."""
    with torch.no_grad():
        was_training = features.training
        features.eval()
        out = features(torch.zeros(1, channels, image_size, image_size))
        features.train(was_training)
    return out.shape[1:]


def check_image_size(model: nn.Module, channels: int, size: int, why: str) -> None:
    """ConfigError, saying ``why`` the size was asked for, when ``model`` cannot take inputs
    of ``size`` pixels (a head that flattens its feature map takes one size only)."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, channels, size, size))
    except RuntimeError as e:
        raise ConfigError(f"{why}: the model takes no {size}-pixel inputs ({e}); models with "
                         "global pooling (fastnet, resnet, ...) take any size") from e
    finally:
        model.train(was)
