"""timm/ and tv/ models follow the same contract as the registered ones
(tests/test_models_registry.py); no network: nothing here downloads."""

import pytest
import safetensors.torch
import torch

from imgcls.errors import ModelError
from imgcls.models import ImgclsModel, create_model
from imgcls.models.transfer import load_pretrained

NAMES = ["timm/resnet18", "timm/mobilenetv3_small_050", "tv/resnet18", "tv/mobilenet_v3_small"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """On a busy shared CPU, torch's threads spin-wait for each other (here 10x slower)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("in_chans", [1, 3])
def test_forward_backward_contract(name, in_chans):
    torch.manual_seed(0)
    m = create_model(name, num_classes=7, in_chans=in_chans, input_size=32)
    assert isinstance(m, ImgclsModel) and m.num_classes == 7 and m.in_chans == in_chans
    assert m.classifier == "head.fc"
    x = torch.randn(2, in_chans, 32, 32)
    feats = m.forward_features(x)
    assert feats.dim() == 4 and feats.shape[0] == 2
    assert m.forward_head(feats, pre_logits=True).shape == (2, m.num_features)
    out = m(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.sum().backward()
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    stem = m.get_submodule(m.first_conv)
    assert isinstance(stem, torch.nn.Conv2d) and stem.in_channels == in_chans


@pytest.mark.parametrize("name", NAMES)
def test_reset_classifier_and_reload(name, tmp_path):
    m = create_model(name, num_classes=5, in_chans=3, input_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    y = m(x)
    path = tmp_path / "w.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in m.state_dict().items()}, path)
    m2 = create_model(name, num_classes=5, in_chans=3, input_size=32).eval()
    m2.load_state_dict(safetensors.torch.load_file(path))
    assert torch.allclose(m2(x), y, atol=1e-5)
    m.reset_classifier(3)
    assert m(x).shape == (2, 3) and m.num_classes == 3


def _native(name):
    """A state dict as the library itself saves it (a downloaded weights file)."""
    if name.startswith("tv/"):
        import torchvision

        return torchvision.models.get_model(name[3:]).eval()
    import timm

    return timm.create_model(name[5:]).eval()


@pytest.mark.parametrize("name", ["tv/resnet18", "tv/squeezenet1_0", "timm/resnet18"])
def test_library_weights_file_loads_with_its_own_names(name, tmp_path):
    torch.manual_seed(0)
    native = _native(name)
    path = tmp_path / "weights.pth"
    torch.save(native.state_dict(), path)
    grey = create_model(name, num_classes=4, in_chans=1, input_size=32).eval()
    counts = load_pretrained(grey, path, log=lambda _: None)
    assert counts["adapted_stem"] == 1 and counts["replaced_head"] == 2
    same = create_model(name, num_classes=1000, in_chans=3, input_size=32).eval()
    assert load_pretrained(same, path, log=lambda _: None)["replaced_head"] == 0
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = same(x)
        if "squeezenet" in name:  # its classifier ends in a ReLU on the logits; ours does not
            out = out.relu()
        assert torch.allclose(out, native(x), atol=1e-4)
        # a grey image as R = G = B gives the same features through the summed stem
        g = x[:, :1]
        assert torch.allclose(grey.forward_head(grey.forward_features(g), pre_logits=True),
                              same.forward_head(same.forward_features(g.expand(-1, 3, -1, -1)),
                                                pre_logits=True), atol=1e-4)


@pytest.mark.parametrize("name", ["timm/not_a_model", "tv/not_a_model", "tv/resnet81",
                                  "hub/resnet18"])
def test_unknown_names(name):
    with pytest.raises(ModelError, match="resnet18" if "81" in name else "model"):
        create_model(name, num_classes=3)


def test_bad_option_is_a_model_error():
    with pytest.raises(ModelError, match="cannot build"):
        create_model("timm/resnet18", num_classes=3, no_such_option=1)


def test_failed_download_suggests_a_file(monkeypatch):
    """Simulated offline hubs: both libraries' download steps raise as they do offline."""
    import timm.models._builder
    import torchvision.models._api

    def offline(*a, **k):
        raise OSError("Name or service not known")

    monkeypatch.setattr(torchvision.models._api.WeightsEnum, "get_state_dict", offline)
    monkeypatch.setattr(timm.models._builder, "load_pretrained", offline)
    for name in ("tv/resnet18", "timm/resnet18"):
        with pytest.raises(ModelError, match="--pretrained FILE"):
            create_model(name, num_classes=3, pretrained=True)


@pytest.mark.parametrize("name", ["timm/mobilenetv3_small_050", "tv/resnet18"])
def test_drop_rate_is_dropout_before_the_classifier(name):
    m = create_model(name, num_classes=3, drop_rate=0.3)
    assert isinstance(m.head.drop, torch.nn.Dropout) and m.head.drop.p == 0.3
