"""VGG (Simonyan & Zisserman 2015, "Very Deep Convolutional Networks"), configurations A/B/D/E
= VGG-11/13/16/19, each with or without BatchNorm (Ioffe & Szegedy 2015, as torchvision).

* ImageNet variant: the five conv stages, AdaptiveAvgPool(7) and the paper's 4096-4096 MLP
  head with dropout 0.5 (torchvision-equivalent: vgg16 has 138.36M parameters).
* Small-image variant (<= 64 px or ``variant="small"``), the usual CIFAR VGG: the same conv
  stages, then global average pooling and one Linear(512, num_classes).
* ``vgg_mini``: VGG sized for small images on a CPU: plain 3x3 conv-BN-ReLU stacks and 2x2
  max-pools as the paper, but one 32-channel conv at full resolution, then two convs per stage
  at 64/128/256 channels (28 px: 14/7/3 px maps). 0.06 GFLOPs at 28 px against vgg16_bn's 0.41.

In both, a max-pool is left out where the feature map would already be smaller than 2x2, so
that 28 px inputs work (28 -> 14 -> 7 -> 3 -> 1, the fifth pool skipped). The model is built for
``image_size``: it runs at that size and larger ones.
"""

from __future__ import annotations

import torch
from torch import nn

from ._registry import register_model
from .base import ClassifierHead, ImgclsModel
from .layers import init_conv_bn, is_small

# Output channels of the 3x3 convs, "M" a 2x2 max-pool (the paper's Table 1).
CFGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
          512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
    "mini": [32, "M", 64, 64, "M", 128, 128, "M", 256, 256],
}
_PAPER = "Simonyan & Zisserman 2015"


def make_features(cfg: list[int | str], channels: int, image_size: int, batch_norm: bool
                  ) -> nn.Sequential:
    """The conv stages of ``cfg``; pools that would shrink a map below 1x1 are skipped."""
    layers: list[nn.Module] = []
    size, ch = image_size, channels
    for v in cfg:
        if v == "M":
            if size >= 2:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            continue
        # Convs keep their bias even with BatchNorm, as torchvision (and its weights) do.
        layers.append(nn.Conv2d(ch, int(v), 3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(int(v)))
        layers.append(nn.ReLU(inplace=True))
        ch = int(v)
    return nn.Sequential(*layers)


class VGG(ImgclsModel):
    first_conv = "features.0"

    def __init__(
        self,
        cfg: list[int | str],
        *,
        num_classes: int,
        channels: int,
        image_size: int,
        batch_norm: bool,
        small: bool,
        drop_rate: float | None,
    ) -> None:
        super().__init__(num_classes, channels)
        self.features = make_features(cfg, channels, image_size, batch_norm)
        width = int([v for v in cfg if v != "M"][-1])
        if small:
            self.head = ClassifierHead(width, num_classes, drop_rate=drop_rate or 0.0)
        else:
            p = 0.5 if drop_rate is None else drop_rate
            hidden = nn.Sequential(
                nn.Linear(width * 7 * 7, 4096), nn.ReLU(inplace=True), nn.Dropout(p),
                nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            )
            self.head = ClassifierHead(
                width * 7 * 7, num_classes, pool="flatten", hidden=hidden,
                hidden_features=4096, drop_rate=p,
            )
            # The MLP expects a 7x7 map whatever the input size (torchvision's avgpool); it is
            # part of the head so that forward_features still returns the real last map.
            self.head.pool = nn.Sequential(nn.AdaptiveAvgPool2d(7), nn.Flatten(1))
        self.num_features = self.head.num_features
        init_conv_bn(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _vgg(cfg: str, batch_norm: bool, *, num_classes: int, channels: int, image_size: int,
         variant: str, drop_rate: float | None) -> VGG:
    return VGG(
        CFGS[cfg], num_classes=num_classes, channels=channels, image_size=image_size,
        batch_norm=batch_norm, small=is_small(image_size, variant), drop_rate=drop_rate,
    )


# Builders: ``drop_rate=None`` means the paper's 0.5 in the ImageNet MLP and none when small.
@register_model("vgg", paper=_PAPER, lr_scale=0.1)
def vgg11(*, num_classes: int = 1000, channels: int = 3, image_size: int = 224,
          variant: str = "auto", drop_rate: float | None = None) -> VGG:
    """VGG-11 (configuration A)."""
    return _vgg("A", False, num_classes=num_classes, channels=channels, image_size=image_size,
                variant=variant, drop_rate=drop_rate)


@register_model("vgg", paper=_PAPER)
def vgg11_bn(*, num_classes: int = 1000, channels: int = 3, image_size: int = 224,
             variant: str = "auto", drop_rate: float | None = None) -> VGG:
    """VGG-11 (configuration A) with BatchNorm."""
    return _vgg("A", True, num_classes=num_classes, channels=channels, image_size=image_size,
                variant=variant, drop_rate=drop_rate)


@register_model("vgg", paper=_PAPER, lr_scale=0.1)
def vgg13(*, num_classes: int = 1000, channels: int = 3, image_size: int = 224,
          variant: str = "auto", drop_rate: float | None = None) -> VGG:
    """VGG-13 (configuration B)."""
    return _vgg("B", False, num_classes=num_classes, channels=channels, image_size=image_size,
                variant=variant, drop_rate=drop_rate)


@register_model("vgg", paper=_PAPER)
def vgg13_bn(*, num_classes: int = 1000, channels: int = 3, image_size: int = 224,
             variant: str = "auto", drop_rate: float | None = None) -> VGG:
    """VGG-13 (configuration B) with BatchNorm."""
    return _vgg("B", True, num_classes=num_classes, channels=channels, image_size=image_size,
                variant=variant, drop_rate=drop_rate)


@register_model("vgg", paper=_PAPER, lr_scale=0.1)
def vgg16(*, num_classes: int = 1000, channels: int = 3, image_size: int = 224,
          variant: str = "auto", drop_rate: float | None = None) -> VGG:
    """VGG-16 (configuration D)."""
    return _vgg("D", False, num_classes=num_classes, channels=channels, image_size=image_size,
                variant=variant, drop_rate=drop_rate)


@register_model("vgg", paper=_PAPER, chosen_for="large")
def vgg16_bn(*, num_classes: int = 1000, channels: int = 3, image_size: int = 224,
             variant: str = "auto", drop_rate: float | None = None) -> VGG:
    """VGG-16 (configuration D) with BatchNorm."""
    return _vgg("D", True, num_classes=num_classes, channels=channels, image_size=image_size,
                variant=variant, drop_rate=drop_rate)


@register_model("vgg", paper=_PAPER, lr_scale=0.1)
def vgg19(*, num_classes: int = 1000, channels: int = 3, image_size: int = 224,
          variant: str = "auto", drop_rate: float | None = None) -> VGG:
    """VGG-19 (configuration E)."""
    return _vgg("E", False, num_classes=num_classes, channels=channels, image_size=image_size,
                variant=variant, drop_rate=drop_rate)


@register_model("vgg", paper=_PAPER)
def vgg19_bn(*, num_classes: int = 1000, channels: int = 3, image_size: int = 224,
             variant: str = "auto", drop_rate: float | None = None) -> VGG:
    """VGG-19 (configuration E) with BatchNorm."""
    return _vgg("E", True, num_classes=num_classes, channels=channels, image_size=image_size,
                variant=variant, drop_rate=drop_rate)


@register_model("vgg", default_image_size=32, paper=_PAPER + ", sized for small images",
                chosen_for="small")
def vgg_mini(*, num_classes: int = 10, channels: int = 3, image_size: int = 32,
             drop_rate: float = 0.0) -> VGG:
    """VGG for <= 64 px on a CPU: 32 | 64-64 | 128-128 | 256-256 with BatchNorm, global pool."""
    return VGG(CFGS["mini"], num_classes=num_classes, channels=channels, image_size=image_size,
               batch_norm=True, small=True, drop_rate=drop_rate)
