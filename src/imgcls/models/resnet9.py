"""ResNet-9 in Page's design (DAWNBench 2018, "How to train your ResNet"), in the resnet family.

A prep conv (64 channels), then three stages, each a conv-BN-ReLU and a 2x2 max-pool, the
first and the last followed by a residual block of two conv-BN-ReLU (128 / 256 / 512
channels); a global max pool and a linear layer whose output is scaled by 0.125. It is the
design ``fastnet`` grew from (fastnet adds a residual block to the middle stage), so it is
built by the same class.

* ``resnet9``: Page's widths (6.57M parameters, 0.55 GFLOPs per 28-px grey image).
* ``resnet9_mini``: the same design at a quarter of the widths (16 / 32 / 64 / 128 channels,
  0.41M parameters, 0.034 GFLOPs: a fifth fewer than fastnet_s), for small images on a CPU.
"""

from __future__ import annotations

from ._registry import register_model
from .fastnet import FastNet, build

_PAGE = "Page 2018, ResNet-9 (DAWNBench)"
_RESIDUAL = (True, False, True)


@register_model("resnet", default_image_size=32, paper=_PAGE)
def resnet9(*, num_classes: int = 10, channels: int = 3, image_size: int = 32,
            **kw: object) -> FastNet:
    """Widths 128-256-512 after a 64-channel prep conv."""
    return build((128, 256, 512), num_classes, channels, image_size,
                 **{"residual": _RESIDUAL, **kw})


@register_model("resnet", default_image_size=32, paper=_PAGE + ", a quarter of its widths")
def resnet9_mini(*, num_classes: int = 10, channels: int = 3, image_size: int = 32,
                 **kw: object) -> FastNet:
    """Widths 32-64-128 after a 16-channel prep conv."""
    return build((32, 64, 128), num_classes, channels, image_size,
                 **{"residual": _RESIDUAL, **kw})
