"""timm and torchvision models behind the imgcls model contract (``timm/<name>``, ``tv/<name>``).

Both adapters hold the library's network as ``body`` with its last classifier layer removed,
and an imgcls :class:`ClassifierHead` (``pool="flatten"``) as ``head``, so that ``head.fc`` is
the only classifier everywhere and freezing, transfer and ``reset_classifier`` need no special
cases. The library's own last layer becomes ``head.fc`` when its size already fits.

What ``forward_features`` returns:

* ``timm/``: timm's ``forward_features``, the last feature map before pooling (N x C x h x w
  for CNNs; N x tokens x D for transformers). ``forward_head`` runs timm's own pooling and
  pre-logits layers (e.g. MobileNetV3's ``conv_head``), then ``head``.
* ``tv/``: torchvision models pool inside ``forward``, so the feature map is the *pooled*
  penultimate output as N x F x 1 x 1 (for VGG and MobileNetV3 after their hidden FC layers,
  for ViT the class token). ``forward_head`` flattens it and applies ``head``. SqueezeNet's
  1x1-conv classifier becomes a Linear on the pooled features, without the ReLU torchvision
  applies to its logits.

State dicts saved from the bare library model (timm or torchvision files) are renamed to the
adapter's names by :meth:`ExternalModel.from_native`, which ``pretrained.load_pretrained`` uses.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import ModelError
from .base import ClassifierHead, ImgclsModel
from .transfer import adapt_input_conv


class ExternalModel(ImgclsModel):
    """``body`` (the library's network without its last layer) -> ``head``."""

    native_dropped: tuple[str, ...] = ()  # library modules the adapter removed

    def __init__(self, body: nn.Module, fc: nn.Module | None, width: int, *, num_classes: int,
                 channels: int, first_conv: str, native_classifier: str,
                 drop_rate: float = 0.0) -> None:
        super().__init__(num_classes, channels)
        self.body = body
        self.num_features = width
        self.head = ClassifierHead(width, num_classes, pool="flatten", drop_rate=drop_rate)
        if fc is not None:  # keep the library's (possibly pretrained) layer when it fits
            self.head.fc = fc
        self.first_conv = "body." + first_conv
        self.native_classifier = native_classifier

    def from_native(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rename a state dict of the bare library model (``conv1.weight``, ``fc.weight``) to
        this adapter's names (``body.conv1.weight``, ``head.fc.weight``); one that already
        uses the adapter's names is returned as it is."""
        if any(k.startswith("body.") for k in state):
            return state
        prefix, out = self.native_classifier + ".", {}
        for k, v in state.items():
            if k.startswith(self.native_dropped):
                continue
            if k.startswith(prefix):
                # SqueezeNet classifies with a 1x1 conv; as a Linear its weight is 2-D.
                out["head.fc." + k[len(prefix):]] = v.flatten(1) if v.dim() == 4 else v
            else:
                out["body." + k] = v
        return out


class TimmModel(ExternalModel):
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body.forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(self.body.forward_head(x, pre_logits=True), pre_logits=pre_logits)


class TorchvisionModel(ExternalModel):
    native_dropped = ("AuxLogits.", "aux1.", "aux2.")  # Inception/GoogLeNet auxiliary heads

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).flatten(1)[:, :, None, None]


def _first_conv(model: nn.Module, hint: object = None) -> str:
    """Dotted name of the stem conv: the library's hint if it names a Conv2d, else the first
    Conv2d registered (the stem in every torchvision and timm CNN)."""
    names = dict(model.named_modules())
    if isinstance(hint, str) and isinstance(names.get(hint), nn.Conv2d):
        return hint
    for name, m in names.items():
        if isinstance(m, nn.Conv2d):
            return name
    raise ModelError(f"{type(model).__name__} has no Conv2d stem")


def _unknown(kind: str, name: str, known: list[str]) -> ModelError:
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean {', '.join(f'{kind}/{c}' for c in close)}?" if close else ""
    return ModelError(f"unknown {kind} model {name!r}.{hint}")


def _build(full_name: str, pretrained: bool, fn: Callable[[], nn.Module]) -> nn.Module:
    try:
        return fn()
    except (TypeError, ValueError, AssertionError) as e:  # bad options for this architecture
        raise ModelError(f"cannot build {full_name!r}: {e}") from e
    except Exception as e:
        if not pretrained:
            raise
        # Offline machines, proxies, hub outages, corrupted caches: all end up here.
        raise ModelError(
            f"cannot get the pretrained weights of {full_name!r} ({type(e).__name__}: {e}). "
            "Download them on a machine with network access and pass `--pretrained FILE` "
            "instead (a .safetensors, .pth or .bin state dict)."
        ) from e


def _timm(name: str, *, num_classes: int, channels: int, image_size: int | None,
          pretrained: bool, **kw: Any) -> TimmModel:
    import timm
    import timm.models

    arch = timm.models.split_model_name_tag(name)[0]
    if not timm.is_model(arch):
        raise _unknown("timm", name, timm.list_models())
    cfg = timm.models.get_pretrained_cfg(name)
    if image_size and cfg is not None and cfg.fixed_input_size and cfg.input_size[-1] != image_size:
        kw.setdefault("img_size", image_size)  # ViT-like models are built for one input size
    drop_rate = kw.pop("drop_rate", 0.0)  # timm applies it before or after pre_logits by model
    m = _build(f"timm/{name}", pretrained, lambda: timm.create_model(
        name, num_classes=num_classes, in_chans=channels, pretrained=pretrained, **kw))
    fc = m.get_classifier()
    fc = fc if isinstance(fc, nn.Linear) else None
    hidden = getattr(m, "head_hidden_size", None) or m.num_features  # pre-logits width
    width = fc.in_features if fc is not None else hidden
    native = m.pretrained_cfg.get("classifier") or "fc"
    stem = _first_conv(m, m.pretrained_cfg.get("first_conv"))
    m.reset_classifier(0)  # timm's forward_head(pre_logits=True) stays valid without it
    return TimmModel(m, fc, width, num_classes=num_classes, channels=channels, first_conv=stem,
                     native_classifier=native if isinstance(native, str) else native[0],
                     drop_rate=drop_rate)


def _tv(name: str, *, num_classes: int, channels: int, image_size: int | None,
        pretrained: bool, **kw: Any) -> TorchvisionModel:
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)  # classification only
    if name not in known:
        raise _unknown("tv", name, known)
    if image_size and name.startswith("vit_"):
        kw.setdefault("image_size", image_size)  # ViT's position embedding fixes the size
    drop_rate = kw.pop("drop_rate", 0.0)  # imgcls's option; torchvision's is `dropout`
    m = _build(f"tv/{name}", pretrained, lambda: torchvision.models.get_model(
        name, weights="DEFAULT" if pretrained else None, **kw))
    # The last Linear (SqueezeNet: 1x1 Conv2d) of the classifier attribute is the layer cut off.
    attr = next((a for a in ("fc", "classifier", "heads", "head")
                 if isinstance(getattr(m, a, None), nn.Module)), None)
    layers = [(n, c) for n, c in m.get_submodule(attr).named_modules()
              if isinstance(c, nn.Linear | nn.Conv2d)] if attr else []
    if not layers:
        raise ModelError(f"tv/{name}: cannot find its classifier layer")
    last_name, last = layers[-1]
    last_name = f"{attr}.{last_name}" if last_name else attr
    width = last.in_features if isinstance(last, nn.Linear) else last.in_channels
    fits = isinstance(last, nn.Linear) and last.out_features == num_classes
    m.set_submodule(last_name, nn.Identity())
    if getattr(m, "aux_logits", False):  # Inception/GoogLeNet: auxiliary heads are not used
        m.aux_logits = False
        for a in ("AuxLogits", "aux1", "aux2"):
            if hasattr(m, a):
                setattr(m, a, None)
    stem = _first_conv(m)
    if channels == 1:
        if hasattr(m, "transform_input"):  # Inception's input transform is per RGB channel
            m.transform_input = False
        m.set_submodule(stem, _one_channel(m.get_submodule(stem)))
    return TorchvisionModel(m, last if fits else None, width, num_classes=num_classes,
                            channels=channels, first_conv=stem, native_classifier=last_name,
                            drop_rate=drop_rate)


def _one_channel(conv: nn.Conv2d) -> nn.Conv2d:
    """The stem for grey inputs: same conv with its RGB weights summed over the channel axis
    (a grey image fed as R = G = B gives the same output)."""
    new = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode)
    with torch.no_grad():
        new.weight.copy_(adapt_input_conv(conv.weight, 1))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def create_external(name: str, *, num_classes: int, channels: int, image_size: int | None = None,
                    pretrained: bool = False, **kw: Any) -> nn.Module:
    """Build ``timm/<name>`` or ``tv/<name>`` as an :class:`ImgclsModel` (see module doc).

    ``pretrained`` downloads the library's ImageNet weights (ModelError if that fails);
    ``drop_rate`` is dropout before ``head.fc`` (as in imgcls's models); other ``kw`` go to
    ``timm.create_model`` / ``torchvision.models.get_model``.
    """
    lib, _, arch = name.partition("/")
    builders = {"timm": _timm, "tv": _tv}
    if lib not in builders or not arch:
        raise ModelError(f"external model names are timm/<name> or tv/<name>, got {name!r}")
    return builders[lib](arch, num_classes=num_classes, channels=channels, image_size=image_size,
                         pretrained=pretrained, **kw)
