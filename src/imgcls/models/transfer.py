"""Transfer learning on the network itself: a stem adapted to another channel count, the
backbone frozen for a linear probe (and unfrozen later), its parameters apart from the
head's for a lower learning rate. Reading weights trained elsewhere is ``pretrained.py``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import ModelError


def adapt_input_conv(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """Stem conv weights (O x C x k x k) for ``channels`` inputs. 3 -> 1 sums over C and 1 -> 3
    repeats and divides by 3: either way a grey image (R = G = B) gives the same response."""
    have = weight.shape[1]
    if have == channels:
        return weight
    if (have, channels) == (3, 1):
        return weight.sum(1, keepdim=True)
    if (have, channels) == (1, 3):
        return weight.repeat(1, 3, 1, 1) / 3
    raise ModelError(f"cannot adapt a {have}-channel stem to {channels} channels")


def _head(model: nn.Module) -> nn.Module:
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Module):
        raise ModelError(f"{type(model).__name__} has no `head` module to train on its own")
    return head


def freeze_backbone(model: nn.Module) -> list[nn.Module]:
    """Stop gradients to every parameter outside ``model.head``; returns the backbone's
    BatchNorm layers, to be kept in eval mode with :func:`set_frozen_bn_eval`."""
    head = _head(model)
    in_head = {id(p) for p in head.parameters()}
    for p in model.parameters():
        if id(p) not in in_head:
            p.requires_grad_(False)
    head_modules = {id(m) for m in head.modules()}
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and id(m) not in head_modules]


def set_frozen_bn_eval(modules: Iterable[nn.Module]) -> None:
    """Eval mode for frozen BatchNorms, called after each ``model.train()``: in train mode they
    would normalise with batch statistics and update their running ones, so the "frozen"
    backbone would still change."""
    for m in modules:
        m.eval()


def unfreeze(model: nn.Module) -> None:
    """Gradients to every parameter again (stop calling :func:`set_frozen_bn_eval` too)."""
    for p in model.parameters():
        p.requires_grad_(True)


def split_backbone_head(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(backbone parameters, ``model.head`` parameters), e.g. for a lower backbone LR."""
    in_head = {id(p) for p in _head(model).parameters()}
    params = list(model.parameters())
    return [p for p in params if id(p) not in in_head], [p for p in params if id(p) in in_head]
