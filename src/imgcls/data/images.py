"""Decoding one image file into a uint8 tensor, with one documented conversion rule.

Conversion rule (what every mode becomes):

* EXIF orientation is applied first, so a photo is upright as a viewer shows it.
* 16- and 32-bit integer images (``I;16*``, ``I``) are scaled to 8 bits (value / 257,
  clipped to 0..65535); floating-point images (``F``) are clipped to 0..255.
* Transparency (``RGBA``, ``LA``, ``PA``, palette images with a transparent colour) is
  composited over black, which is what dropping the alpha channel of the common
  transparent-black pixel gives and what MNIST-like dark backgrounds expect.
* Palette, CMYK, YCbCr, LAB and HSV images are converted to RGB by Pillow.
* For a 1-channel model colour is turned into luma (ITU-R 601-2, Pillow's ``L``); for a
  3-channel model grayscale is repeated on the three channels.

Only the formats in :data:`ALLOWED_FORMATS` are decoded (whatever the file is named), and
the pixel count is read from the header and checked against :data:`MAX_PIXELS` before any
pixel is decoded, so a decompression bomb costs nothing.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataError

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "GIF"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"})
MAX_PIXELS = 50_000_000  # the default limit; IMGCLS_MAX_PIXELS (set by --max-pixels) raises it
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


class ImageDecodeError(DataError):
    """One image file that cannot be used; the message names the file and the reason."""


def _open(source: str | Path | bytes, max_pixels: int) -> Image.Image:
    name = "<bytes>" if isinstance(source, bytes | bytearray) else str(source)
    try:
        fp = io.BytesIO(source) if isinstance(source, bytes | bytearray) else open(source, "rb")
    except OSError as e:
        raise ImageDecodeError(f"{name}: cannot read file ({e.strerror or e})") from e
    if fp.seek(0, io.SEEK_END) == 0:
        fp.close()
        raise ImageDecodeError(f"{name}: empty file (0 bytes)")
    fp.seek(0)
    try:
        img = Image.open(fp, formats=sorted(ALLOWED_FORMATS))
    except Image.DecompressionBombError as e:  # Pillow's own guard, left as it is
        fp.close()
        raise ImageDecodeError(f"{name}: too many pixels, over the limit of Pillow's "
                               f"decompression-bomb guard ({e})") from e
    except UnidentifiedImageError as e:
        fp.close()
        raise ImageDecodeError(
            f"{name}: not an image in an allowed format ({', '.join(sorted(ALLOWED_FORMATS))})"
        ) from e
    except Exception as e:  # Pillow raises many types for broken headers
        fp.close()
        raise ImageDecodeError(f"{name}: unreadable image header ({e})") from e
    w, h = img.size
    if w * h > max_pixels:
        img.close()
        raise ImageDecodeError(
            f"{name}: {w}x{h} image has {w * h:,} pixels, over the limit of {max_pixels:,}"
        )
    if w < 1 or h < 1:
        img.close()
        raise ImageDecodeError(f"{name}: empty image ({w}x{h})")
    try:
        img.load()
    except Exception as e:  # truncated data, bad compression stream, ...
        img.close()
        raise ImageDecodeError(f"{name}: corrupt or truncated image data ({e})") from e
    return img


def _to_array(img: Image.Image, channels: int) -> np.ndarray:
    img = ImageOps.exif_transpose(img) or img
    mode = img.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        a = np.asarray(img, dtype=np.float64)
        img = Image.fromarray((np.clip(a, 0, 65535) / 257.0).round().astype(np.uint8), "L")
    elif mode == "F":
        a = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(a, 0, 255).round().astype(np.uint8), "L")
    elif mode == "1":
        img = img.convert("L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(black, rgba).convert("RGB")
        if mode in ("LA", "La"):
            img = img.convert("L")
    if channels == 1:
        img = img.convert("L")
    elif img.mode != "RGB":
        img = img.convert("RGB")
    a = np.asarray(img, dtype=np.uint8)
    return a[:, :, None] if a.ndim == 2 else a


def pixel_limit() -> int:
    """The largest image decoded: ``IMGCLS_MAX_PIXELS`` when set (``--max-pixels``; an
    environment variable, so that decoding threads and worker processes see it too)."""
    return int(os.environ.get("IMGCLS_MAX_PIXELS") or MAX_PIXELS)


def decode_image(
    source: str | Path | bytes, channels: int, max_pixels: int | None = None
) -> torch.Tensor:
    """Decode an image file (path or bytes) into a ``uint8`` tensor of shape (C, H, W), refusing
    images of more than ``max_pixels`` (default :func:`pixel_limit`)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    img = _open(source, max_pixels or pixel_limit())
    try:
        a = _to_array(img, channels)
    except Exception as e:
        name = "<bytes>" if isinstance(source, bytes | bytearray) else str(source)
        raise ImageDecodeError(f"{name}: cannot convert {img.mode} image ({e})") from e
    finally:
        img.close()
    return torch.from_numpy(np.array(a.transpose(2, 0, 1)))  # a writable copy


def probe_image(path: str | Path) -> tuple[int, int, bool]:
    """(width, height, is_grayscale) read from the header only; raises ImageDecodeError."""
    try:
        with Image.open(path, formats=sorted(ALLOWED_FORMATS)) as img:
            w, h = img.size
            gray = img.mode in GRAY_MODES or (
                img.mode == "P" and img.palette is not None and img.palette.mode == "L"
            )
            return w, h, gray
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise ImageDecodeError(f"{path}: unreadable image header ({e})") from e


def resize_to(images: torch.Tensor, size: int, mode: str = "shorter_crop") -> torch.Tensor:
    """Resize uint8 images (C,H,W) or (N,C,H,W) to size x size.

    ``shorter_crop`` scales the shorter side to ``size`` and centre-crops (torchvision and
    timm's evaluation rule); ``squash`` scales both sides to ``size``, ignoring aspect ratio.
    Antialiased bilinear, so shrinking a large photo does not alias.
    """
    single = images.dim() == 3
    x = images[None] if single else images
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return images
    if mode == "shorter_crop":
        # crop the centre square first: the same pixels end up in the output, and a
        # 20000 x 1 strip is not first blown up to 560000 x 28
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        x = x[..., top:top + side, left:left + side]
    elif mode != "squash":
        raise ValueError(f"resize mode must be 'shorter_crop' or 'squash', got {mode!r}")
    y = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True,
                      align_corners=False)
    y = y.round().clamp(0, 255).to(torch.uint8)
    return y[0] if single else y


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 images (..., C, H, W) to ``channels``: luma (ITU-R 601-2) for 3 -> 1, repeat for
    1 -> 3 (the same rule as :func:`decode_image`)."""
    c = images.shape[-3]
    if c == channels:
        return images
    if c == 1 and channels == 3:
        return images.expand(*images.shape[:-3], 3, *images.shape[-2:]).contiguous()
    if c == 3 and channels == 1:
        w = torch.tensor([0.299, 0.587, 0.114])[:, None, None]
        return (images.float() * w).sum(-3, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    raise ValueError(f"cannot convert {c}-channel images to {channels} channels")
