"""VGG and ResNet families: parameter counts against the papers/torchvision, the small-image
variant, and small forward passes. Large models are built on the meta device (no memory, no
init cost) where only their parameters are counted."""

import pytest
import torch
import torchvision
from torch import nn

from imgcls.models import create_model, list_models
from imgcls.models.resnet import ShortcutA

VGG_NAMES = [f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")]
RESNET_NAMES = [
    "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "preact_resnet18", "preact_resnet34", "preact_resnet50",
    "preact_resnet20", "preact_resnet56", "preact_resnet110",
    "se_resnet18", "se_resnet50", "se_resnet20", "se_resnet56",
]
IMAGENET_RESNETS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def meta_model(name: str, **kw) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kw)


def test_all_names_registered():
    assert set(VGG_NAMES) <= set(list_models(family="vgg"))
    assert set(RESNET_NAMES) <= set(list_models(family="resnet"))


@pytest.mark.parametrize(
    "name, reference",
    [("vgg16", 138.36e6), ("resnet50", 25.56e6), ("se_resnet50", 28.09e6)],
)
def test_imagenet_param_counts(name, reference):
    m = meta_model(name, num_classes=1000, channels=3, image_size=224)
    assert n_params(m) == pytest.approx(reference, rel=0.02)


@pytest.mark.parametrize("name", VGG_NAMES + IMAGENET_RESNETS)
def test_imagenet_counts_equal_torchvision(name):
    with torch.device("meta"):
        ref = getattr(torchvision.models, name)(num_classes=1000)
    m = meta_model(name, num_classes=1000, channels=3, image_size=224)
    assert n_params(m) == n_params(ref)


@pytest.mark.parametrize(
    "name, reference",
    [("resnet20", 0.27e6), ("resnet56", 0.85e6), ("resnet110", 1.7e6),
     ("preact_resnet110", 1.7e6)],
)
def test_cifar_param_counts(name, reference):
    m = create_model(name, num_classes=10, channels=3, image_size=32)
    assert n_params(m) == pytest.approx(reference, rel=0.02)
    # Option A shortcuts carry no parameters.
    assert any(isinstance(x, ShortcutA) for x in m.modules())


def test_resnet_small_variant_at_32px():
    small = meta_model("resnet18", num_classes=10, image_size=32)
    big = meta_model("resnet18", num_classes=10, image_size=224)
    assert small.stem.conv.kernel_size == (3, 3) and small.stem.conv.stride == (1, 1)
    assert not any(isinstance(x, nn.MaxPool2d) for x in small.modules())
    assert big.stem.conv.kernel_size == (7, 7) and isinstance(big.stem.pool, nn.MaxPool2d)
    forced = meta_model("resnet18", num_classes=10, image_size=32, variant="imagenet")
    assert forced.stem.conv.stride == (2, 2)
    # Kuang Liu's CIFAR ResNet18: 11.17M parameters.
    assert n_params(small) == pytest.approx(11.17e6, rel=0.01)


def test_vgg_small_variant():
    m = meta_model("vgg16_bn", num_classes=10, image_size=32)
    assert m.head.fc.in_features == 512 and m.num_features == 512
    assert not any(isinstance(x, nn.Linear) and x.out_features == 4096 for x in m.modules())
    pools = [x for x in m.features if isinstance(x, nn.MaxPool2d)]
    assert len(pools) == 5
    # At 28 px the fifth pool (on a 1x1 map) is skipped.
    m28 = meta_model("vgg16_bn", num_classes=10, image_size=28)
    assert sum(isinstance(x, nn.MaxPool2d) for x in m28.features) == 4
    big = meta_model("vgg16", num_classes=10, image_size=224)
    assert big.head.fc.in_features == 4096


@pytest.mark.parametrize("name", VGG_NAMES + RESNET_NAMES)
def test_forward_28px_grayscale(name):
    torch.manual_seed(0)
    m = create_model(name, num_classes=10, channels=1, image_size=28).eval()
    conv = m.get_submodule(m.first_conv)
    assert isinstance(conv, nn.Conv2d) and conv.in_channels == 1
    with torch.no_grad():
        feats = m.forward_features(torch.randn(2, 1, 28, 28))
        out = m.forward_head(feats)
    assert feats.shape[:2] == (2, m.num_features)
    assert out.shape == (2, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["resnet20", "preact_resnet20", "se_resnet20"])
def test_cifar_resnets_run_at_other_sizes(name):
    m = create_model(name, num_classes=10, channels=3, image_size=32).eval()
    with torch.no_grad():
        for size in (28, 45, 64):
            assert m(torch.randn(2, 3, size, size)).shape == (2, 10)


@pytest.mark.parametrize(
    "name, kw",
    [("resnet20", {}), ("resnet20", {"shortcut": "B"}), ("preact_resnet20", {}),
     ("se_resnet20", {}), ("resnet18", {"attention": "se"}), ("preact_resnet50", {}),
     ("vgg11_bn", {"drop_rate": 0.2})],
)
def test_train_step_and_reset_classifier(name, kw):
    m = create_model(name, num_classes=10, channels=3, image_size=32, **kw).train()
    m(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)
    m.reset_classifier(5)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 5) and m.num_classes == 5


def test_resnet_block_options():
    se = create_model("se_resnet20", num_classes=10, image_size=32)
    assert sum(type(x).__name__ == "SqueezeExcite" for x in se.modules()) == 9
    pre = create_model("preact_resnet20", num_classes=10, image_size=32)
    assert isinstance(pre.final_act[0], nn.BatchNorm2d)
    # zero_init_residual: the last BN of each branch starts at gamma 0.
    m = create_model("resnet20", num_classes=10, image_size=32)
    assert all((blk.bn2.weight == 0).all() for stage in m.stages for blk in stage)
    m = create_model("resnet20", num_classes=10, image_size=32, zero_init_residual=False)
    assert all((blk.bn2.weight == 1).all() for stage in m.stages for blk in stage)
    # resnet_mini leaves its branches at the normal init (it fits faster in short runs)
    m = create_model("resnet_mini", num_classes=10, image_size=28)
    assert all((blk.bn2.weight == 1).all() for stage in m.stages for blk in stage)
    with pytest.raises(ValueError):
        create_model("resnet20", num_classes=10, variant="imagenet")


def test_resnet9_is_pages_design():
    """Page's ResNet-9: prep conv 64, stages 128 / 256 / 512 each a conv and a max-pool, a
    residual block after the first and the last only; 6.57M parameters for 10 classes."""
    from imgcls.models.fastnet import _Residual

    m = create_model("resnet9", num_classes=10, channels=3, image_size=32)
    assert n_params(m) == 6_573_130  # Page's 6,573,120 and the head's 10 biases
    assert m.stem[0].out_channels == 64
    assert [s[0][0].out_channels for s in m.stages] == [128, 256, 512]
    assert [isinstance(s[-1], _Residual) for s in m.stages] == [True, False, True]
    mini = create_model("resnet9_mini", num_classes=10, channels=1, image_size=28)
    assert [s[0][0].out_channels for s in mini.stages] == [32, 64, 128]
    assert mini(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
