"""The small-image model of each family: its shape, forward and backward, and a cost that
fits a CPU (the paper variants at 28 px cost up to 2.2 GFLOPs per image)."""

import pytest
import torch

from imgcls.defaults import RECIPE_KEYS
from imgcls.engine.trainer import OptimSettings, make_optimizer
from imgcls.models import create_model, family_model, list_families, list_models, model_info
from imgcls.models.table import count_flops

pytestmark = pytest.mark.usefixtures("one_thread")
FAMILIES = ["vgg", "resnet", "mobilenet", "densenet", "inception", "squeezenet", "xception"]


def gflops(name: str, size: int = 28) -> float:
    m = create_model(name, num_classes=10, channels=1, image_size=size).eval()
    return count_flops(m, torch.zeros(1, 1, size, size)) / 1e9


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_has_a_small_image_model_a_tenth_of_a_gflop_or_less(family):
    small, large = family_model(family, 28), family_model(family, 224)
    assert small == f"{family if family != 'inception' else 'googlenet'}_mini" != large
    assert model_info(small).family == family and "sized for small images" in model_info(
        small).paper
    cost = gflops(small)
    assert 0.02 < cost <= 0.1
    assert cost < gflops(large) / 2  # the paper variant at the same 28 px
    m = create_model(small, num_classes=10, channels=1, image_size=28)
    assert sum(p.numel() for p in m.parameters()) < 1.5e6


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("size,channels", [(28, 1), (64, 3)])
def test_small_image_models_forward_and_backward(family, size, channels):
    torch.manual_seed(0)
    m = create_model(family, num_classes=5, channels=channels, image_size=size)
    assert type(m).__name__ and m.num_classes == 5
    x = torch.randn(3, channels, size, size)
    out = m(x)
    assert out.shape == (3, 5) and torch.isfinite(out).all()
    torch.nn.functional.cross_entropy(out, torch.tensor([0, 1, 4])).backward()
    grads = [p.grad for p in m.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_a_family_name_outside_the_registry_is_none_and_an_unknown_model_a_clear_error():
    assert family_model("resnet20", 28) is None and "resnet" in list_families()
    with pytest.raises(Exception, match="family name"):
        create_model("resnett", num_classes=10)


def test_every_recipe_sets_keys_that_runs_apply():
    keys = {k for name in list_models() for k in model_info(name).recipe}
    assert keys and keys <= set(RECIPE_KEYS)


@pytest.mark.parametrize("flag", [True, False])
def test_depthwise_filters_are_left_without_weight_decay_when_asked(flag):
    m = create_model("mobilenet_mini", num_classes=10, channels=1, image_size=28)
    opt = make_optimizer(m, OptimSettings(weight_decay=5e-4, depthwise_decay=flag))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    depthwise = [c.weight for c in m.modules()
                 if isinstance(c, torch.nn.Conv2d) and 1 < c.groups == c.in_channels]
    dense = [c.weight for c in m.modules() if isinstance(c, torch.nn.Conv2d) and c.groups == 1]
    assert len(depthwise) == 11 and all(id(w) in decayed for w in dense)
    assert all((id(w) in decayed) == flag for w in depthwise)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(m.parameters()))
