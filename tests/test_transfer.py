"""load_pretrained's rules (classifier replaced, stem adapted, anything else an error), its
refusal of pickled code, and backbone freezing."""

import pytest
import safetensors.torch
import torch

from imgcls.errors import ModelError
from imgcls.models import create_model
from imgcls.models.transfer import (
    freeze_backbone,
    set_frozen_bn_eval,
    split_backbone_head,
    unfreeze,
)
from imgcls.pretrained import load_pretrained
from imgcls.run import save_model_file


def quiet(_):
    pass


pytestmark = pytest.mark.usefixtures("one_thread")


def seed(num_classes=10, channels=3):
    return create_model("seed_torch_cnn", num_classes=num_classes, channels=channels,
                        image_size=28)


@pytest.fixture
def source(tmp_path):
    torch.manual_seed(0)
    m = seed().eval()
    with torch.no_grad():  # non-trivial BN statistics, so that loading them is visible
        for bn in (m.features[1], m.features[5]):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    state = {k: v.contiguous() for k, v in m.state_dict().items()}
    safetensors.torch.save_file(state, tmp_path / "w.safetensors")
    torch.save(state, tmp_path / "w.pth")
    save_model_file(tmp_path / "run" / "model.safetensors", state,
                    {"model": "seed_torch_cnn", "num_classes": 10})
    return m, state


@pytest.mark.parametrize("file", ["w.safetensors", "w.pth", "run"])
def test_new_classifier_keeps_fresh_init(source, tmp_path, file):
    _, state = source
    m = seed(num_classes=5)
    fresh = {k: v.clone() for k, v in m.state_dict().items() if k.startswith("head.fc.")}
    logged = []
    counts = load_pretrained(m, tmp_path / file, log=logged.append)
    assert counts == {"loaded": len(state) - 2, "replaced_head": 2, "adapted_stem": 0}
    assert "head.fc.weight" in logged[0]
    for k, v in m.state_dict().items():
        assert torch.equal(v, fresh[k] if k in fresh else state[k]), k


def test_same_shape_loads_everything(source, tmp_path):
    src, state = source
    m = seed().eval()
    assert load_pretrained(m, tmp_path / "w.pth", log=quiet)["loaded"] == len(state)
    x = torch.randn(2, 3, 28, 28)
    assert torch.allclose(m(x), src(x))


def test_stem_summed_for_one_channel(source, tmp_path):
    src, state = source
    m = seed(channels=1).eval()
    counts = load_pretrained(m, tmp_path / "w.safetensors", log=quiet)
    assert counts["adapted_stem"] == 1 and counts["replaced_head"] == 0
    assert torch.allclose(m.features[0].weight, state["features.0.weight"].sum(1, keepdim=True))
    grey = torch.rand(2, 1, 28, 28)
    assert torch.allclose(m(grey), src(grey.expand(-1, 3, -1, -1)), atol=1e-5)
    # and back: a 1-channel stem into a 3-channel model, repeated / 3
    path = tmp_path / "grey.safetensors"
    safetensors.torch.save_file(m.state_dict(), path)
    rgb = seed().eval()
    load_pretrained(rgb, path, log=quiet)
    assert torch.allclose(rgb(grey.expand(-1, 3, -1, -1)), m(grey), atol=1e-5)


def test_wrapped_and_prefixed_state_dict(source, tmp_path):
    _, state = source
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in state.items()}}, path)
    assert load_pretrained(seed(), path, log=quiet)["loaded"] == len(state)


@pytest.mark.parametrize("change", ["extra", "shape", "missing"])
def test_anything_else_is_an_error(source, tmp_path, change):
    _, state = source
    state = dict(state)
    if change == "extra":
        state["features.9.weight"], key = torch.zeros(3), "features.9.weight"
    elif change == "shape":
        state["features.4.weight"], key = torch.zeros(64, 32, 5, 5), "features.4.weight"
    else:
        key = "features.1.running_mean"
        del state[key]
    path = tmp_path / "bad.safetensors"
    safetensors.torch.save_file(state, path)
    with pytest.raises(ModelError, match=key.replace(".", r"\.")) as e:
        load_pretrained(seed(num_classes=5), path, log=quiet)
    assert "bad.safetensors" in str(e.value) and "tensors" in str(e.value)


def test_missing_or_damaged_file(tmp_path):
    with pytest.raises(ModelError, match="nothing.pth"):
        load_pretrained(seed(), tmp_path / "nothing.pth", log=quiet)
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="junk.pth"):
        load_pretrained(seed(), tmp_path / "junk.pth", log=quiet)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ModelError, match="junk.safetensors"):
        load_pretrained(seed(), tmp_path / "junk.safetensors", log=quiet)


class Evil:
    """Unpickling this creates the marker file (it stands for arbitrary code)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.mark.parametrize("zipfile", [True, False])
@pytest.mark.parametrize("force_unsafe", [False, True])
def test_pickled_code_is_refused(source, tmp_path, monkeypatch, zipfile, force_unsafe):
    _, state = source
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save(dict(state, x=Evil(str(marker))), path,
               _use_new_zipfile_serialization=zipfile)
    assert not marker.exists()
    if force_unsafe:  # would make torch.load unpickle anything when weights_only is not given
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(ModelError, match="refused"):
        load_pretrained(seed(), path, log=quiet)
    assert not marker.exists()


def test_freeze_backbone_trains_only_the_head():
    torch.manual_seed(0)
    m = seed()
    bns = freeze_backbone(m)
    assert len(bns) == 2 and all(isinstance(b, torch.nn.BatchNorm2d) for b in bns)
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("head.") for n in trainable)
    backbone, head = split_backbone_head(m)
    assert len(head) == len(trainable) and len(backbone) + len(head) == len(list(m.parameters()))

    m.train()
    set_frozen_bn_eval(bns)
    before = {k: v.clone() for k, v in m.state_dict().items() if "running" in k or "batches" in k}
    m(torch.randn(4, 3, 28, 28) * 3 + 1).sum().backward()
    assert all(torch.equal(m.state_dict()[k], v) for k, v in before.items())
    assert all(p.grad is None for p in backbone)
    assert all(p.grad is not None for p in head)
    assert m.head.training and not any(b.training for b in bns)

    unfreeze(m)
    assert all(p.requires_grad for p in m.parameters())
