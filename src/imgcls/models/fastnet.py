"""FastNet: small residual CNNs built for accuracy per CPU second on small images.

What moved the needle in airbench (Jordan 2024) and Page's DAWNBench ResNet-9 (2018), kept
here: BatchNorm after every conv without conv biases, max-pool down-sampling, a residual
block per stage, a global max pool before the head, and a scaled-down output
(``logit_scale``) that makes label-smoothed cross-entropy easier. Three stages of widths
``widths`` (``widths=[32, 128, 256]`` in the model options replaces a name's own); every stage
halves the resolution, so 28 and 32 px end at 3x3 / 4x4.

The activation is ReLU (``act="gelu"`` for airbench's GELU): the two reach the same
accuracy, and ReLU's elementwise pass is the cheaper one on a CPU (benchmarks/README.md).
"""

from __future__ import annotations

import torch
from torch import nn

from ._registry import register_model
from .base import ClassifierHead, ImgclsModel
from .layers import ConvBNAct

ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU}


class _Residual(nn.Module):
    def __init__(self, ch: int, act: type[nn.Module]) -> None:
        super().__init__()
        self.body = nn.Sequential(ConvBNAct(ch, ch, act=act), ConvBNAct(ch, ch, act=act))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class FastNet(ImgclsModel):
    first_conv = "stem.0"

    def __init__(self, widths: tuple[int, ...] | list[int], *, num_classes: int, channels: int,
                 logit_scale: float = 0.125, act: str = "relu",
                 residual: tuple[bool, bool, bool] = (True, True, True)) -> None:
        """``residual``: which stages end with a residual block (Page's ResNet-9: the first
        and the last)."""
        super().__init__(num_classes, channels)
        if (not isinstance(widths, (list, tuple)) or len(widths) != 3
                or not all(isinstance(w, int) and w >= 2 for w in widths)):
            raise ValueError(f"fastnet widths must be three integers >= 2, got {widths!r}")
        if (not isinstance(residual, (list, tuple)) or len(residual) != 3
                or not all(isinstance(r, bool) for r in residual)):
            raise ValueError(f"fastnet residual must be three booleans, got {residual!r}")
        if act not in ACTIVATIONS:
            raise ValueError(f"fastnet act must be one of {', '.join(ACTIVATIONS)}, got {act!r}")
        a = ACTIVATIONS[act]
        self.stem = ConvBNAct(channels, widths[0] // 2, act=a)
        stages, c_in = [], widths[0] // 2
        for c, res in zip(widths, residual):
            block = [_Residual(c, a)] if res else []
            stages.append(nn.Sequential(ConvBNAct(c_in, c, act=a), nn.MaxPool2d(2), *block))
            c_in = c
        self.stages = nn.Sequential(*stages)
        self.num_features = widths[-1]
        # max pool: the strongest response anywhere, as airbench's head does
        self.head = ClassifierHead(widths[-1], num_classes, pool="max")
        self.logit_scale = logit_scale
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        out = self.head(x, pre_logits=pre_logits)
        return out if pre_logits else out * self.logit_scale


def build(named: tuple[int, int, int], num_classes: int, channels: int, image_size: int,
          **kw: object) -> FastNet:
    """``kw`` may replace the named widths (``--model-kwargs '{widths: [32, 128, 256]}'``)."""
    if image_size < 8:
        raise ValueError(f"fastnet needs inputs of at least 8 pixels, got {image_size}")
    return FastNet(kw.pop("widths", named), num_classes=num_classes, channels=channels, **kw)


@register_model("fastnet", default_image_size=32, paper="after airbench / ResNet-9",
                chosen_for="small")
def fastnet_s(*, num_classes: int = 10, channels: int = 3, image_size: int = 32,
              **kw: object) -> FastNet:
    """Widths 32-64-128 (0.5M parameters)."""
    return build((32, 64, 128), num_classes, channels, image_size, **kw)


@register_model("fastnet", default_image_size=32, paper="after airbench / ResNet-9")
def fastnet_m(*, num_classes: int = 10, channels: int = 3, image_size: int = 32,
              **kw: object) -> FastNet:
    """Widths 64-128-256 (2.0M parameters)."""
    return build((64, 128, 256), num_classes, channels, image_size, **kw)
