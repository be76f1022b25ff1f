"""Building blocks shared by several families."""

from __future__ import annotations

import torch
from torch import nn

SMALL_INPUT = 64  # the largest input side (px) that gets a family's small-image design

# The training recipe of depthwise-separable networks (MobileNet, Xception): their depthwise
# filters have nine weights per channel and are left without weight decay, as MobileNet's
# paper trains them (section 3.2).
DEPTHWISE_RECIPE: dict[str, tuple[object, str]] = {
    "depthwise_decay": (False, "no weight decay on the depthwise filters (nine weights per "
                               "channel), as the MobileNet paper trains them")}


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channel counts to a multiple of ``divisor`` (MobileNet's rule, never -10%)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> activation; ``act=None`` leaves the activation out."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int = 1,
        padding: int | tuple[int, int] | None = None,
        groups: int = 1,
        act: type[nn.Module] | None = nn.ReLU,
    ) -> None:
        if padding is None:
            k = kernel_size if isinstance(kernel_size, tuple) else (kernel_size, kernel_size)
            padding = (k[0] // 2, k[1] // 2)
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        if act is not None:
            layers.append(act(inplace=True) if act in (nn.ReLU, nn.ReLU6, nn.Hardswish) else act())
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation channel attention (Hu et al. 2018)."""

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        gate: type[nn.Module] = nn.Sigmoid,
        min_hidden: int = 8,
        hidden: int | None = None,
    ) -> None:
        super().__init__()
        hidden = hidden or max(min_hidden, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


def init_conv_bn(module: nn.Module) -> None:
    """Kaiming-normal convs (fan_out, ReLU), unit BatchNorm, small normal Linear layers."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def is_small(image_size: int, variant: str) -> bool:
    """Whether to build the small-image variant: ``variant`` 'small'/'imagenet' forces it,
    'auto' picks small for inputs of 64 pixels or less."""
    if variant not in ("auto", "small", "imagenet"):
        raise ValueError(f"variant must be 'auto', 'small' or 'imagenet', got {variant!r}")
    return variant == "small" or (variant == "auto" and image_size <= SMALL_INPUT)
