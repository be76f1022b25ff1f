"""ResNets (He et al. 2016), their pre-activation form and squeeze-and-excitation variants.

* ``resnet20/32/44/56/110``: the CIFAR ResNets of He et al. 2016 section 4.2 (3x3 16-channel
  stem, stages of 16/32/64 channels with n = (depth - 2) / 6 basic blocks, option-A shortcuts:
  identity, subsampled and zero-padded). They have no ImageNet form.
* ``resnet18/34/50/101/152``: the ImageNet ResNets, torchvision-equivalent (stride on the
  3x3 conv of the bottleneck, "ResNet v1.5"; option-B projection shortcuts). The small-image
  variant has a 3x3 stride-1 64-channel stem and no max-pool (Kuang Liu's CIFAR ResNet18).
* ``resnet_mini``: ResNet sized for small images on a CPU: a 3x3 16-channel stem at full
  resolution, then three stages of two basic blocks (32/64/128 channels), each stage starting
  with a stride-2 block and a projection shortcut (28 px: 14/7/4 px maps); 0.04 GFLOPs; no
  zeroed residual init (zeroed, it fit more slowly and tested lower: benchmarks/README.md).
* ``preact_*``: pre-activation units (He et al. 2016, "Identity Mappings in Deep Residual
  Networks"): BN-ReLU before each conv, the stem a bare conv, a final BN-ReLU before the head.
* ``attention="se"`` on every builder (and the ``se_*`` names): a squeeze-and-excitation block
  (Hu et al. 2018, reduction 16) on the residual branch, before the addition.

Post-activation blocks use torchvision's parameter names (conv1, bn1, ..., downsample).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_model
from .base import ClassifierHead, ImgclsModel
from .layers import SqueezeExcite, init_conv_bn, is_small


def _conv(in_ch: int, out_ch: int, k: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, k, stride, k // 2, bias=False)


def _attention(kind: str | None, channels: int) -> nn.Module:
    if kind is None:
        return nn.Identity()
    if kind == "se":
        # Exactly channels // 16 hidden units as in the paper (no rounding up to 8).
        return SqueezeExcite(channels, reduction=16, min_hidden=1)
    raise ValueError(f"attention must be None or 'se', got {kind!r}")


class ShortcutA(nn.Module):
    """Option A shortcut (He et al. 2016 section 4.2): parameter-free identity, subsampled by
    the stride, extra channels zero."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.stride, self.extra = stride, out_ch - in_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ::stride matches the size of a padded 3x3 stride-2 conv, also for odd sizes.
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra)) if self.extra else x


def _shortcut(kind: str, in_ch: int, out_ch: int, stride: int, preact: bool) -> nn.Module:
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    if kind == "A":
        return ShortcutA(in_ch, out_ch, stride)
    if kind == "B":
        # Pre-activation projections see an already normalised input, so they have no BN.
        if preact:
            return _conv(in_ch, out_ch, 1, stride)
        return nn.Sequential(_conv(in_ch, out_ch, 1, stride), nn.BatchNorm2d(out_ch))
    raise ValueError(f"shortcut must be 'A' or 'B', got {kind!r}")


class BasicBlock(nn.Module):
    """Two 3x3 convs, post-activation (He et al. 2016, Fig. 2 left)."""

    expansion, preact = 1, False

    def __init__(self, in_ch: int, planes: int, stride: int, shortcut: str,
                 attention: str | None) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv(in_ch, planes, 3, stride), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = _conv(planes, planes, 3), nn.BatchNorm2d(planes)
        self.se = _attention(attention, planes)
        self.downsample = _shortcut(shortcut, in_ch, planes, stride, preact=False)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return self.act(out + self.downsample(x))

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)


class Bottleneck(nn.Module):
    """1x1-3x3-1x1 bottleneck with 4x expansion, post-activation, stride on the 3x3."""

    expansion, preact = 4, False

    def __init__(self, in_ch: int, planes: int, stride: int, shortcut: str,
                 attention: str | None) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1, self.bn1 = _conv(in_ch, planes, 1), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = _conv(planes, planes, 3, stride), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = _conv(planes, out_ch, 1), nn.BatchNorm2d(out_ch)
        self.se = _attention(attention, out_ch)
        self.downsample = _shortcut(shortcut, in_ch, out_ch, stride, preact=False)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.se(self.bn3(self.conv3(out)))
        return self.act(out + self.downsample(x))

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)


class PreActBasicBlock(nn.Module):
    """Two 3x3 convs, each after BN-ReLU; nothing after the addition (He et al. 2016b)."""

    expansion, preact = 1, True

    def __init__(self, in_ch: int, planes: int, stride: int, shortcut: str,
                 attention: str | None) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(in_ch), _conv(in_ch, planes, 3, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(planes), _conv(planes, planes, 3)
        self.se = _attention(attention, planes)
        self.downsample = _shortcut(shortcut, in_ch, planes, stride, preact=True)
        # A projection takes the pre-activated input (as the paper's code); identity and
        # option A keep the raw x, so the shortcut stays a clean identity path.
        self.project = isinstance(self.downsample, nn.Conv2d)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act(self.bn1(x))
        out = self.se(self.conv2(self.act(self.bn2(self.conv1(pre)))))
        return out + self.downsample(pre if self.project else x)

    def zero_init_last(self) -> None:
        # No BN ends the branch; zeroing its last conv makes the block start as identity.
        nn.init.zeros_(self.conv2.weight)


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck (BN-ReLU-1x1, BN-ReLU-3x3, BN-ReLU-1x1; He et al. 2016b)."""

    expansion, preact = 4, True

    def __init__(self, in_ch: int, planes: int, stride: int, shortcut: str,
                 attention: str | None) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.bn1, self.conv1 = nn.BatchNorm2d(in_ch), _conv(in_ch, planes, 1)
        self.bn2, self.conv2 = nn.BatchNorm2d(planes), _conv(planes, planes, 3, stride)
        self.bn3, self.conv3 = nn.BatchNorm2d(planes), _conv(planes, out_ch, 1)
        self.se = _attention(attention, out_ch)
        self.downsample = _shortcut(shortcut, in_ch, out_ch, stride, preact=True)
        self.project = isinstance(self.downsample, nn.Conv2d)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act(self.bn1(x))
        out = self.conv2(self.act(self.bn2(self.conv1(pre))))
        out = self.se(self.conv3(self.act(self.bn3(out))))
        return out + self.downsample(pre if self.project else x)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.weight)


BLOCKS: dict[tuple[str, bool], type[nn.Module]] = {
    ("basic", False): BasicBlock,
    ("bottleneck", False): Bottleneck,
    ("basic", True): PreActBasicBlock,
    ("bottleneck", True): PreActBottleneck,
}
# ImageNet ResNets: depth -> (block, blocks per stage), He et al. 2016 Table 1.
IMAGENET_CFGS: dict[int, tuple[str, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
IMAGENET_WIDTHS = (64, 128, 256, 512)
CIFAR_WIDTHS = (16, 32, 64)


class ResNet(ImgclsModel):
    """Stem -> stages of residual blocks (the first block of each later stage has stride 2)
    -> (pre-activation: BN-ReLU) -> global average pool -> Linear."""

    first_conv = "stem.conv"

    def __init__(
        self,
        block: str,
        layers: tuple[int, ...],
        widths: tuple[int, ...],
        *,
        num_classes: int,
        channels: int,
        small: bool,
        preact: bool = False,
        shortcut: str = "B",
        attention: str | None = None,
        drop_rate: float = 0.0,
        zero_init_residual: bool = True,
    ) -> None:
        super().__init__(num_classes, channels)
        block_cls = BLOCKS[(block, preact)]
        stem: OrderedDict[str, nn.Module] = OrderedDict()
        stem["conv"] = _conv(channels, widths[0], 3) if small else _conv(channels, widths[0], 7, 2)
        if not preact:  # pre-activation blocks normalise their own input
            stem["bn"], stem["act"] = nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
        if not small:
            stem["pool"] = nn.MaxPool2d(3, 2, 1)
        self.stem = nn.Sequential(stem)

        stages, ch = [], widths[0]
        for i, (planes, n) in enumerate(zip(widths, layers)):
            blocks = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(block_cls(ch, planes, stride, shortcut, attention))
                ch = planes * block_cls.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        # Pre-activation blocks end on a bare addition: normalise once before pooling.
        self.final_act = (
            nn.Sequential(nn.BatchNorm2d(ch), nn.ReLU(inplace=True)) if preact else nn.Identity()
        )
        self.num_features = ch
        self.head = ClassifierHead(ch, num_classes, drop_rate=drop_rate)

        init_conv_bn(self)
        if zero_init_residual:  # Goyal et al. 2017: each residual block starts as identity
            for m in self.modules():
                if hasattr(m, "zero_init_last"):
                    m.zero_init_last()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_act(self.stages(self.stem(x)))


def _cifar_resnet(depth: int, *, num_classes: int, channels: int, image_size: int,
                  variant: str = "auto", preact: bool = False, shortcut: str = "A",
                  **kw: Any) -> ResNet:
    """He et al. 2016 section 4.2: 6n + 2 layers, always the small-image form."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {depth}")
    if variant == "imagenet":
        raise ValueError("the CIFAR ResNets have no ImageNet variant; use resnet18..152")
    is_small(image_size, variant)  # validates variant
    n = (depth - 2) // 6
    return ResNet("basic", (n, n, n), CIFAR_WIDTHS, num_classes=num_classes, channels=channels,
                  small=True, preact=preact, shortcut=shortcut, **kw)


def _imagenet_resnet(depth: int, *, num_classes: int, channels: int, image_size: int,
                     variant: str = "auto", **kw: Any) -> ResNet:
    block, layers = IMAGENET_CFGS[depth]
    return ResNet(block, layers, IMAGENET_WIDTHS, num_classes=num_classes, channels=channels,
                  small=is_small(image_size, variant), **kw)


# Builders. Options passed on to ResNet: shortcut ("A"/"B"), attention (None/"se"),
# drop_rate, zero_init_residual; the ImageNet ones also take variant (auto/small/imagenet).
_CIFAR = "He et al. 2016 (CIFAR, section 4.2)"
_IMAGENET = "He et al. 2016"
_MINI = ", sized for small images"
_PREACT = "He et al. 2016 (Identity Mappings)"
_SE = "Hu et al. 2018 (Squeeze-and-Excitation)"


@register_model("resnet", default_image_size=32, paper=_IMAGENET + _MINI, chosen_for="small")
def resnet_mini(*, num_classes: int = 10, channels: int = 3, image_size: int = 32,
                **kw: Any) -> ResNet:
    """ResNet for <= 64 px on a CPU: 16-channel stem, 2+2+2 basic blocks at 32/64/128."""
    # Stage 0 has no blocks: the stem's width, then three down-sampling stages.
    kw.setdefault("zero_init_residual", False)
    return ResNet("basic", (0, 2, 2, 2), (16, 32, 64, 128), num_classes=num_classes,
                  channels=channels, small=True, **kw)


@register_model("resnet", default_image_size=32, paper=_CIFAR)
def resnet20(*, num_classes: int = 10, channels: int = 3, image_size: int = 32,
             **kw: Any) -> ResNet:
    """CIFAR ResNet-20 (n=3, 0.27M parameters)."""
    return _cifar_resnet(20, num_classes=num_classes, channels=channels, image_size=image_size,
                         **kw)


@register_model("resnet", default_image_size=32, paper=_CIFAR)
def resnet32(*, num_classes: int = 10, channels: int = 3, image_size: int = 32,
             **kw: Any) -> ResNet:
    """CIFAR ResNet-32 (n=5, 0.46M parameters)."""
    return _cifar_resnet(32, num_classes=num_classes, channels=channels, image_size=image_size,
                         **kw)


@register_model("resnet", default_image_size=32, paper=_CIFAR)
def resnet44(*, num_classes: int = 10, channels: int = 3, image_size: int = 32,
             **kw: Any) -> ResNet:
    """CIFAR ResNet-44 (n=7, 0.66M parameters)."""
    return _cifar_resnet(44, num_classes=num_classes, channels=channels, image_size=image_size,
                         **kw)


@register_model("resnet", default_image_size=32, paper=_CIFAR)
def resnet56(*, num_classes: int = 10, channels: int = 3, image_size: int = 32,
             **kw: Any) -> ResNet:
    """CIFAR ResNet-56 (n=9, 0.85M parameters)."""
    return _cifar_resnet(56, num_classes=num_classes, channels=channels, image_size=image_size,
                         **kw)


@register_model("resnet", default_image_size=32, paper=_CIFAR)
def resnet110(*, num_classes: int = 10, channels: int = 3, image_size: int = 32,
              **kw: Any) -> ResNet:
    """CIFAR ResNet-110 (n=18, 1.7M parameters)."""
    return _cifar_resnet(110, num_classes=num_classes, channels=channels, image_size=image_size,
                         **kw)


@register_model("resnet", paper=_IMAGENET, chosen_for="large")
def resnet18(*, num_classes: int = 1000, channels: int = 3, image_size: int = 224,
             **kw: Any) -> ResNet:
    """ResNet-18 (basic blocks 2-2-2-2)."""
    return _imagenet_resnet(18, num_classes=num_classes, channels=channels,
                            image_size=image_size, **kw)


@register_model("resnet", paper=_IMAGENET)
def resnet34(*, num_classes: int = 1000, channels: int = 3, image_size: int = 224,
             **kw: Any) -> ResNet:
    """ResNet-34 (basic blocks 3-4-6-3)."""
    return _imagenet_resnet(34, num_classes=num_classes, channels=channels,
                            image_size=image_size, **kw)


@register_model("resnet", paper=_IMAGENET)
def resnet50(*, num_classes: int = 1000, channels: int = 3, image_size: int = 224,
             **kw: Any) -> ResNet:
    """ResNet-50 (bottlenecks 3-4-6-3, 25.56M parameters)."""
    return _imagenet_resnet(50, num_classes=num_classes, channels=channels,
                            image_size=image_size, **kw)


@register_model("resnet", paper=_IMAGENET)
def resnet101(*, num_classes: int = 1000, channels: int = 3, image_size: int = 224,
              **kw: Any) -> ResNet:
    """ResNet-101 (bottlenecks 3-4-23-3)."""
    return _imagenet_resnet(101, num_classes=num_classes, channels=channels,
                            image_size=image_size, **kw)


@register_model("resnet", paper=_IMAGENET)
def resnet152(*, num_classes: int = 1000, channels: int = 3, image_size: int = 224,
              **kw: Any) -> ResNet:
    """ResNet-152 (bottlenecks 3-8-36-3)."""
    return _imagenet_resnet(152, num_classes=num_classes, channels=channels,
                            image_size=image_size, **kw)


@register_model("resnet", paper=_PREACT)
def preact_resnet18(*, num_classes: int = 1000, channels: int = 3, image_size: int = 224,
                    **kw: Any) -> ResNet:
    """Pre-activation ResNet-18."""
    return _imagenet_resnet(18, num_classes=num_classes, channels=channels,
                            image_size=image_size, preact=True, **kw)


@register_model("resnet", paper=_PREACT)
def preact_resnet34(*, num_classes: int = 1000, channels: int = 3, image_size: int = 224,
                    **kw: Any) -> ResNet:
    """Pre-activation ResNet-34."""
    return _imagenet_resnet(34, num_classes=num_classes, channels=channels,
                            image_size=image_size, preact=True, **kw)


@register_model("resnet", paper=_PREACT)
def preact_resnet50(*, num_classes: int = 1000, channels: int = 3, image_size: int = 224,
                    **kw: Any) -> ResNet:
    """Pre-activation ResNet-50 (bottlenecks)."""
    return _imagenet_resnet(50, num_classes=num_classes, channels=channels,
                            image_size=image_size, preact=True, **kw)


@register_model("resnet", default_image_size=32, paper=_PREACT)
def preact_resnet20(*, num_classes: int = 10, channels: int = 3, image_size: int = 32,
                    **kw: Any) -> ResNet:
    """Pre-activation CIFAR ResNet-20."""
    return _cifar_resnet(20, num_classes=num_classes, channels=channels, image_size=image_size,
                         preact=True, **kw)


@register_model("resnet", default_image_size=32, paper=_PREACT)
def preact_resnet56(*, num_classes: int = 10, channels: int = 3, image_size: int = 32,
                    **kw: Any) -> ResNet:
    """Pre-activation CIFAR ResNet-56."""
    return _cifar_resnet(56, num_classes=num_classes, channels=channels, image_size=image_size,
                         preact=True, **kw)


@register_model("resnet", default_image_size=32, paper=_PREACT)
def preact_resnet110(*, num_classes: int = 10, channels: int = 3, image_size: int = 32,
                     **kw: Any) -> ResNet:
    """Pre-activation CIFAR ResNet-110 (the paper's 1.7M-parameter CIFAR model)."""
    return _cifar_resnet(110, num_classes=num_classes, channels=channels, image_size=image_size,
                         preact=True, **kw)


@register_model("resnet", paper=_SE)
def se_resnet18(*, num_classes: int = 1000, channels: int = 3, image_size: int = 224,
                **kw: Any) -> ResNet:
    """SE-ResNet-18."""
    return _imagenet_resnet(18, num_classes=num_classes, channels=channels,
                            image_size=image_size, attention="se", **kw)


@register_model("resnet", paper=_SE)
def se_resnet50(*, num_classes: int = 1000, channels: int = 3, image_size: int = 224,
                **kw: Any) -> ResNet:
    """SE-ResNet-50 (28.09M parameters)."""
    return _imagenet_resnet(50, num_classes=num_classes, channels=channels,
                            image_size=image_size, attention="se", **kw)


@register_model("resnet", default_image_size=32, paper=_SE)
def se_resnet20(*, num_classes: int = 10, channels: int = 3, image_size: int = 32,
                **kw: Any) -> ResNet:
    """SE-ResNet-20 (CIFAR)."""
    return _cifar_resnet(20, num_classes=num_classes, channels=channels, image_size=image_size,
                         attention="se", **kw)


@register_model("resnet", default_image_size=32, paper=_SE)
def se_resnet56(*, num_classes: int = 10, channels: int = 3, image_size: int = 32,
                **kw: Any) -> ResNet:
    """SE-ResNet-56 (CIFAR)."""
    return _cifar_resnet(56, num_classes=num_classes, channels=channels, image_size=image_size,
                         attention="se", **kw)
