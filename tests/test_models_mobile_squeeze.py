"""MobileNet v1/v2/v3 and SqueezeNet 1.0/1.1: parameter counts against the papers and
torchvision, width multipliers, the small-image variant and 1-channel 28 px inputs."""

import pytest
import torch

from imgcls.models import create_model, list_models

NAMES = [
    "mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
    "squeezenet1_0", "squeezenet1_1",
]  # fmt: skip
# Trainable parameters at 1000 classes: v1 matches the paper's 4.2M (Table 1), the
# others are torchvision's counts (the papers print 3.4M, 5.4M, 2.5M, 1.25M, 1.24M).
REFERENCE_PARAMS = {
    "mobilenet_v1": 4_231_976,
    "mobilenet_v2": 3_504_872,
    "mobilenet_v3_large": 5_483_032,
    "mobilenet_v3_small": 2_542_856,
    "squeezenet1_0": 1_248_424,
    "squeezenet1_1": 1_235_496,
}
MOBILENETS = NAMES[:4]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registered() -> None:
    assert set(NAMES) <= set(list_models())
    assert list_models(family="mobilenet") == sorted([*MOBILENETS, "mobilenet_mini"])
    assert list_models(family="squeezenet") == ["squeezenet1_0", "squeezenet1_1",
                                                "squeezenet_mini"]


@pytest.mark.parametrize("name", NAMES)
def test_param_count(name: str) -> None:
    model = create_model(name, num_classes=1000, channels=3, image_size=224)
    assert n_params(model) == pytest.approx(REFERENCE_PARAMS[name], rel=0.02)


@pytest.mark.parametrize("name", MOBILENETS)
def test_width_mult(name: str) -> None:
    counts = [n_params(create_model(name, num_classes=10, width_mult=w)) for w in (0.5, 1.0, 1.4)]
    assert counts[0] < counts[1] < counts[2]


@pytest.mark.parametrize("name", NAMES)
def test_small_variant_at_32px(name: str) -> None:
    small = create_model(name, num_classes=10, image_size=32)
    forced = create_model(name, num_classes=10, image_size=224, variant="small")
    big = create_model(name, num_classes=10, image_size=224)
    stem = dict(small.named_modules())[small.first_conv]
    assert stem.stride == (1, 1) and stem.kernel_size == (3, 3)
    assert dict(forced.named_modules())[forced.first_conv].stride == (1, 1)
    assert dict(big.named_modules())[big.first_conv].stride == (2, 2)
    x = torch.zeros(1, 3, 32, 32)
    small.eval()
    with torch.no_grad():
        side = small.forward_features(x).shape[-1]
    # MobileNets down-sample 8x in the small variant, SqueezeNet 4x.
    assert side == (8 if name.startswith("squeezenet") else 4)


@pytest.mark.parametrize("name", NAMES)
def test_forward_28px_one_channel(name: str) -> None:
    model = create_model(name, num_classes=7, channels=1, image_size=28)
    x = torch.randn(2, 1, 28, 28)
    out = model(x)
    assert out.shape == (2, 7)
    out.sum().backward()
    feats = model.forward_head(model.forward_features(x), pre_logits=True)
    assert feats.shape == (2, model.num_features)
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.num_classes == 3


def test_squeezenet_head_is_a_conv() -> None:
    model = create_model("squeezenet1_1", num_classes=5, image_size=32)
    assert isinstance(model.head.fc, torch.nn.Conv2d) and model.head.fc.out_channels == 5
    model.reset_classifier(0)
    model.eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, model.num_features)


def test_imagenet_squeezenet_rejects_tiny_inputs() -> None:
    with pytest.raises(ValueError, match="at least"):
        create_model("squeezenet1_0", num_classes=10, image_size=16, variant="imagenet")
