"""Hostile and odd image files: each gets a clear per-file error or a documented conversion,
never a crash and never a hang; plus a bounded fuzz test of decode-and-preprocess."""

import io
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_images import png_header_only

from imgcls.runtime.images import ImageDecodeError, decode_image
from imgcls.runtime.preprocess import Preprocess


def encoded(img, fmt="PNG", **kw):
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


GOOD_PNG = encoded(Image.new("RGB", (40, 30), (10, 200, 30)))
GOOD_JPEG = encoded(Image.new("RGB", (40, 30), (10, 200, 30)), "JPEG")


def corpus():
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    exif = Image.Exif()
    exif[0x0112] = 8
    return {
        "zero-byte": (b"", "error"),
        "truncated-png": (GOOD_PNG[: len(GOOD_PNG) // 2], "error"),
        "truncated-jpeg": (GOOD_JPEG[: len(GOOD_JPEG) // 2], "error"),
        "random-bytes": (np.random.default_rng(0).bytes(4096), "error"),
        "png-bomb-20000x20000": (png_header_only(20000, 20000), "error"),
        "text-file": (b"hello, I am not an image\n" * 10, "error"),
        "ico-not-allowed": (encoded(Image.new("RGB", (16, 16)), "ICO"), "error"),
        "tiff": (encoded(Image.new("RGB", (4, 6)), "TIFF"), (3, 6, 4)),
        "png-named-jpg": (GOOD_PNG, (3, 30, 40)),
        "palette-transparency": (encoded(pal, transparency=0), (3, 8, 8)),
        "cmyk-jpeg": (encoded(Image.new("CMYK", (6, 5), (0, 0, 0, 0)), "JPEG"), (3, 5, 6)),
        "16-bit-gray": (encoded(Image.fromarray(np.full((5, 7), 40000, np.uint16))), (3, 5, 7)),
        "exif-rotated": (encoded(Image.new("RGB", (9, 4)), "JPEG", exif=exif.tobytes()),
                         (3, 9, 4)),
        "huge-aspect-20000x1": (encoded(Image.new("L", (20000, 1), 128)), (3, 1, 20000)),
    }


@pytest.mark.parametrize("name", sorted(corpus()))
def test_corpus(name):
    data, expect = corpus()[name]
    t = time.perf_counter()
    if expect == "error":
        with pytest.raises(ImageDecodeError) as e:
            decode_image(data, 3)
        assert "<bytes>" in str(e.value)  # the message names the file (here: the upload)
    else:
        img = decode_image(data, 3)
        assert tuple(img.shape) == expect and img.dtype.is_floating_point is False
        pre = Preprocess(28, 3, [0.5] * 3, [0.25] * 3)
        assert tuple(pre.load_image(data).shape) == (3, 28, 28)
    assert time.perf_counter() - t < 2.0


def mutate(data: bytes, positions: list[int], values: list[int], cut: int) -> bytes:
    b = bytearray(data)
    for p, v in zip(positions, values):
        b[p % len(b)] = v
    return bytes(b[: max(1, len(b) - cut)])


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from([GOOD_PNG, GOOD_JPEG]),
       positions=st.lists(st.integers(0, 10_000), max_size=8),
       values=st.lists(st.integers(0, 255), min_size=8, max_size=8),
       cut=st.integers(0, 200), channels=st.sampled_from([1, 3]))
def test_fuzz_decode_and_preprocess(base, positions, values, cut, channels):
    pre = Preprocess(16, channels, [0.5] * channels, [0.25] * channels)
    data = mutate(base, positions, values, cut)
    try:
        x = pre.load_image(data)
    except ImageDecodeError:
        return
    assert tuple(x.shape) == (channels, 16, 16)
    assert np.isfinite(pre.normalize(x[None]).numpy()).all()


@settings(max_examples=100, deadline=2000)
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes(data):
    try:
        decode_image(data, 3)
    except ImageDecodeError:
        pass
