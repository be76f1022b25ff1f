"""timm/ and tv/ models follow the same contract as the registered ones
(tests/test_models_registry.py); no network: nothing here downloads."""

import pytest
import torch

from imgcls.errors import ModelError
from imgcls.models import create_model
from imgcls.pretrained import load_pretrained

NAMES = ["timm/resnet18", "timm/mobilenetv3_small_050", "tv/resnet18", "tv/mobilenet_v3_small"]


pytestmark = pytest.mark.usefixtures("one_thread")

# The contract checks (forward/backward, shapes, reset, reload) run on these names in
# tests/test_models_registry.py next to the registered models.


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
    grey = create_model(name, num_classes=4, channels=1, image_size=32).eval()
    counts = load_pretrained(grey, path, log=lambda _: None)
    assert counts["adapted_stem"] == 1 and counts["replaced_head"] == 2
    same = create_model(name, num_classes=1000, channels=3, image_size=32).eval()
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
