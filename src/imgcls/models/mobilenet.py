"""MobileNet v1, v2 and v3 (Howard et al. 2017; Sandler et al. 2018; Howard et al. 2019).

Layer tables follow the papers (v1 Table 1, v2 Table 2, v3 Tables 1-2) in torchvision's
arrangement, so v2/v3 parameter counts match torchvision's. Channel counts scale with
``width_mult`` through ``make_divisible``.

Small-image variant (Kuang Liu's CIFAR MobileNetV2): the stem and the first stride-2 block
use stride 1, so the network down-samples 8x instead of 32x (28-32 px end at 4x4, 64 px at 8x8).

``mobilenet_mini``: MobileNetV2 sized for small images on a CPU: the same inverted residual
blocks (expansion 6, linear bottlenecks, ReLU6) with a stride-1 stem, 11 blocks in four
stages of 24/48/96/160 channels (28 px: 14/7/7/4 px maps) and a 640-channel last conv;
0.07 GFLOPs at 28 px against the small-variant mobilenet_v2's 0.15.
"""

from __future__ import annotations

import torch
from torch import nn

from ._registry import register_model
from .base import ClassifierHead, ImgclsModel
from .layers import DEPTHWISE_RECIPE as RECIPE
from .layers import ConvBNAct, SqueezeExcite, init_conv_bn, is_small, make_divisible


class InvertedResidual(nn.Module):
    """Expand 1x1 -> depthwise kxk -> optional SE -> linear 1x1 projection (MobileNetV2),
    with an identity shortcut when the shape is kept; V3 adds SE and h-swish."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        expand_ch: int,
        stride: int = 1,
        kernel_size: int = 3,
        act: type[nn.Module] = nn.ReLU6,
        se_ch: int = 0,
    ) -> None:
        super().__init__()
        self.use_res = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand_ch != in_ch:  # expansion 1 (the first v2 block) has no expand conv
            layers.append(ConvBNAct(in_ch, expand_ch, 1, act=act))
        layers.append(
            ConvBNAct(expand_ch, expand_ch, kernel_size, stride, groups=expand_ch, act=act)
        )
        if se_ch:
            layers.append(SqueezeExcite(expand_ch, hidden=se_ch, gate=nn.Hardsigmoid))
        # Linear bottleneck: no activation after the projection (non-linearities in a
        # low-dimensional space destroy information, v2 paper section 3.2).
        layers.append(ConvBNAct(expand_ch, out_ch, 1, act=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_res else out


class MobileNet(ImgclsModel):
    """Stem -> blocks (ending with the last 1x1 conv where there is one) -> ``head``."""

    first_conv = "stem.0"

    def __init__(
        self,
        stem: nn.Module,
        blocks: list[nn.Module],
        head: ClassifierHead,
        *,
        num_classes: int,
        channels: int,
    ) -> None:
        super().__init__(num_classes, channels)
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.head = head
        self.num_features = head.num_features
        init_conv_bn(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))


def _strides(strides: list[int], small: bool) -> tuple[int, list[int]]:
    """Stem stride and block strides; the small variant sets the stem and the first
    stride-2 block to stride 1."""
    if not small:
        return 2, strides
    i = strides.index(2)
    return 1, [*strides[:i], 1, *strides[i + 1 :]]


def _check_width(width_mult: float) -> None:
    if width_mult <= 0:
        raise ValueError(f"width_mult must be positive, got {width_mult}")


# MobileNet v1 (paper Table 1): depthwise-separable blocks as (out channels, stride).
_V1_CFG = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
           *[(512, 1)] * 5, (1024, 2), (1024, 1)]  # fmt: skip


@register_model("mobilenet", default_image_size=224, paper="Howard et al. 2017", recipe=RECIPE)
def mobilenet_v1(
    *,
    num_classes: int = 1000,
    channels: int = 3,
    image_size: int = 224,
    variant: str = "auto",
    width_mult: float = 1.0,
    drop_rate: float = 0.0,
) -> MobileNet:
    """MobileNet v1: 3x3 conv stem, 13 depthwise-separable blocks (dw 3x3 + pw 1x1, ReLU)."""
    _check_width(width_mult)
    stem_stride, strides = _strides([s for _, s in _V1_CFG], is_small(image_size, variant))
    ch = make_divisible(32 * width_mult)
    stem = ConvBNAct(channels, ch, 3, stem_stride)
    blocks: list[nn.Module] = []
    for (c, _), s in zip(_V1_CFG, strides):
        out = make_divisible(c * width_mult)
        blocks.append(nn.Sequential(ConvBNAct(ch, ch, 3, s, groups=ch), ConvBNAct(ch, out, 1)))
        ch = out
    head = ClassifierHead(ch, num_classes, drop_rate=drop_rate)
    return MobileNet(stem, blocks, head, num_classes=num_classes, channels=channels)


# MobileNet v2 (paper Table 2): stages as (expansion t, out channels c, repeats n, stride s).
_V2_CFG = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
           (6, 160, 3, 2), (6, 320, 1, 1)]  # fmt: skip


def _rows(cfg: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int]]:
    """Stages (t, c, n, s) as blocks (t, c, s): the first block of a stage has its stride."""
    return [(t, c, s if i == 0 else 1) for t, c, n, s in cfg for i in range(n)]


def _v2(rows: list[tuple[int, int, int]], strides: list[int], stem_stride: int, last: int, *,
        num_classes: int, channels: int, width_mult: float, drop_rate: float) -> MobileNet:
    """A MobileNetV2 of the blocks ``rows`` (t, c, s) with ``strides`` in place of their own,
    and a ``last``-channel 1x1 conv."""
    _check_width(width_mult)
    ch = make_divisible(32 * width_mult)
    stem = ConvBNAct(channels, ch, 3, stem_stride, act=nn.ReLU6)
    blocks: list[nn.Module] = []
    for (t, c, _), s in zip(rows, strides):
        out = make_divisible(c * width_mult)
        blocks.append(InvertedResidual(ch, out, expand_ch=round(ch * t), stride=s))
        ch = out
    # As the paper (and torchvision), the last conv only grows for width_mult > 1.
    last = make_divisible(last * max(1.0, width_mult))
    blocks.append(ConvBNAct(ch, last, 1, act=nn.ReLU6))
    head = ClassifierHead(last, num_classes, drop_rate=drop_rate)
    return MobileNet(stem, blocks, head, num_classes=num_classes, channels=channels)


@register_model("mobilenet", default_image_size=224, paper="Sandler et al. 2018",
                recipe=RECIPE, chosen_for="large")
def mobilenet_v2(
    *,
    num_classes: int = 1000,
    channels: int = 3,
    image_size: int = 224,
    variant: str = "auto",
    width_mult: float = 1.0,
    drop_rate: float = 0.2,
) -> MobileNet:
    """MobileNet v2: inverted residuals with linear bottlenecks, ReLU6, 1280-channel 1x1 conv."""
    rows = _rows(_V2_CFG)
    stem_stride, strides = _strides([s for *_, s in rows], is_small(image_size, variant))
    return _v2(rows, strides, stem_stride, 1280, num_classes=num_classes, channels=channels,
               width_mult=width_mult, drop_rate=drop_rate)


# mobilenet_mini: the v2 stages for 28-64 px inputs (t, c, n, s), a stride-1 stem.
_MINI_CFG = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 48, 3, 2), (6, 96, 3, 1), (6, 160, 2, 2)]


@register_model("mobilenet", default_image_size=32,
                paper="Sandler et al. 2018, sized for small images", recipe=RECIPE,
                chosen_for="small")
def mobilenet_mini(*, num_classes: int = 10, channels: int = 3, image_size: int = 32,
                   width_mult: float = 1.0, drop_rate: float = 0.0) -> MobileNet:
    """MobileNetV2 blocks for <= 64 px on a CPU: 11 blocks at 24/48/96/160, 640 last conv."""
    rows = _rows(_MINI_CFG)
    return _v2(rows, [s for *_, s in rows], 1, 640, num_classes=num_classes, channels=channels,
               width_mult=width_mult, drop_rate=drop_rate)


# MobileNet v3 (paper Tables 1 and 2): blocks as
# (kernel, expanded channels, out channels, squeeze-excite, h-swish, stride).
_V3_LARGE = [
    (3, 16, 16, False, False, 1),
    (3, 64, 24, False, False, 2),
    (3, 72, 24, False, False, 1),
    (5, 72, 40, True, False, 2),
    (5, 120, 40, True, False, 1),
    (5, 120, 40, True, False, 1),
    (3, 240, 80, False, True, 2),
    (3, 200, 80, False, True, 1),
    (3, 184, 80, False, True, 1),
    (3, 184, 80, False, True, 1),
    (3, 480, 112, True, True, 1),
    (3, 672, 112, True, True, 1),
    (5, 672, 160, True, True, 2),
    (5, 960, 160, True, True, 1),
    (5, 960, 160, True, True, 1),
]
_V3_SMALL = [
    (3, 16, 16, True, False, 2),
    (3, 72, 24, False, False, 2),
    (3, 88, 24, False, False, 1),
    (5, 96, 40, True, True, 2),
    (5, 240, 40, True, True, 1),
    (5, 240, 40, True, True, 1),
    (5, 120, 48, True, True, 1),
    (5, 144, 48, True, True, 1),
    (5, 288, 96, True, True, 2),
    (5, 576, 96, True, True, 1),
    (5, 576, 96, True, True, 1),
]


def _mobilenet_v3(
    cfg: list[tuple[int, int, int, bool, bool, int]],
    head_ch: int,
    *,
    num_classes: int,
    channels: int,
    image_size: int,
    variant: str,
    width_mult: float,
    drop_rate: float,
) -> MobileNet:
    _check_width(width_mult)
    stem_stride, strides = _strides([r[-1] for r in cfg], is_small(image_size, variant))
    ch = make_divisible(16 * width_mult)
    stem = ConvBNAct(channels, ch, 3, stem_stride, act=nn.Hardswish)
    blocks: list[nn.Module] = []
    for (k, exp, c, se, hs, _), s in zip(cfg, strides):
        exp, out = make_divisible(exp * width_mult), make_divisible(c * width_mult)
        act = nn.Hardswish if hs else nn.ReLU
        se_ch = make_divisible(exp // 4) if se else 0
        blocks.append(
            InvertedResidual(ch, out, expand_ch=exp, stride=s, kernel_size=k, act=act, se_ch=se_ch)
        )
        ch = out
    blocks.append(ConvBNAct(ch, 6 * ch, 1, act=nn.Hardswish))
    # The 1280/1024 "head conv" acts on the pooled 1x1 map, so it is a Linear in the head
    # (as torchvision); pre-logits features are its h-swish output.
    hidden_ch = make_divisible(head_ch * width_mult)
    hidden = nn.Sequential(nn.Linear(6 * ch, hidden_ch), nn.Hardswish(inplace=True))
    head = ClassifierHead(
        6 * ch, num_classes, hidden=hidden, hidden_features=hidden_ch, drop_rate=drop_rate
    )
    return MobileNet(stem, blocks, head, num_classes=num_classes, channels=channels)


@register_model("mobilenet", default_image_size=224, paper="Howard et al. 2019", recipe=RECIPE)
def mobilenet_v3_large(
    *,
    num_classes: int = 1000,
    channels: int = 3,
    image_size: int = 224,
    variant: str = "auto",
    width_mult: float = 1.0,
    drop_rate: float = 0.2,
) -> MobileNet:
    """MobileNetV3-Large: h-swish, SE with hard-sigmoid, 960-channel conv, 1280 head."""
    return _mobilenet_v3(
        _V3_LARGE, 1280, num_classes=num_classes, channels=channels, image_size=image_size,
        variant=variant, width_mult=width_mult, drop_rate=drop_rate,
    )  # fmt: skip


@register_model("mobilenet", default_image_size=224, paper="Howard et al. 2019", recipe=RECIPE)
def mobilenet_v3_small(
    *,
    num_classes: int = 1000,
    channels: int = 3,
    image_size: int = 224,
    variant: str = "auto",
    width_mult: float = 1.0,
    drop_rate: float = 0.2,
) -> MobileNet:
    """MobileNetV3-Small: h-swish, SE with hard-sigmoid, 576-channel conv, 1024 head."""
    return _mobilenet_v3(
        _V3_SMALL, 1024, num_classes=num_classes, channels=channels, image_size=image_size,
        variant=variant, width_mult=width_mult, drop_rate=drop_rate,
    )  # fmt: skip
