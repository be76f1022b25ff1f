"""Inception networks.

* ``googlenet``: Inception-v1 (Szegedy et al. 2014) with BatchNorm after every conv as in
  torchvision. Unlike torchvision (pytorch/vision#906) the "5x5" branch really uses 5x5 convs,
  as in the paper. Small variant (Kuang Liu's CIFAR GoogLeNet): a single 3x3 stride-1 conv to
  192 channels replaces the stem and its two max-pools.
* ``googlenet_mini``: GoogLeNet sized for small images on a CPU: the same nine Inception
  modules (four parallel branches, the paper's widths x 1/4, at least 8 channels) after a 3x3
  16-channel conv at full resolution, a 2x2 max-pool and a 3x3 48-channel conv (28 px: modules
  at 14/7/4 px); 0.04 GFLOPs at 28 px against the small-variant googlenet's 2.2.
* ``inception_v3``: Inception-v3 (Szegedy et al. 2016), module for module as torchvision's
  (BN eps 1e-3). Small variant: the five stem convs keep their kernels and widths but use
  stride 1 and 'same' padding, and the two stem max-pools are dropped, so the Inception
  blocks see the full input (28 px -> 28/13/6 px maps at Mixed_5/6/7).

Neither model has auxiliary classifiers: they only help training from scratch at ImageNet
scale, and the model contract has a single output.
"""

from __future__ import annotations

import torch
from torch import nn

from ._registry import register_model
from .base import ClassifierHead, ImgclsModel
from .layers import ConvBNAct, init_conv_bn, is_small


def _bn_eps(module: nn.Module, eps: float = 1e-3) -> None:
    # torchvision's BasicConv2d uses eps=1e-3; matching it keeps its weights usable.
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = eps


def _cat(branches: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([b(x) for b in branches], 1)


class InceptionModule(nn.Module):
    """Inception-v1 module: 1x1 | 1x1-3x3 | 1x1-5x5 | maxpool-1x1 (pool projection)."""

    def __init__(
        self, in_ch: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, pool_proj: int
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList([
            ConvBNAct(in_ch, c1, 1),
            nn.Sequential(ConvBNAct(in_ch, c3r, 1), ConvBNAct(c3r, c3, 3)),
            nn.Sequential(ConvBNAct(in_ch, c5r, 1), ConvBNAct(c5r, c5, 5)),
            nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), ConvBNAct(in_ch, pool_proj, 1)),
        ])
        self.out_ch = c1 + c3 + c5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _cat(self.branches, x)


# GoogLeNet body (paper Table 1, 3a..5b): module widths, "M" = 3x3/2 max-pool, "M2" = 2x2/2.
_GOOGLENET_CFG: list[tuple[int, ...] | str] = [
    (64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), "M",
    (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
    (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128), "M2",
    (256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128),
]


class GoogLeNet(ImgclsModel):
    first_conv = "stem.0.0"

    def __init__(
        self, *, num_classes: int, channels: int, stem: str, drop_rate: float, width: float = 1.0
    ) -> None:
        super().__init__(num_classes, channels)
        ch = round(192 * width)
        if stem == "mini":
            self.stem = nn.Sequential(ConvBNAct(channels, 16, 3), nn.MaxPool2d(2),
                                      ConvBNAct(16, ch, 3))
        elif stem == "small":
            self.stem = nn.Sequential(ConvBNAct(channels, 192, 3))
        else:
            self.stem = nn.Sequential(
                ConvBNAct(channels, 64, 7, 2), nn.MaxPool2d(3, 2, ceil_mode=True),
                ConvBNAct(64, 64, 1), ConvBNAct(64, 192, 3), nn.MaxPool2d(3, 2, ceil_mode=True),
            )
        layers: list[nn.Module] = []
        for c in _GOOGLENET_CFG:
            if c == "M":
                layers.append(nn.MaxPool2d(3, 2, ceil_mode=True))
            elif c == "M2":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            else:
                layers.append(InceptionModule(ch, *(max(8, round(w * width)) for w in c)))
                ch = layers[-1].out_ch
        self.blocks = nn.Sequential(*layers)
        self.num_features = ch
        self.head = ClassifierHead(ch, num_classes, drop_rate=drop_rate)
        init_conv_bn(self)
        _bn_eps(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))


class InceptionA(nn.Module):
    """35x35 module (Figure 5): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""

    def __init__(self, in_ch: int, pool_features: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList([
            ConvBNAct(in_ch, 64, 1),
            nn.Sequential(ConvBNAct(in_ch, 48, 1), ConvBNAct(48, 64, 5)),
            nn.Sequential(ConvBNAct(in_ch, 64, 1), ConvBNAct(64, 96, 3), ConvBNAct(96, 96, 3)),
            nn.Sequential(nn.AvgPool2d(3, 1, 1), ConvBNAct(in_ch, pool_features, 1)),
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _cat(self.branches, x)


class InceptionB(nn.Module):
    """35 -> 17 grid reduction: 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2 (valid padding)."""

    def __init__(self, in_ch: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList([
            ConvBNAct(in_ch, 384, 3, 2, padding=0),
            nn.Sequential(
                ConvBNAct(in_ch, 64, 1), ConvBNAct(64, 96, 3), ConvBNAct(96, 96, 3, 2, padding=0)
            ),
            nn.MaxPool2d(3, 2),
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _cat(self.branches, x)


class InceptionC(nn.Module):
    """17x17 module with factorised 7x7 convs (Figure 6); ``c7`` is the inner width."""

    def __init__(self, in_ch: int, c7: int) -> None:
        super().__init__()
        h, v = (1, 7), (7, 1)
        self.branches = nn.ModuleList([
            ConvBNAct(in_ch, 192, 1),
            nn.Sequential(ConvBNAct(in_ch, c7, 1), ConvBNAct(c7, c7, h), ConvBNAct(c7, 192, v)),
            nn.Sequential(
                ConvBNAct(in_ch, c7, 1), ConvBNAct(c7, c7, v), ConvBNAct(c7, c7, h),
                ConvBNAct(c7, c7, v), ConvBNAct(c7, 192, h),
            ),
            nn.Sequential(nn.AvgPool2d(3, 1, 1), ConvBNAct(in_ch, 192, 1)),
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _cat(self.branches, x)


class InceptionD(nn.Module):
    """17 -> 8 grid reduction: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2 (valid padding)."""

    def __init__(self, in_ch: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList([
            nn.Sequential(ConvBNAct(in_ch, 192, 1), ConvBNAct(192, 320, 3, 2, padding=0)),
            nn.Sequential(
                ConvBNAct(in_ch, 192, 1), ConvBNAct(192, 192, (1, 7)),
                ConvBNAct(192, 192, (7, 1)), ConvBNAct(192, 192, 3, 2, padding=0),
            ),
            nn.MaxPool2d(3, 2),
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _cat(self.branches, x)


class InceptionE(nn.Module):
    """8x8 module with expanded 1x3/3x1 filter banks (Figure 7)."""

    def __init__(self, in_ch: int) -> None:
        super().__init__()
        self.b1 = ConvBNAct(in_ch, 320, 1)
        self.b3 = ConvBNAct(in_ch, 384, 1)
        self.b3a, self.b3b = ConvBNAct(384, 384, (1, 3)), ConvBNAct(384, 384, (3, 1))
        self.bd = nn.Sequential(ConvBNAct(in_ch, 448, 1), ConvBNAct(448, 384, 3))
        self.bda, self.bdb = ConvBNAct(384, 384, (1, 3)), ConvBNAct(384, 384, (3, 1))
        self.pool = nn.Sequential(nn.AvgPool2d(3, 1, 1), ConvBNAct(in_ch, 192, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3, bd = self.b3(x), self.bd(x)
        return torch.cat(
            [self.b1(x), self.b3a(b3), self.b3b(b3), self.bda(bd), self.bdb(bd), self.pool(x)], 1
        )


class InceptionV3(ImgclsModel):
    first_conv = "stem.0.0"

    def __init__(
        self, *, num_classes: int, channels: int, small: bool, drop_rate: float
    ) -> None:
        super().__init__(num_classes, channels)
        if small:  # same convs, stride 1 and 'same' padding, no max-pools
            self.stem = nn.Sequential(
                ConvBNAct(channels, 32, 3), ConvBNAct(32, 32, 3), ConvBNAct(32, 64, 3),
                ConvBNAct(64, 80, 1), ConvBNAct(80, 192, 3),
            )
        else:  # 299 -> 35 px
            self.stem = nn.Sequential(
                ConvBNAct(channels, 32, 3, 2, padding=0), ConvBNAct(32, 32, 3, padding=0),
                ConvBNAct(32, 64, 3), nn.MaxPool2d(3, 2),
                ConvBNAct(64, 80, 1), ConvBNAct(80, 192, 3, padding=0), nn.MaxPool2d(3, 2),
            )
        self.blocks = nn.Sequential(
            InceptionA(192, 32), InceptionA(256, 64), InceptionA(288, 64),  # Mixed_5b-d
            InceptionB(288),  # Mixed_6a
            InceptionC(768, 128), InceptionC(768, 160), InceptionC(768, 160),
            InceptionC(768, 192),  # Mixed_6b-e
            InceptionD(768),  # Mixed_7a
            InceptionE(1280), InceptionE(2048),  # Mixed_7b-c
        )
        self.num_features = 2048
        self.head = ClassifierHead(2048, num_classes, drop_rate=drop_rate)
        init_conv_bn(self)
        _bn_eps(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))


@register_model("inception", default_image_size=224, paper="Szegedy et al. 2014 (+BN)",
                chosen_for="large")
def googlenet(
    *, num_classes: int = 1000, channels: int = 3, image_size: int = 224, variant: str = "auto",
    drop_rate: float = 0.4,
) -> GoogLeNet:
    """GoogLeNet / Inception-v1 with BatchNorm, no auxiliary classifiers (dropout 0.4: Table 1)."""
    small = is_small(image_size, variant)
    if not small and image_size < 15:  # the stride-2 stem conv and 4 pools need this much
        raise ValueError(f"googlenet (imagenet variant) needs inputs of >= 15 px, got {image_size}")
    return GoogLeNet(num_classes=num_classes, channels=channels,
                     stem="small" if small else "imagenet", drop_rate=drop_rate)


@register_model("inception", default_image_size=32,
                paper="Szegedy et al. 2014 (+BN), sized for small images", chosen_for="small")
def googlenet_mini(
    *, num_classes: int = 10, channels: int = 3, image_size: int = 32, drop_rate: float = 0.0,
) -> GoogLeNet:
    """GoogLeNet for <= 64 px on a CPU: the nine Inception modules at 1/4 width."""
    return GoogLeNet(num_classes=num_classes, channels=channels, stem="mini",
                     drop_rate=drop_rate, width=0.25)


@register_model("inception", default_image_size=299, paper="Szegedy et al. 2016")
def inception_v3(
    *, num_classes: int = 1000, channels: int = 3, image_size: int = 299, variant: str = "auto",
    drop_rate: float = 0.5,
) -> InceptionV3:
    """Inception-v3 as in torchvision, without the auxiliary classifier (dropout 0.5)."""
    small = is_small(image_size, variant)
    # The valid-padded stride-2 convs need 75 px (imagenet stem) or 7 px (small stem).
    minimum = 7 if small else 75
    if image_size < minimum:
        raise ValueError(f"inception_v3 needs inputs of >= {minimum} px, got {image_size}")
    return InceptionV3(
        num_classes=num_classes, channels=channels, small=small, drop_rate=drop_rate
    )
