"""DenseNet (Huang et al. 2017, "Densely Connected Convolutional Networks").

* ``densenet_bc_100``: the paper's CIFAR DenseNet-BC (depth 100, growth k=12, bottleneck 4k,
  compression 0.5, three dense blocks of 16 layers, a single 3x3 stem conv of 2k channels).
* ``densenet121/169/201``: the ImageNet DenseNet-BC (k=32, four blocks, 7x7 stride-2 stem of
  64 channels and a 3x3 max-pool). Their small variant uses a 3x3 stride-1 stem and no max-pool.
* ``densenet_mini``: DenseNet-BC sized for small images on a CPU: the ImageNet form (stem
  conv-BN-ReLU and a 2x2 max-pool, bottleneck 4k, compression 0.5) with a 3x3 32-channel stem
  at full resolution, growth k=16 and blocks of 6-12-8 layers (28 px: 14/7/3 px maps);
  0.06 GFLOPs at 28 px against densenet_bc_100's 0.44.

Every layer is pre-activation (BN-ReLU-Conv), so the convs are plain ``nn.Conv2d``.
``attention="se"`` adds squeeze-and-excitation (Hu et al. 2018) to the concatenated output of
each dense block, before its transition (or the final norm): one SE per block, where the
features of all its layers meet.
"""

from __future__ import annotations

import torch
from torch import nn

from ._registry import register_model
from .base import ClassifierHead, ImgclsModel
from .layers import SqueezeExcite, init_conv_bn, is_small

# name -> (growth rate, layers per dense block)
_IMAGENET_CFGS: dict[str, tuple[int, tuple[int, ...]]] = {
    "densenet121": (32, (6, 12, 24, 16)),
    "densenet169": (32, (6, 12, 32, 32)),
    "densenet201": (32, (6, 12, 48, 32)),
}


def _bn_relu_conv(in_ch: int, out_ch: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.BatchNorm2d(in_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=False),
    )


class DenseBlock(nn.Module):
    """Layers of BN-ReLU-Conv1x1(bn_size*k)-BN-ReLU-Conv3x3(k), each fed all earlier maps."""

    def __init__(self, in_ch: int, num_layers: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(
                _bn_relu_conv(in_ch + i * growth, bn_size * growth, 1),
                _bn_relu_conv(bn_size * growth, growth, 3),
            )
            for i in range(num_layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.cat([x, layer(x)], 1)
        return x


class DenseNet(ImgclsModel):
    first_conv = "stem.0"

    def __init__(
        self,
        stem: nn.Sequential,
        stem_ch: int,
        growth: int,
        blocks: tuple[int, ...],
        *,
        num_classes: int,
        channels: int,
        bn_size: int = 4,
        compression: float = 0.5,
        drop_rate: float = 0.0,
        attention: str | None = None,
    ) -> None:
        super().__init__(num_classes, channels)
        if attention not in (None, "se"):
            raise ValueError(f"attention must be None or 'se', got {attention!r}")
        self.stem = stem
        stages, ch = [], stem_ch
        for i, n in enumerate(blocks):
            stage: list[nn.Module] = [DenseBlock(ch, n, growth, bn_size)]
            ch += n * growth
            if attention == "se":
                stage.append(SqueezeExcite(ch))
            if i < len(blocks) - 1:  # transition: BN-ReLU-Conv1x1 (compression) + avg-pool
                out = int(ch * compression)
                stage += [_bn_relu_conv(ch, out, 1), nn.AvgPool2d(2)]
                ch = out
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        # Pre-activation layers leave the last block un-normalised: final BN-ReLU.
        self.norm = nn.Sequential(nn.BatchNorm2d(ch), nn.ReLU(inplace=True))
        self.num_features = ch
        self.head = ClassifierHead(ch, num_classes, drop_rate=drop_rate)
        init_conv_bn(self)
        nn.init.zeros_(self.head.fc.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.stages(self.stem(x)))


def _bc100(num_classes: int, channels: int, drop_rate: float, attention: str | None) -> DenseNet:
    growth = 12
    # No BN-ReLU in the stem: the first dense layer pre-activates its input.
    stem = nn.Sequential(nn.Conv2d(channels, 2 * growth, 3, padding=1, bias=False))
    return DenseNet(
        stem, 2 * growth, growth, (16, 16, 16), num_classes=num_classes, channels=channels,
        drop_rate=drop_rate, attention=attention,
    )


def _imagenet(
    name: str, num_classes: int, channels: int, image_size: int, variant: str,
    drop_rate: float, attention: str | None,
) -> DenseNet:
    growth, blocks = _IMAGENET_CFGS[name]
    if is_small(image_size, variant):
        stem = nn.Sequential(
            nn.Conv2d(channels, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
        )
    else:
        if image_size < 29:  # stride 4 stem + 3 transitions must leave >= 1 pixel
            raise ValueError(f"{name} (imagenet variant) needs inputs of >= 29 px")
        stem = nn.Sequential(
            nn.Conv2d(channels, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
            nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1),
        )
    return DenseNet(
        stem, 64, growth, blocks, num_classes=num_classes, channels=channels,
        drop_rate=drop_rate, attention=attention,
    )


_BC = "Huang et al. 2017 (DenseNet-BC, CIFAR)"
_IN = "Huang et al. 2017 (DenseNet-BC, ImageNet)"
_SE = " + SE (Hu et al. 2018)"


@register_model("densenet", default_image_size=32, paper=_BC)
def densenet_bc_100(
    *, num_classes: int = 10, channels: int = 3, image_size: int = 32,
    drop_rate: float = 0.0, attention: str | None = None,
) -> DenseNet:
    """DenseNet-BC-100 (k=12) for CIFAR-sized inputs, ~0.8M parameters."""
    return _bc100(num_classes, channels, drop_rate, attention)


@register_model("densenet", default_image_size=32, paper=_IN + ", sized for small images",
                chosen_for="small")
def densenet_mini(
    *, num_classes: int = 10, channels: int = 3, image_size: int = 32,
    drop_rate: float = 0.0, attention: str | None = None,
) -> DenseNet:
    """DenseNet-BC for <= 64 px on a CPU: k=16, blocks 6-12-8 after a pooled 3x3 stem."""
    stem = nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32),
        nn.ReLU(inplace=True), nn.MaxPool2d(2),
    )
    return DenseNet(stem, 32, 16, (6, 12, 8), num_classes=num_classes, channels=channels,
                    drop_rate=drop_rate, attention=attention)


@register_model("densenet", default_image_size=224, paper=_IN, chosen_for="large")
def densenet121(
    *, num_classes: int = 1000, channels: int = 3, image_size: int = 224, variant: str = "auto",
    drop_rate: float = 0.0, attention: str | None = None,
) -> DenseNet:
    """DenseNet-121 (k=32, blocks 6-12-24-16)."""
    return _imagenet(
        "densenet121", num_classes, channels, image_size, variant, drop_rate, attention
    )


@register_model("densenet", default_image_size=224, paper=_IN)
def densenet169(
    *, num_classes: int = 1000, channels: int = 3, image_size: int = 224, variant: str = "auto",
    drop_rate: float = 0.0, attention: str | None = None,
) -> DenseNet:
    """DenseNet-169 (k=32, blocks 6-12-32-32)."""
    return _imagenet(
        "densenet169", num_classes, channels, image_size, variant, drop_rate, attention
    )


@register_model("densenet", default_image_size=224, paper=_IN)
def densenet201(
    *, num_classes: int = 1000, channels: int = 3, image_size: int = 224, variant: str = "auto",
    drop_rate: float = 0.0, attention: str | None = None,
) -> DenseNet:
    """DenseNet-201 (k=32, blocks 6-12-48-32)."""
    return _imagenet(
        "densenet201", num_classes, channels, image_size, variant, drop_rate, attention
    )


@register_model("densenet", default_image_size=32, paper=_BC + _SE)
def se_densenet_bc_100(
    *, num_classes: int = 10, channels: int = 3, image_size: int = 32,
    drop_rate: float = 0.0, attention: str | None = "se",
) -> DenseNet:
    """DenseNet-BC-100 with an SE module after each dense block."""
    return _bc100(num_classes, channels, drop_rate, attention)


@register_model("densenet", default_image_size=224, paper=_IN + _SE)
def se_densenet121(
    *, num_classes: int = 1000, channels: int = 3, image_size: int = 224, variant: str = "auto",
    drop_rate: float = 0.0, attention: str | None = "se",
) -> DenseNet:
    """DenseNet-121 with an SE module after each dense block."""
    return _imagenet(
        "densenet121", num_classes, channels, image_size, variant, drop_rate, attention
    )
