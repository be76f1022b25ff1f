"""Folders as people really have them: OS litter, odd names, links, every image mode and
format people keep, oversized and broken files. Training, ``data info`` and predict read them
with no traceback and no line of Pillow's, skip each bad file with its reason, ignore litter
silently and report the same file in two classes."""

import io
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_images import png_header_only

from imgcls.data.sources import load_source
from imgcls.runtime import images
from imgcls.runtime.images import ImageDecodeError, decode_image, probe_image


def encoded(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def shape(cls: int, size=(24, 24), mode="RGB"):
    """Class 0 is a bright square on dark, class 1 a dark square on bright: a known answer
    that survives every mode conversion."""
    a = np.full((size[1], size[0], 3), 30 if cls == 0 else 220, np.uint8)
    a[size[1] // 4: 3 * size[1] // 4, size[0] // 4: 3 * size[0] // 4] = 220 if cls == 0 else 30
    return Image.fromarray(a).convert(mode)


# file name -> (bytes, the kind of problem expected in skipped.txt or None when decoded)
def pathologies(cls: int) -> dict[str, tuple[bytes, str | None]]:
    base = shape(cls)
    pal = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    exif = Image.Exif()
    exif[0x0112] = 6
    frames = [base, shape(1 - cls)]
    return {
        "upper.PNG": (encoded(base, "PNG"), None),
        "png-named.jpg": (encoded(base, "PNG"), None),
        "animated.gif": (encoded(frames[0], "GIF", save_all=True, append_images=frames[1:]),
                         None),
        "animated.webp": (encoded(frames[0], "WEBP", save_all=True,
                                  append_images=frames[1:]), None),
        "pages.tiff": (encoded(frames[0], "TIFF", save_all=True, append_images=frames[1:]),
                       None),
        "sixteen.png": (encoded(Image.fromarray(np.asarray(base.convert("L"), np.uint16) * 257),
                                "PNG"), None),
        "cmyk.jpg": (encoded(base.convert("CMYK"), "JPEG"), None),
        "la.png": (encoded(base.convert("LA"), "PNG"), None),
        "palette-transparent.png": (encoded(pal, "PNG", transparency=3), None),  # unused index
        "rotated.jpg": (encoded(base, "JPEG", exif=exif.tobytes()), None),
        "one-pixel.png": (encoded(Image.new("RGB", (1, 1), (30 + cls,) * 3), "PNG"), None),
        "strip.png": (encoded(Image.new("L", (20000, 10), 30 + cls), "PNG"), None),
        "avif.avif": (encoded(base, "AVIF"), None),
        "x" * 200 + ".png": (encoded(base, "PNG"), None),
        "empty.png": (b"", "empty file"),
        "truncated.png": (encoded(base, "PNG")[:60], "corrupt or truncated image data"),
        "vector.svg": (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" '
                       b'width="10" height="10"/>', "not decoded: SVG vector image"),
        "document.pdf": (encoded(base, "PDF"), "not decoded: PDF document"),
        "phone.heic": (b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(64),
                       "not decoded: HEIC/HEIF image"),
        "page.jpg": (b"<!DOCTYPE html><html><body>404</body></html>",
                     "HTML page, not an image"),
        "bomb.png": (png_header_only(30000, 30000), "too many pixels"),
        # between Pillow's warning (89 Mpx) and error (179 Mpx) thresholds
        "big.png": (png_header_only(10000, 10000), "too many pixels"),
    }


LITTER = {"._upper.PNG": b"\0\5\x16\7AppleDouble", ".DS_Store": b"\0\0\0\1Bud1",
          "Thumbs.db": b"\xd0\xcf\x11\xe0", "desktop.ini": b"[.ShellClassInfo]\n"}


@pytest.fixture
def real_folder(tmp_path):
    root = tmp_path / "unzipped"
    for cls, name in enumerate(("bright", "dark")):
        d = root / name
        d.mkdir(parents=True)
        for i in range(12):
            (d / f"{i}.png").write_bytes(encoded(shape(cls, (24 + i, 24)), "PNG"))
        for fname, (data, _) in pathologies(cls).items():
            (d / fname).write_bytes(data)
        for fname, data in LITTER.items():
            (d / fname).write_bytes(data)
        (d / ".thumbnails").mkdir()
        (d / ".thumbnails" / "0.png").write_bytes(encoded(shape(1 - cls), "PNG"))
        os.symlink("..", d / "loop")  # a link back up the tree
        latin1 = os.path.join(os.fsencode(d), b"caf\xe9.png")  # not valid UTF-8
        with open(latin1, "wb") as f:
            f.write(encoded(shape(cls), "PNG"))
    mac = root / "__MACOSX" / "bright"
    mac.mkdir(parents=True)
    (mac / "._0.png").write_bytes(LITTER["._upper.PNG"])
    (root / ".DS_Store").write_bytes(LITTER[".DS_Store"])
    # the same file in both classes: reported, not silently trained on twice
    (root / "dark" / "copy.png").write_bytes((root / "bright" / "0.png").read_bytes())
    return root


def test_scan_ignores_litter_and_follows_no_loop(real_folder):
    ds = load_source(str(real_folder)).train
    assert ds.classes == ["bright", "dark"]
    names = {p.name for p in ds.paths}
    assert not names & set(LITTER) and "._0.png" not in names
    assert not any(".thumbnails" in p.parts or "loop" in p.parts for p in ds.paths)
    per_class = 12 + len(pathologies(0)) + 1  # + the Latin-1 name
    assert ds.counts() == [per_class, per_class + 1]  # + the copy


def test_each_problem_has_its_reason_and_good_files_decode(real_folder):
    for fname, (_, problem) in pathologies(0).items():
        path = real_folder / "bright" / fname
        if problem is None:
            img = decode_image(path, 3)
            assert img.shape[0] == 3 and str(img.dtype) == "torch.uint8", fname
        else:
            with pytest.raises(ImageDecodeError) as e:
                decode_image(path, 3)
            assert str(e.value).startswith(f"{path}: {problem}"), (fname, str(e.value))


def test_first_frame_and_conversions_keep_the_answer(real_folder):
    """Every decoded mode of class 0 has a bright centre on a dark border (class 1 the
    opposite); the animated and multi-page files give their first frame."""
    for cls, name in enumerate(("bright", "dark")):
        for fname, (_, problem) in pathologies(cls).items():
            if problem is not None or fname in ("one-pixel.png", "strip.png"):
                continue
            a = decode_image(real_folder / name / fname, 1)[0].float()
            h, w = a.shape
            centre, corner = a[h // 2, w // 2].item(), a[1, 1].item()
            assert (centre > corner) == (cls == 0), (name, fname, centre, corner)


def test_header_probe_applies_the_same_pixel_limit(real_folder):
    with pytest.raises(ImageDecodeError, match="too many pixels"):
        probe_image(real_folder / "bright" / "bomb.png")
    assert probe_image(real_folder / "bright" / "big.png", max_pixels=200_000_000)[:2] == (
        10000, 10000)


def test_an_unreadable_file_is_a_reason(tmp_path, monkeypatch):
    path = tmp_path / "locked.png"
    path.write_bytes(encoded(shape(0), "PNG"))

    def denied(*a, **kw):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(images, "open", denied, raising=False)
    with pytest.raises(ImageDecodeError, match="cannot read file .Permission denied"):
        decode_image(path, 3)


def run_cli(*args, cwd):
    env = dict(os.environ, IMGCLS_NO_PROGRESS="1", PYTHONWARNINGS="default")
    return subprocess.run([sys.executable, "-m", "imgcls", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=600)


def test_train_info_and_predict_on_a_real_folder(real_folder, tmp_path):
    """Whole commands, the way a user meets the folder: exit 0, no traceback, no line of
    Pillow's, every bad file in skipped.txt with its reason, one line per kind of problem."""
    info = run_cli("data", "info", str(real_folder), "--grid", str(tmp_path / "grid.png"),
                   cwd=tmp_path)
    train = run_cli("train", "--data", str(real_folder), "--epochs", "2", "--image-size", "16",
                    "--out", str(tmp_path / "runs"), "--name", "r", "--precision", "fp32",
                    "--threads", "1", cwd=tmp_path)
    run = tmp_path / "runs" / "r"
    pred = run_cli("predict", str(run), str(real_folder / "bright"), "--format", "csv",
                   cwd=tmp_path)
    for r in (info, train, pred):
        out = r.stdout + r.stderr
        assert r.returncode == 0, out
        assert "Traceback" not in out and "Warning" not in out and "PIL" not in out, out
    skipped = (run / "skipped.txt").read_text().splitlines()
    bad = {f for f, (_, p) in pathologies(0).items() if p is not None}
    assert len(skipped) == 2 * len(bad)
    for cls in ("bright", "dark"):
        for fname, (_, problem) in pathologies(0).items():
            if problem is not None:
                assert any(s.startswith(f"{real_folder / cls / fname}: {problem}")
                           for s in skipped), (fname, skipped)
    kinds = Counter(p for _, p in pathologies(0).values() if p is not None)
    for kind, n in kinds.items():  # one line per kind of problem
        assert f"  {2 * n} x {kind}\n" in train.stdout, train.stdout
    conflicts = (run / "conflicts.txt").read_text()
    assert "bright/0.png" in conflicts and "dark/copy.png" in conflicts
    assert "caf\\xe9.png" in (run / "split.csv").read_text()
    readable = 2 * (12 + 1 + len(pathologies(0)) - len(bad)) + 1
    assert f"total  │ {readable} " in info.stdout, info.stdout  # unreadable files not counted
    assert f"{len(skipped)} file(s) not counted above, unreadable" in info.stdout
    assert "1 file(s) have the same bytes as a file of another class" in info.stdout
    assert "caf\\xe9.png" in pred.stdout and "not decoded: SVG vector image" in pred.stdout


def test_pillow_guard_is_left_as_it_is(fresh_python):
    code = ("import imgcls.runtime.images, imgcls.data.materialize; from PIL import Image; "
            "print(Image.MAX_IMAGE_PIXELS)")
    assert fresh_python(code) == str(Image.MAX_IMAGE_PIXELS)


def test_no_pillow_warning_reaches_the_user(real_folder, recwarn):
    for path in sorted(Path(real_folder).rglob("*")):
        if path.is_file():
            try:
                decode_image(path, 3, max_pixels=200_000_000)
            except ImageDecodeError:
                pass
    assert not [w for w in recwarn if "PIL" in (w.filename or "")]


def test_the_streamed_loader_skips_the_same_files(real_folder):
    """Folders too big for memory stream through DataLoader workers: the same guarded open,
    the same files skipped, with the same reasons' files named."""
    from imgcls.data.loader import StreamLoader

    ds = load_source(str(real_folder)).train
    loader = StreamLoader(ds, 16, size=16, channels=3, workers=0, mean=[0.5] * 3,
                          std=[0.25] * 3)
    n = sum(len(y) for _, y in loader)
    bad = {f for f, (_, p) in pathologies(0).items() if p is not None}
    assert n == len(ds) - 2 * len(bad)
    assert {os.path.basename(s) for s in loader.skipped} == bad
