"""Opening and decoding one image file into a uint8 tensor, with one documented conversion rule.

Every path that reads an image (the header probe that infers size and channels, decoding into
memory, the streamed loader, predict, the server, ``data info``) goes through :func:`_open`,
the one guarded open:

* The format is sniffed from the bytes, whatever the file is named. Only the formats in
  :data:`ALLOWED_FORMATS` are decoded; a file in another format is refused with a reason that
  names it (SVG, PDF, HEIC, PSD, an HTML page saved as ``.jpg``, ...).
* The pixel count is read from the header and checked against ``max_pixels`` by imgcls
  before any pixel is decoded, the same way everywhere. Pillow's own decompression-bomb check
  (a warning above 89 Mpx, an error above 179 Mpx) is not consulted, so ``--max-pixels`` is
  the only limit, and Pillow's global setting is left as it is.
* Any exception of Pillow or its decoders becomes an :class:`ImageDecodeError` naming the file
  and the reason; Pillow's warnings (corrupt EXIF, odd palettes, malformed MPO) are never
  printed.
* Animated GIF and WebP, multi-page TIFF: the first frame.

Conversion rule (what every mode becomes):

* EXIF orientation is applied first, so a photo is upright as a viewer shows it.
* 16- and 32-bit integer images (``I;16*``, ``I``) are scaled to 8 bits (value / 257,
  clipped to 0..65535); floating-point images (``F``) are clipped to 0..255.
* Transparency (``RGBA``, ``LA``, ``PA``, palette images with a transparent colour or a
  transparent colour key) is composited over :func:`background_level`: black, unless the
  image's opaque pixels are dark (mean brightness under a quarter of white), when the
  background brightens to white as they darken. Black line art on transparency stays
  visible (over black it would be all black) and icons and cut-outs, mostly brighter, keep
  the black that dropping the alpha of the common transparent-black pixel gives
  (benchmarks/transparency.py measures the choice).
* Palette, CMYK, YCbCr, LAB and HSV images are converted to RGB by Pillow.
* For a 1-channel model colour is turned into luma (ITU-R 601-2, Pillow's ``L``); for a
  3-channel model grayscale is repeated on the three channels.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageChops, ImageOps, ImageStat

from ..errors import DataError

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "AVIF")
# Files a folder scan picks up: the decoded formats, and formats people keep beside their
# images that are refused with a reason naming them (rather than silently ignored).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp",
                              ".gif", ".tif", ".tiff", ".avif"})
REFUSED_EXTENSIONS = frozenset({".svg", ".svgz", ".pdf", ".heic", ".heif", ".psd", ".ico",
                                ".jp2", ".jxl", ".eps", ".raw", ".cr2", ".nef", ".dng"})
MAX_PIXELS = 50_000_000  # the default limit (--max-pixels, the max_pixels key, raise it)
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})

# Python's warning filters are process-wide, not per thread: the steps of Pillow that may
# warn (header parsing, EXIF, palette conversion) run under one lock with warnings caught,
# so that decoding threads neither print nor disturb each other. Decoding the pixels, the
# expensive part, runs outside the lock.
_PIL_LOCK = threading.Lock()


class ImageDecodeError(DataError):
    """One image file that cannot be used; the message is ``"<file>: <kind> (<details>)"``."""


def skip_summary(messages: list[str]) -> list[str]:
    """One line per kind of problem among ImageDecodeError messages, most frequent first:
    ``"3 x empty file"``."""
    kinds = Counter(m.split(": ", 1)[-1].split(" (", 1)[0] for m in messages)
    return [f"{n} x {kind}" for kind, n in kinds.most_common()]


@contextmanager
def _pillow_quiet() -> Iterator[None]:
    with _PIL_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def display_name(path: str | Path) -> str:
    """A file name as text that can be printed and written to UTF-8 files: bytes of a name
    that are not valid UTF-8 (a Latin-1 name from an old camera) become ``\\xe9`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _sniff(head: bytes) -> str | None:
    """The name of a format imgcls refuses, recognised from the first bytes; None if unknown."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"%PDF"):
        return "PDF document"
    if text.startswith((b"<svg", b"<?xml")) and b"<svg" in text:
        return "SVG vector image"
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"hevc", b"hevx", b"heim",
                                                b"heis", b"mif1", b"msf1"):
        return "HEIC/HEIF image"
    return None


def _identify(fp: io.BufferedIOBase, name: str) -> Image.Image:
    """Open the header of ``fp`` as the first allowed format that accepts its bytes, as
    ``Image.open`` does but without Pillow's pixel-count check (imgcls applies its own)."""
    Image.init()
    head = fp.read(512)
    fp.seek(0)
    for fmt in ALLOWED_FORMATS:
        if fmt not in Image.OPEN:  # a Pillow built without this codec
            continue
        factory, accept = Image.OPEN[fmt]
        if accept is not None and accept(head) is not True:
            continue
        try:
            fp.seek(0)
            return factory(fp, name)
        except (SyntaxError, IndexError, TypeError, ValueError, OSError, EOFError,
                KeyError) as e:
            raise ImageDecodeError(f"{name}: unreadable {fmt} header ({e})") from e
    known = _sniff(head) or next(
        (f"{fmt} image" for fmt, (_, accept) in Image.OPEN.items()
         if accept is not None and accept(head) is True), None)
    if known:
        raise ImageDecodeError(f"{name}: not decoded: {known} (imgcls decodes "
                               f"{', '.join(ALLOWED_FORMATS)}; convert it to PNG)")
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        raise ImageDecodeError(f"{name}: HTML page, not an image (a failed download?)")
    if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        raise ImageDecodeError(f"{name}: text file, not an image")
    raise ImageDecodeError(f"{name}: not an image in an allowed format "
                           f"({', '.join(ALLOWED_FORMATS)})")


@contextmanager
def _opened(source: str | Path | bytes, max_pixels: int, load: bool = True
            ) -> Iterator[tuple[Image.Image, str]]:
    """The one guarded open: header, pixel limit, then (with ``load``) the first frame's
    pixels; yields (image, the file's printable name) and closes the file after. Raises
    ImageDecodeError naming the file; prints nothing."""
    name = "<bytes>" if isinstance(source, bytes | bytearray) else display_name(source)
    try:
        fp = io.BytesIO(source) if isinstance(source, bytes | bytearray) else open(source, "rb")
    except OSError as e:
        raise ImageDecodeError(f"{name}: cannot read file ({e.strerror or e})") from e
    with fp:
        if fp.seek(0, io.SEEK_END) == 0:
            raise ImageDecodeError(f"{name}: empty file (0 bytes)")
        fp.seek(0)
        try:
            with _pillow_quiet():
                img = _identify(fp, name)
        except ImageDecodeError:
            raise
        except Exception as e:  # a crafted header can make a plugin raise anything
            raise ImageDecodeError(f"{name}: unreadable image header ({e})") from e
        with img:
            w, h = img.size
            if w * h > max_pixels:
                raise ImageDecodeError(f"{name}: too many pixels ({w}x{h} = {w * h:,}, over "
                                       f"the limit of {max_pixels:,}; --max-pixels raises it)")
            if w < 1 or h < 1:
                raise ImageDecodeError(f"{name}: empty image ({w}x{h})")
            if load:
                try:
                    img.load()
                except Exception as e:  # truncated data, bad compression stream, ...
                    raise ImageDecodeError(f"{name}: corrupt or truncated image data "
                                           f"({e})") from e
            yield img, name


def _upright(img: Image.Image) -> Image.Image:
    with _pillow_quiet():  # a corrupt EXIF block warns; it then leaves the image as it is
        try:
            return ImageOps.exif_transpose(img) or img
        except Exception:  # an EXIF block too broken to read is ignored, as viewers do
            return img


def foreground_luma(rgba: Image.Image) -> float | None:
    """The mean brightness (luma, 0..255) of an RGBA image's pixels weighted by their opacity;
    None when every pixel is transparent."""
    alpha = rgba.getchannel("A")
    weight = ImageStat.Stat(alpha).sum[0]
    inked = ImageChops.multiply(rgba.convert("L"), alpha)  # luma x alpha / 255
    return 255 * ImageStat.Stat(inked).sum[0] / weight if weight else None


def background_level(rgba: Image.Image) -> int:
    """The gray level transparent pixels are composited over: black, the common background
    of icons and cut-outs (most are brighter than a quarter of white), brightening to white
    as the opaque pixels darken below that, so that black line art is drawn on white."""
    luma = foreground_luma(rgba)
    return 0 if luma is None else round(255 * min(max(1 - luma / 64, 0.0), 1.0))


def _flatten(rgba: Image.Image) -> Image.Image:
    """An RGBA image composited over its :func:`background_level`."""
    bg = background_level(rgba)
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (bg, bg, bg, 255)),
                                 rgba).convert("RGB")


def _to_array(img: Image.Image, channels: int) -> np.ndarray:
    img = _upright(img)
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
        with _pillow_quiet():  # palette transparency given as bytes warns
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif "transparency" in img.info and img.mode in ("L", "RGB"):
        img = img.convert("LA" if img.mode == "L" else "RGBA")  # a transparent colour key
    if img.mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        img = _flatten(img.convert("RGBA"))
        if mode in ("LA", "La"):
            img = img.convert("L")
    if channels == 1:
        img = img.convert("L")
    elif img.mode != "RGB":
        img = img.convert("RGB")
    a = np.asarray(img, dtype=np.uint8)
    return a[:, :, None] if a.ndim == 2 else a


def convert_image(img: Image.Image, channels: int, name: str = "<image>") -> torch.Tensor:
    """A decoded PIL image of any mode as a ``uint8`` tensor (C, H, W) by the conversion rule;
    raises ImageDecodeError naming ``name``."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    try:
        a = _to_array(img, channels)
    except Exception as e:
        raise ImageDecodeError(f"{name}: cannot convert {img.mode} image ({e})") from e
    return torch.from_numpy(np.array(a.transpose(2, 0, 1)))  # a writable copy


def decode_image(
    source: str | Path | bytes, channels: int, max_pixels: int = MAX_PIXELS
) -> torch.Tensor:
    """Decode an image file (path or bytes) into a ``uint8`` tensor of shape (C, H, W), refusing
    images of more than ``max_pixels``."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    with _opened(source, max_pixels) as (img, name):
        return convert_image(img, channels, name)


def probe_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> tuple[int, int, bool]:
    """(width, height, is_grayscale) read from the header only, through the same guarded
    open and pixel limit as :func:`decode_image`; raises ImageDecodeError."""
    with _opened(path, max_pixels, load=False) as (img, _):
        gray = img.mode in GRAY_MODES or (
            img.mode == "P" and img.palette is not None and img.palette.mode == "L")
        return *img.size, gray


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
