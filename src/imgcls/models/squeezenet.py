"""SqueezeNet 1.0 and 1.1 (Iandola et al. 2016): fire modules, no fully-connected layer.

Layers as the paper's Table 1 (1.0) and the SqueezeNet v1.1 release (3x3 stem, earlier
pooling), arranged as torchvision's ``squeezenet.py`` so parameter counts match it; no
BatchNorm, as the paper. The classifier is dropout -> 1x1 conv -> ReLU -> global average pool.

Small-image variant: a 3x3 stride-1 stem and no max-pool after it (the other two stay),
so the network down-samples 4x: 28 px end at 7x7, 32 px at 8x8, 64 px at 16x16.

``squeezenet_mini``: SqueezeNet 1.1 sized for small images on a CPU: its eight fire modules
and widths, with BatchNorm after every conv (so it trains at the learning rates of the other
families), a 3x3 stride-1 stem and 2x2 max-pools (28 px: fires at 14/7/4 px); 0.04 GFLOPs at
28 px against the small-variant squeezenet1_1's 0.13.
"""

from __future__ import annotations

import torch
from torch import nn

from ._registry import register_model
from .base import ImgclsModel
from .layers import is_small


def _conv(in_ch: int, out_ch: int, k: int, norm: bool) -> nn.Module:
    """A conv with bias (the paper's), or without it and followed by BatchNorm."""
    if not norm:
        return nn.Conv2d(in_ch, out_ch, k, padding=k // 2)
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, k, padding=k // 2, bias=False),
                         nn.BatchNorm2d(out_ch))


class Fire(nn.Module):
    """Squeeze 1x1 -> ReLU -> concatenated expand 1x1 and expand 3x3, each with ReLU;
    ``norm`` puts BatchNorm after each conv."""

    def __init__(self, in_ch: int, squeeze: int, expand: int, norm: bool = False) -> None:
        super().__init__()
        self.squeeze = _conv(in_ch, squeeze, 1, norm)
        self.expand1x1 = _conv(squeeze, expand, 1, norm)
        self.expand3x3 = _conv(squeeze, expand, 3, norm)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.squeeze(x))
        return torch.cat([self.act(self.expand1x1(x)), self.act(self.expand3x3(x))], 1)


class FireHead(nn.Module):
    """SqueezeNet's classifier: dropout -> 1x1 conv ``fc`` -> ReLU -> global average pool.

    Has the ``ClassifierHead`` interface (``fc``, ``num_features``, ``reset``); pre-logits
    features are the pooled fire map, and ``reset(0)`` leaves only the pooling.
    """

    def __init__(self, in_features: int, num_classes: int, drop_rate: float = 0.5) -> None:
        super().__init__()
        self.num_features = in_features
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.act = nn.ReLU(inplace=True)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.fc: nn.Module = nn.Identity()
        self.reset(num_classes)

    def reset(self, num_classes: int) -> None:
        if num_classes > 0:
            self.fc = nn.Conv2d(self.num_features, num_classes, 1)
            # Small initial logits as torchvision's final_conv (the ReLU keeps them >= 0).
            nn.init.normal_(self.fc.weight, 0.0, 0.01)
            nn.init.zeros_(self.fc.bias)
        else:
            self.fc = nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits or isinstance(self.fc, nn.Identity):
            return self.pool(x)
        return self.pool(self.act(self.fc(self.drop(x))))


class SqueezeNet(ImgclsModel):
    """Stem conv -> max-pools and fire modules (``features``) -> ``FireHead``."""

    first_conv = "features.0"

    def __init__(
        self,
        cfg: tuple[int, int, list[str | tuple[int, int]]],
        *,
        num_classes: int,
        channels: int,
        stem: str,
        drop_rate: float,
    ) -> None:
        """``stem``: "imagenet" (the paper's), "small" (3x3 stride 1, no first max-pool) or
        "mini" (3x3 stride 1, 2x2 max-pools, BatchNorm after every conv)."""
        super().__init__(num_classes, channels)
        stem_ch, stem_k, layout = cfg
        norm = stem == "mini"
        if stem == "imagenet":
            first: nn.Module = nn.Conv2d(channels, stem_ch, stem_k, 2)
        else:
            first = _conv(channels, stem_ch, 3, norm)
        if stem == "small":
            layout = layout[1:]  # drop the max-pool right after the stem
        pool = nn.MaxPool2d(2, ceil_mode=True) if norm else nn.MaxPool2d(3, 2, ceil_mode=True)
        layers: list[nn.Module] = [first, nn.ReLU(inplace=True)]
        if norm:
            self.first_conv = "features.0.0"
        ch = stem_ch
        for item in layout:
            if item == "M":
                layers.append(pool)
            else:
                squeeze, expand = item
                layers.append(Fire(ch, squeeze, expand, norm))
                ch = 2 * expand
        self.features = nn.Sequential(*layers)
        for m in self.features.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.head = FireHead(ch, num_classes, drop_rate)
        self.num_features = ch

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


# (stem channels, stem kernel, layout): "M" is a 3x3 stride-2 max-pool, (s, e) a fire
# module with s squeeze channels and e expand channels in each of its 1x1 and 3x3 branches.
_CFGS: dict[str, tuple[int, int, list[str | tuple[int, int]]]] = {
    "1_0": (96, 7, ["M", (16, 64), (16, 64), (32, 128), "M", (32, 128), (48, 192), (48, 192),
                    (64, 256), "M", (64, 256)]),
    "1_1": (64, 3, ["M", (16, 64), (16, 64), "M", (32, 128), (32, 128), "M", (48, 192),
                    (48, 192), (64, 256), (64, 256)]),
}  # fmt: skip


def _squeezenet(
    version: str,
    *,
    num_classes: int,
    channels: int,
    image_size: int,
    variant: str,
    drop_rate: float,
) -> SqueezeNet:
    small = is_small(image_size, variant)
    # The unpadded stride-2 stem and three 3x3 max-pools need this much input.
    minimum = {"1_0": 21, "1_1": 17}[version]
    if not small and image_size < minimum:
        raise ValueError(
            f"squeezenet{version} (imagenet variant) needs inputs of at least {minimum} "
            f"pixels, got {image_size}"
        )
    return SqueezeNet(
        _CFGS[version], num_classes=num_classes, channels=channels,
        stem="small" if small else "imagenet", drop_rate=drop_rate,
    )  # fmt: skip


@register_model("squeezenet", default_image_size=224, paper="Iandola et al. 2016",
                lr_scale=0.1)
def squeezenet1_0(
    *,
    num_classes: int = 1000,
    channels: int = 3,
    image_size: int = 224,
    variant: str = "auto",
    drop_rate: float = 0.5,
) -> SqueezeNet:
    """SqueezeNet 1.0: 7x7 96-channel stem, 8 fire modules, pools after fire 4 and 8."""
    return _squeezenet(
        "1_0", num_classes=num_classes, channels=channels, image_size=image_size,
        variant=variant, drop_rate=drop_rate,
    )  # fmt: skip


@register_model("squeezenet", default_image_size=224, paper="Iandola et al. 2016",
                lr_scale=0.1, chosen_for="large")
def squeezenet1_1(
    *,
    num_classes: int = 1000,
    channels: int = 3,
    image_size: int = 224,
    variant: str = "auto",
    drop_rate: float = 0.5,
) -> SqueezeNet:
    """SqueezeNet 1.1: 3x3 64-channel stem, pools after fire 3 and 5 (2.4x fewer FLOPs)."""
    return _squeezenet(
        "1_1", num_classes=num_classes, channels=channels, image_size=image_size,
        variant=variant, drop_rate=drop_rate,
    )  # fmt: skip


@register_model("squeezenet", default_image_size=32,
                paper="Iandola et al. 2016 (v1.1, +BN), sized for small images",
                chosen_for="small")
def squeezenet_mini(
    *, num_classes: int = 10, channels: int = 3, image_size: int = 32, drop_rate: float = 0.0,
) -> SqueezeNet:
    """SqueezeNet 1.1's fire modules with BatchNorm, for <= 64 px on a CPU."""
    return SqueezeNet(_CFGS["1_1"], num_classes=num_classes, channels=channels, stem="mini",
                      drop_rate=drop_rate)
