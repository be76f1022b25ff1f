"""DenseNet, Inception (GoogLeNet, Inception-v3) and Xception: sizes and small variants."""

import pytest
import torch

from imgcls.models import create_model, list_models, model_info

NAMES = [
    "densenet_bc_100", "se_densenet_bc_100", "densenet121", "densenet169", "densenet201",
    "se_densenet121", "googlenet", "inception_v3", "xception",
]
# Models that have a small/imagenet ``variant``.
VARIANT_NAMES = [n for n in NAMES if "bc_100" not in n]

# Parameter counts, checked exactly against torchvision (densenet*, inception_v3 without aux),
# timm legacy_xception and the DenseNet-BC paper (0.8M). GoogLeNet uses the paper's 5x5 convs:
# torchvision's 6,624,904 has 3x3 there (pytorch/vision#906), 380,928 parameters fewer.
REFERENCE = {
    "densenet_bc_100": (10, 769_162),
    "densenet121": (1000, 7_978_856),
    "densenet169": (1000, 14_149_480),
    "densenet201": (1000, 20_013_928),
    "googlenet": (1000, 6_624_904 + 380_928),
    "inception_v3": (1000, 23_834_568),
    "xception": (1000, 22_855_952),
}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_names_registered():
    assert set(NAMES) <= set(list_models())
    assert {model_info(n).family for n in NAMES} == {"densenet", "inception", "xception"}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_parameter_count(name):
    num_classes, expected = REFERENCE[name]
    model = create_model(name, num_classes=num_classes, channels=3)
    assert n_params(model) == pytest.approx(expected, rel=0.02)


def test_densenet_bc_100_paper_size():
    # The paper rounds to 0.8M; the exact count (as in the usual CIFAR ports) is 0.769M.
    assert 0.76e6 <= n_params(create_model("densenet_bc_100", num_classes=10)) <= 0.80e6


def test_se_adds_parameters():
    plain = n_params(create_model("densenet121", num_classes=10, image_size=32))
    se = create_model("se_densenet121", num_classes=10, image_size=32)
    assert n_params(se) > plain
    opt = create_model("densenet121", num_classes=10, image_size=32, attention="se")
    assert n_params(opt) == n_params(se)
    with pytest.raises(Exception, match="attention"):
        create_model("densenet_bc_100", num_classes=10, attention="cbam")


@pytest.mark.parametrize("name", VARIANT_NAMES)
def test_small_variant_at_32px(name):
    def stem_stride(size, **kw):
        model = create_model(name, num_classes=10, image_size=size, **kw)
        return model.get_submodule(model.first_conv).stride

    assert stem_stride(32) == (1, 1)
    assert stem_stride(model_info(name).default_image_size) == (2, 2)
    assert stem_stride(model_info(name).default_image_size, variant="small") == (1, 1)


# Side of the last feature map of the small variants at 28 px.
SIDE_28 = {"bc_100": 7, "densenet": 3, "googlenet": 7, "inception_v3": 6, "xception": 4}


@pytest.mark.parametrize("name", NAMES)
def test_forward_28px_gray(name):
    model = create_model(name, num_classes=7, channels=1, image_size=28).eval()
    side = next(v for k, v in SIDE_28.items() if k in name)
    with torch.no_grad():
        feats = model.forward_features(torch.randn(2, 1, 28, 28))
        out = model.forward_head(feats)
    assert feats.shape == (2, model.num_features, side, side)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(("name", "side"), [("inception_v3", 15), ("xception", 8)])
def test_small_feature_map_64px(name, side):
    model = create_model(name, num_classes=10, channels=1, image_size=64).eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 1, 64, 64))
    assert feats.shape == (1, 2048, side, side)


def test_imagenet_variant_too_small():
    with pytest.raises(Exception, match="75"):
        create_model("inception_v3", num_classes=10, image_size=64, variant="imagenet")
