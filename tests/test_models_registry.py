"""Every registered model, parametrised over the registry (as timm's tests/test_models.py):
a model is tested the moment it is registered."""

import pytest
import safetensors.torch
import torch

from imgcls.errors import ModelError
from imgcls.models import ImgclsModel, create_model, list_families, list_models, model_info

MODELS = list_models()
# timm and torchvision models, built by their own factories, follow the same contract
EXTERNAL = ["timm/resnet18", "timm/mobilenetv3_small_050", "tv/resnet18", "tv/mobilenet_v3_small"]
pytestmark = pytest.mark.usefixtures("one_thread")


def test_registry_has_every_family():
    assert set(list_families()) >= {"seed", "vgg", "resnet", "densenet", "inception",
                                      "xception", "mobilenet", "squeezenet"}
    with pytest.raises(ModelError, match="Did you mean resnet18"):
        model_info("resnet81")


@pytest.mark.parametrize("name", MODELS + EXTERNAL)
@pytest.mark.parametrize("channels", [1, 3])
def test_forward_backward_contract(name, channels):
    torch.manual_seed(0)
    size = 28 if channels == 1 else 32
    m = create_model(name, num_classes=7, channels=channels, image_size=size)
    assert isinstance(m, ImgclsModel) and m.num_classes == 7 and m.channels == channels
    assert m.classifier == "head.fc"
    x = torch.randn(2, channels, size, size)
    feats = m.forward_features(x)
    assert feats.dim() == 4 and feats.shape[0] == 2
    pre = m.forward_head(feats, pre_logits=True)
    assert pre.shape == (2, m.num_features)
    out = m(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.sum().backward()
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    stem = m.get_submodule(m.first_conv)
    assert isinstance(stem, torch.nn.Conv2d) and stem.in_channels == channels


@pytest.mark.parametrize("name", MODELS + EXTERNAL)
def test_reset_classifier_and_reload(name, tmp_path):
    m = create_model(name, num_classes=5, channels=3, image_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    y = m(x)
    path = tmp_path / "w.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in m.state_dict().items()}, path)
    m2 = create_model(name, num_classes=5, channels=3, image_size=32).eval()
    m2.load_state_dict(safetensors.torch.load_file(path))
    assert torch.allclose(m2(x), y, atol=1e-5)
    m.reset_classifier(3)
    assert m(x).shape == (2, 3) and m.num_classes == 3


def test_networks_without_normalisation_get_a_tenth_of_the_sgd_rate():
    from imgcls.config import TrainConfig
    from imgcls.defaults import default_lr

    assert default_lr(TrainConfig(model="resnet20", batch_size=256)) == pytest.approx(0.2)
    assert default_lr(TrainConfig(model="vgg16_bn", batch_size=128)) == pytest.approx(0.1)
    for name in ("vgg16", "squeezenet1_0", "squeezenet1_1"):
        assert default_lr(TrainConfig(model=name, batch_size=128)) == pytest.approx(0.01)
    assert default_lr(TrainConfig(model="vgg16", lr=0.05)) == 0.05  # explicit wins
    # semi-supervised: the unlabelled images of a step count too (64 + 3 x 64)
    ssl = TrainConfig(model="fastnet_s", batch_size=64, unlabeled="rest")
    assert default_lr(ssl) == pytest.approx(0.2)
    assert default_lr(TrainConfig(model="vgg16", optimizer="adam")) == 1e-3


@pytest.mark.parametrize("name", ["seed_keras_cnn", "seed_torch_cnn"])
def test_seed_cnns_pool_before_relu_equals_the_seeds_order(name):
    """The seed CNNs max-pool before their ReLU (cheaper); outputs and gradients must equal
    the seed's ReLU-then-pool order exactly."""
    from torch import nn

    torch.manual_seed(0)
    model = create_model(name, num_classes=10, channels=1, image_size=28).eval()
    layers = list(model.features)
    seed_order = []
    for m in layers:  # move every ReLU back in front of the max-pool just before it
        if isinstance(m, nn.ReLU) and seed_order and isinstance(seed_order[-1], nn.MaxPool2d):
            seed_order.insert(len(seed_order) - 1, m)
        else:
            seed_order.append(m)
    assert [type(m) for m in seed_order] != [type(m) for m in layers]
    x = torch.randn(8, 1, 28, 28)
    ours = model(x)
    grads = torch.autograd.grad(ours.sum(), list(model.parameters()))
    model.features = nn.Sequential(*seed_order)
    theirs = model(x)
    assert torch.equal(ours, theirs)
    for a, b in zip(grads, torch.autograd.grad(theirs.sum(), list(model.parameters()))):
        assert torch.equal(a, b)


def test_fastnet_options_widths_and_activation():
    def params(m):
        return sum(p.numel() for p in m.parameters())

    small = create_model("fastnet_s", num_classes=10, channels=1, image_size=28)
    assert params(small) == params(create_model("fastnet_s", num_classes=10, channels=1,
                                                image_size=28, act="gelu"))
    assert not any(isinstance(m, torch.nn.GELU) for m in small.modules())
    thin = create_model("fastnet_m", num_classes=10, channels=1, image_size=28,
                        widths=[32, 128, 256])
    assert thin.stem[0].out_channels == 16 and thin.num_features == 256
    assert thin(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    for bad in ({"widths": [32, 64]}, {"act": "swish"}, {"residual": [True]}):
        with pytest.raises(ModelError, match="widths|act|residual"):
            create_model("fastnet_s", num_classes=10, channels=1, image_size=28, **bad)


def test_the_former_keyword_names_still_work_with_a_deprecation_warning():
    """``in_chans``/``input_size`` (create_model, a builder written for them),
    ``default_input_size`` (register_model), ``batch`` (model_table) and the attributes of
    Preprocess: the former names of channels, image_size and batch_size, kept a release."""
    from imgcls.models import _registry, register_model
    from imgcls.models.table import model_table
    from imgcls.runtime.preprocess import Preprocess

    with pytest.warns(DeprecationWarning) as warned:
        m = create_model("resnet20", num_classes=3, in_chans=1, input_size=16)
    assert {str(w.message).split(";")[0] for w in warned} == {
        "create_model: the keyword 'in_chans' is now 'channels'",
        "create_model: the keyword 'input_size' is now 'image_size'"}
    assert {w.filename for w in warned} == {__file__}
    assert m.channels == 1 and m(torch.zeros(1, 1, 16, 16)).shape == (1, 3)
    with pytest.warns(DeprecationWarning, match="in_chans is now channels"):
        assert m.in_chans == 1

    with pytest.warns(DeprecationWarning, match="default_input_size"):
        @register_model("seed", default_input_size=12)
        def former_names_model(*, num_classes, in_chans, input_size, **kw):
            return create_model("seed_torch_cnn", num_classes=num_classes, channels=in_chans,
                                image_size=input_size)
    try:
        with pytest.warns(DeprecationWarning, match="in_chans and input_size are now"):
            m = create_model("former_names_model", num_classes=4, channels=1)
        assert m(torch.zeros(2, 1, 12, 12)).shape == (2, 4)
    finally:
        del _registry._REGISTRY["former_names_model"]

    with pytest.warns(DeprecationWarning) as warned:
        (row,) = model_table(["seed_torch_cnn"], input_size=20, in_chans=1, batch=8,
                             latency=False)
    assert "model_table: the keyword 'batch' is now 'batch_size'" in {
        str(w.message).split(";")[0] for w in warned}
    assert {w.filename for w in warned} == {__file__}  # shown where the former name is used
    assert (row["image_size"], row["channels"]) == (20, 1)
    with pytest.raises(TypeError, match="bacth"):
        model_table(["seed_torch_cnn"], bacth=8)
    pre = Preprocess(24, 3, [0.5] * 3, [0.2] * 3)
    with pytest.warns(DeprecationWarning, match="Preprocess.input_size is now"):
        assert pre.input_size == 24
