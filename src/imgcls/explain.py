"""Why the model decides: Grad-CAM heatmaps (Selvaraju et al. 2017) over the last feature map
of the model contract (``forward_features``), and the PNGs ``imgcls predict --explain``
writes. Inference side: reads a run through ``run.py``, never the training code.

For a class c, Grad-CAM weighs each channel k of the feature map A by the mean gradient of
the class's logit over it, a_k = mean_ij dy_c/dA_kij, and keeps the positive part of
sum_k a_k A_k, upsampled to the input. For a model whose head is global average pooling and
a linear layer, that is the class activation map of Zhou et al. 2016 (w_ck A_k summed), up
to a constant: tests check it against that closed form.

Grad-CAM was kept after deletion and insertion curves compared it with Grad-CAM++, Score-CAM,
occlusion and input gradients (``benchmarks/explain.py``; ``benchmarks/audit.md``, Heatmaps):
none was better on every data set, and the gradient-free ones take 130-170 forward passes an
image.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError
from .runtime.images import MAX_PIXELS


def grad_cam(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(heatmaps (N, H, W) in [0, 1] at the input's size, logits (N, classes)) of the
    normalised batch ``x`` for the ``target`` classes (default: each image's prediction).
    A map with no positive evidence is all zeros."""
    if not hasattr(model, "forward_features") or not hasattr(model, "forward_head"):
        raise ConfigError(
            f"{type(model).__name__}: Grad-CAM needs forward_features and "
            "forward_head (the model contract)"
        )
    was_training = model.training
    model.eval()
    with torch.enable_grad():
        fm = model.forward_features(x.detach())
        if fm.dim() != 4:
            raise ConfigError(
                f"{type(model).__name__}: its features are {tuple(fm.shape)}, "
                "not a (N, C, H, W) map; Grad-CAM needs a convolutional one"
            )
        logits = model.forward_head(fm)
        target = logits.argmax(1) if target is None else target.to(logits.device)
        (grad,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), fm)
    model.train(was_training)
    weights = grad.mean((2, 3), keepdim=True)
    cam = F.relu((weights * fm).sum(1)).detach().float()
    peak = cam.flatten(1).max(1).values.clamp_min(1e-12)
    cam = cam / peak[:, None, None]
    cam = F.interpolate(cam[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return cam.clamp(0, 1).cpu(), logits.detach().float().cpu()


def overlay(image: torch.Tensor, cam: torch.Tensor, size: int = 160) -> np.ndarray:
    """An RGB uint8 array (size x size x 3): the uint8 image (C, H, W) in grey tones with
    the heatmap over it (jet colours, more opaque where hotter)."""
    from matplotlib import colormaps

    img = image.float()
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    img = F.interpolate(img[None], size=(size, size), mode="bilinear", align_corners=False)[0]
    heat = F.interpolate(cam[None, None], size=(size, size), mode="bilinear", align_corners=False)[
        0, 0
    ].clamp(0, 1)
    colours = torch.from_numpy(colormaps["jet"](heat.numpy())[..., :3]).float() * 255
    alpha = (0.25 + 0.5 * heat)[..., None]
    out = img.permute(1, 2, 0) * (1 - alpha) + colours * alpha
    return out.clamp(0, 255).to(torch.uint8).numpy()


def explain_files(
    run: str | os.PathLike,
    files: list[Path],
    out_dir: str | os.PathLike,
    device: str = "cpu",
    batch_size: int = 32,
    max_pixels: int = MAX_PIXELS,
) -> list[Path]:
    """A Grad-CAM PNG per readable image file (``<name>.gradcam.png`` in ``out_dir``, for
    the predicted class; its title line names it), the files written in order. Files that
    cannot be decoded are left out (predict reports them)."""
    from PIL import Image

    from .run import load_run_model

    model, pre, _ = load_run_model(run, device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    taken: set[str] = set()
    for start in range(0, len(files), batch_size):
        images, ok, _ = pre.load_readable(files[start : start + batch_size], max_pixels)
        if not images:
            continue
        batch = torch.stack(images)
        cams, logits = grad_cam(model, pre.normalize(batch).to(device))
        pred = logits.argmax(1)
        for f, img, cam, c in zip(ok, batch, cams, pred.tolist()):
            name = _unique(f"{Path(f).stem}.{pre.class_names[c]}.gradcam.png", taken)
            Image.fromarray(overlay(img, cam)).save(out / name)
            written.append(out / name)
    return written


def _unique(name: str, taken: set[str]) -> str:
    """``name``, or ``name`` with -2, -3 ... before its extension when already taken."""
    base, i, candidate = name[: -len(".gradcam.png")], 2, name
    while candidate in taken:
        candidate, i = f"{base}-{i}.gradcam.png", i + 1
    taken.add(candidate)
    return candidate
