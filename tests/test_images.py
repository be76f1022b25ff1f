import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from imgcls.runtime.images import (
    ImageDecodeError,
    convert_channels,
    decode_image,
    probe_image,
    resize_to,
)


def save(img, fmt="PNG", **kw):
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_gray_and_rgb_conversion_rule():
    rgb = Image.new("RGB", (4, 3), (200, 100, 50))
    t = decode_image(save(rgb), 3)
    assert t.shape == (3, 3, 4) and t[:, 0, 0].tolist() == [200, 100, 50]
    luma = round(200 * 0.299 + 100 * 0.587 + 50 * 0.114)
    assert abs(decode_image(save(rgb), 1)[0, 0, 0].item() - luma) <= 1
    gray = Image.new("L", (2, 2), 77)
    assert decode_image(save(gray), 3)[:, 0, 0].tolist() == [77, 77, 77]


def test_light_transparent_images_are_composited_over_black():
    rgba = Image.new("RGBA", (2, 2), (200, 100, 0, 128))
    v = decode_image(save(rgba), 3)[:, 0, 0].tolist()
    assert v == [100, 50, 0] or all(abs(a - b) <= 1 for a, b in zip(v, [100, 50, 0]))
    pal = Image.new("P", (2, 2), 0)
    pal.putpalette([255, 255, 255] * 256)
    data = save(pal, transparency=0)
    assert decode_image(data, 3).sum() == 0  # fully transparent white -> black


def test_cmyk_16bit_and_bilevel():
    cmyk = Image.new("CMYK", (2, 2), (0, 255, 255, 0))  # pure red
    assert decode_image(save(cmyk, "JPEG", quality=100), 3)[0, 0, 0] > 200
    a16 = np.full((2, 2), 65535 // 2, dtype=np.uint16)
    img16 = Image.fromarray(a16)  # mode I;16
    assert img16.mode.startswith("I")
    assert decode_image(save(img16), 1)[0, 0, 0].item() == round(32767 / 257)
    bw = Image.new("1", (2, 2), 1)
    assert decode_image(save(bw, "BMP"), 1)[0, 0, 0].item() == 255


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (6, 2), (10, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    data = save(img, "JPEG", exif=exif.tobytes())
    assert decode_image(data, 3).shape == (3, 6, 2)


def test_bad_inputs_have_clear_errors(tmp_path):
    with pytest.raises(ImageDecodeError, match="empty file"):
        decode_image(b"", 3)
    with pytest.raises(ImageDecodeError, match="not an image"):
        decode_image(np.random.default_rng(0).bytes(300), 3)
    good = save(Image.new("RGB", (64, 64), (1, 2, 3)))
    with pytest.raises(ImageDecodeError, match="corrupt or truncated|header"):
        decode_image(good[: len(good) // 2], 3)
    with pytest.raises(ImageDecodeError, match="cannot read file"):
        decode_image(tmp_path / "missing.png", 3)
    ico = save(Image.new("RGB", (16, 16)), "ICO")
    with pytest.raises(ImageDecodeError, match="not decoded: ICO image"):
        decode_image(ico, 3)


def png_header_only(width, height):
    """A PNG that claims width x height but holds one tiny IDAT: a decompression bomb's header."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))
            + chunk(b"IEND", b""))


def test_pixel_limit_is_checked_before_decoding():
    with pytest.raises(ImageDecodeError, match="over the limit"):
        decode_image(png_header_only(20000, 20000), 3)


def test_format_is_sniffed_not_taken_from_the_name(tmp_path):
    p = tmp_path / "actually_png.jpg"
    p.write_bytes(save(Image.new("RGB", (3, 3), (9, 9, 9))))
    assert decode_image(p, 3).shape == (3, 3, 3)
    assert probe_image(p) == (3, 3, False)


def test_resize_rules():
    x = torch.zeros(1, 10, 20, dtype=torch.uint8)
    x[:, :, 5:15] = 255
    crop = resize_to(x, 10, "shorter_crop")
    assert crop.shape == (1, 10, 10) and crop.float().mean() > 250  # centre kept
    squash = resize_to(x, 10, "squash")
    assert squash.shape == (1, 10, 10) and 100 < squash.float().mean() < 160
    assert resize_to(x, 10, "shorter_crop").dtype == torch.uint8


def test_convert_channels():
    g = torch.full((2, 1, 3, 3), 50, dtype=torch.uint8)
    assert convert_channels(g, 3).shape == (2, 3, 3, 3)
    c = torch.zeros(2, 3, 3, 3, dtype=torch.uint8)
    c[:, 1] = 100
    assert convert_channels(c, 1)[0, 0, 0, 0].item() == round(100 * 0.587)


def test_dark_line_art_on_transparency_is_drawn_on_white():
    """Black strokes on transparency would be all black over black: the background
    brightens to white under a dark foreground, and stays black under a light one."""
    art = Image.new("RGBA", (9, 9), (0, 0, 0, 0))
    for i in range(9):
        art.putpixel((i, 4), (0, 0, 0, 255))  # a black line
    t = decode_image(save(art), 1)[0]
    assert t[4].tolist() == [0] * 9 and t[0].tolist() == [255] * 9
    glyph = Image.new("RGBA", (9, 9), (0, 0, 0, 0))
    glyph.putpixel((4, 4), (250, 250, 250, 255))  # a light icon keeps black
    t = decode_image(save(glyph), 1)[0]
    assert t[4, 4] == 250 and t[0, 0] == 0
    gray = Image.new("LA", (4, 4), (0, 0))
    gray.putpixel((0, 0), (32, 255))  # half a quarter of white: a mid-gray background
    assert decode_image(save(gray), 1)[0, 3, 3].item() in (127, 128)
