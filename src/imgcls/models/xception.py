"""Xception (Chollet 2017, "Xception: Deep Learning with Depthwise Separable Convolutions").

Entry flow (two 3x3 convs, three residual blocks that down-sample), middle flow (eight
residual blocks of three separable convs at 728 channels), exit flow (one down-sampling block,
separable convs to 1536 and 2048 channels), as Figure 5 and timm's ``legacy_xception``.

Small variant: the two stem convs use stride 1 and 'same' padding, and the first entry block
(64 -> 128) does not down-sample; the remaining three stride-2 blocks give an overall stride
of 8 (32 px -> 8 px middle flow, 4 px exit flow; 28 px -> 7 / 4 px).

``xception_mini``: Xception sized for small images on a CPU: the same three flows (two
down-sampling entry blocks, eight middle-flow blocks of three separable convs, a
down-sampling exit block and two separable convs) at widths 32 | 64, 128 | 128 | 192 |
256, 384 after two stride-1 3x3 convs (28 px: middle flow at 7 px); 0.09 GFLOPs at 28 px
against the small-variant xception's 2.1.
"""

from __future__ import annotations

import torch
from torch import nn

from ._registry import register_model
from .base import ClassifierHead, ImgclsModel
from .layers import DEPTHWISE_RECIPE as RECIPE
from .layers import ConvBNAct, init_conv_bn, is_small


class SeparableConv(nn.Sequential):
    """Depthwise 3x3 then pointwise 1x1, with no BN or activation in between (Section 4.7)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(
            nn.Conv2d(in_ch, in_ch, 3, padding=1, groups=in_ch, bias=False),
            nn.Conv2d(in_ch, out_ch, 1, bias=False),
        )


class XceptionBlock(nn.Module):
    """``reps`` x (ReLU-SepConv-BN), then a 3x3/2 max-pool if ``stride`` is 2, plus a residual
    (a strided 1x1 conv-BN when the shape changes). ``grow_first`` widens in the first conv
    (entry flow) rather than the last (exit flow)."""

    def __init__(
        self, in_ch: int, out_ch: int, reps: int, stride: int = 1,
        start_with_relu: bool = True, grow_first: bool = True,
    ) -> None:
        super().__init__()
        self.skip = (
            ConvBNAct(in_ch, out_ch, 1, stride, act=None)
            if in_ch != out_ch or stride != 1 else nn.Identity()
        )
        widths = [in_ch] + [out_ch] * reps if grow_first else [in_ch] * reps + [out_ch]
        layers: list[nn.Module] = []
        for i in range(reps):
            # Not in-place: the block input is still needed by the residual branch.
            if i > 0 or start_with_relu:
                layers.append(nn.ReLU(inplace=i > 0))
            layers += [SeparableConv(widths[i], widths[i + 1]), nn.BatchNorm2d(widths[i + 1])]
        if stride != 1:
            layers.append(nn.MaxPool2d(3, stride, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


class Xception(ImgclsModel):
    first_conv = "stem.0.0"

    def __init__(
        self, stem: tuple[int, int], entry: list[tuple[int, int]], exit_: tuple[int, int, int],
        *, num_classes: int, channels: int, small: bool, drop_rate: float,
    ) -> None:
        """``stem``: the two convs' widths; ``entry``: (width, stride) of each entry block, the
        last width is the middle flow's; ``exit_``: the exit block's and the two convs' widths.
        ``small``: a stride-1 'same'-padded stem."""
        super().__init__(num_classes, channels)
        x1, x2, x3 = exit_
        # ImageNet: 3x3/2 and 3x3 valid convs (299 -> 147 px); small: stride 1, 'same' padding.
        s, p = (1, 1) if small else (2, 0)
        self.stem = nn.Sequential(
            ConvBNAct(channels, stem[0], 3, s, padding=p), ConvBNAct(stem[0], stem[1], 3, padding=p)
        )
        ins = [stem[1]] + [w for w, _ in entry[:-1]]
        middle = entry[-1][0]
        self.blocks = nn.Sequential(
            # The stem already ends in a ReLU.
            *(XceptionBlock(i, w, 2, st, start_with_relu=n > 0)
              for n, (i, (w, st)) in enumerate(zip(ins, entry))),
            *(XceptionBlock(middle, middle, 3) for _ in range(8)),  # middle flow
            XceptionBlock(middle, x1, 2, 2, grow_first=False),
        )
        self.exit = nn.Sequential(
            SeparableConv(x1, x2), nn.BatchNorm2d(x2), nn.ReLU(inplace=True),
            SeparableConv(x2, x3), nn.BatchNorm2d(x3), nn.ReLU(inplace=True),
        )
        self.num_features = x3
        self.head = ClassifierHead(x3, num_classes, drop_rate=drop_rate)
        init_conv_bn(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.exit(self.blocks(self.stem(x)))


@register_model("xception", default_image_size=299, paper="Chollet 2017", recipe=RECIPE,
                chosen_for="large")
def xception(
    *, num_classes: int = 1000, channels: int = 3, image_size: int = 299, variant: str = "auto",
    drop_rate: float = 0.5,
) -> Xception:
    """Xception with 8 middle-flow blocks (dropout 0.5 before the classifier, as for ImageNet)."""
    small = is_small(image_size, variant)
    if not small and image_size < 7:  # the two valid stem convs
        raise ValueError(f"xception (imagenet variant) needs inputs of >= 7 px, got {image_size}")
    entry = [(128, 1 if small else 2), (256, 2), (728, 2)]
    return Xception((32, 64), entry, (1024, 1536, 2048), num_classes=num_classes,
                    channels=channels, small=small, drop_rate=drop_rate)


@register_model("xception", default_image_size=32, paper="Chollet 2017, sized for small images",
                recipe=RECIPE, chosen_for="small")
def xception_mini(
    *, num_classes: int = 10, channels: int = 3, image_size: int = 32, drop_rate: float = 0.0,
) -> Xception:
    """Xception's three flows for <= 64 px on a CPU: two entry blocks, middle flow at 128."""
    return Xception((32, 32), [(64, 2), (128, 2)], (192, 256, 384), num_classes=num_classes,
                    channels=channels, small=True, drop_rate=drop_rate)
