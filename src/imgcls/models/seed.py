"""The seed's two CNNs, kept as written there so that imgcls can be compared with it.

* ``seed_keras_cnn`` (seed section 4.1): Conv32-MaxPool-Conv64-MaxPool-Flatten-Dense128-
  Dropout0.5-Dense, 3x3 'valid' convolutions with ReLU as in Keras's defaults.
* ``seed_torch_cnn`` (seed section 4.2): Conv32-BN-ReLU-Pool-Conv64-BN-ReLU-Pool-FC128-FC,
  3x3 'same' convolutions.

Both flatten the last feature map, so the first dense layer is sized from ``image_size``.
Each max-pool runs before its ReLU rather than after: the two commute exactly (ReLU never
decreases, so the max of the rectified values is the rectified max), weights and gradients are
the same, and the ReLU then touches a quarter of the values, which makes the training step
faster (benchmarks/README.md). The parameter names are unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from ._registry import register_model
from .base import ClassifierHead, ImgclsModel, feature_shape


class SeedCNN(ImgclsModel):
    first_conv = "features.0"

    def __init__(
        self,
        features: nn.Sequential,
        *,
        num_classes: int,
        channels: int,
        image_size: int,
        drop_rate: float,
    ) -> None:
        super().__init__(num_classes, channels)
        self.features = features
        flat = int(torch.Size(feature_shape(features, channels, image_size)).numel())
        self.num_features = 128
        hidden = nn.Sequential(nn.Linear(flat, 128), nn.ReLU(inplace=True))
        self.head = ClassifierHead(
            flat, num_classes, pool="flatten", hidden=hidden, hidden_features=128,
            drop_rate=drop_rate,
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _check_size(name: str, image_size: int, minimum: int) -> None:
    if image_size < minimum:
        raise ValueError(f"{name} needs inputs of at least {minimum} pixels, got {image_size}")


@register_model("seed", default_image_size=28, paper="seed section 4.1 (Keras)")
def seed_keras_cnn(
    *, num_classes: int = 10, channels: int = 1, image_size: int = 28, drop_rate: float = 0.5
) -> SeedCNN:
    """Keras example CNN: two 3x3 valid convs with max-pooling, Dense128, Dropout 0.5."""
    _check_size("seed_keras_cnn", image_size, 10)
    features = nn.Sequential(
        nn.Conv2d(channels, 32, 3), nn.MaxPool2d(2), nn.ReLU(inplace=True),
        nn.Conv2d(32, 64, 3), nn.MaxPool2d(2), nn.ReLU(inplace=True),
    )
    return SeedCNN(
        features, num_classes=num_classes, channels=channels, image_size=image_size,
        drop_rate=drop_rate,
    )


@register_model("seed", default_image_size=28, paper="seed section 4.2 (PyTorch)",
                chosen_for="small")
def seed_torch_cnn(
    *, num_classes: int = 10, channels: int = 1, image_size: int = 28, drop_rate: float = 0.0
) -> SeedCNN:
    """PyTorch example CNN: two 3x3 same convs with BatchNorm and max-pooling, FC128, FC."""
    _check_size("seed_torch_cnn", image_size, 4)
    features = nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.MaxPool2d(2),
        nn.ReLU(inplace=True),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.MaxPool2d(2),
        nn.ReLU(inplace=True),
    )
    return SeedCNN(
        features, num_classes=num_classes, channels=channels, image_size=image_size,
        drop_rate=drop_rate,
    )
