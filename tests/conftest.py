import gzip
import io
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("IMGCLS_NO_PROGRESS", "1")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own cache folder so nothing leaks between tests or from the user."""
    monkeypatch.setenv("IMGCLS_HOME", str(tmp_path_factory.mktemp("imgcls_home")))


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: for tiny models it is as fast, and on a busy shared CPU torch's
    threads spin-wait for each other (measured 10x slower)."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def train_digits(tmp_path_factory, name="digits", export=False):
    """One short digits run (8x8, 1 channel, a few seconds) for a module's fixture, with its
    own cache folder; optionally exported to ONNX."""
    import imgcls

    out = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMGCLS_HOME", str(tmp_path_factory.mktemp("home")))
        r = imgcls.train(data="digits", epochs=1, out=str(out), name=name, precision="fp32",
                         channels_last="no", progress=False, log=lambda _: None)
    if export:
        from imgcls.export import export_model

        export_model(r.path, log=lambda _: None)
    return r.path


def make_image(path: Path, color, size=(20, 16), mode="RGB", fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, color)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, format=fmt)
    return path


COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (20, 40, 230)}


@pytest.fixture
def color_folder(tmp_path):
    """A folder of three classes whose images are solid colours (a known answer), with
    mixed formats and sizes, plus bad files: zero bytes, truncated PNG, random bytes."""
    root = tmp_path / "colors"
    rng = np.random.default_rng(0)
    exts = ["png", "jpg", "bmp", "webp", "gif"]
    for name, rgb in COLORS.items():
        for i in range(12):
            jitter = tuple(int(np.clip(c + rng.integers(-20, 21), 0, 255)) for c in rgb)
            size = (int(rng.integers(16, 40)), int(rng.integers(16, 40)))
            make_image(root / name / f"{i}.{exts[i % len(exts)]}", jitter, size)
    (root / "red" / "empty.png").write_bytes(b"")
    good = (root / "green" / "0.png").read_bytes()
    (root / "green" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "blue" / "noise.jpg").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    (root / "blue" / "notes.txt").write_text("not an image, ignored by extension")
    return root


def write_cifar_archive(folder: Path, n_train=50, n_test=20, cifar100=False, archive=True):
    """A small CIFAR archive in the exact python-pickle format of the real one; image i of
    class c has all pixels equal to 10 * c (a known answer)."""
    rng = np.random.default_rng(1)
    classes = 100 if cifar100 else 10
    name = "cifar-100-python" if cifar100 else "cifar-10-batches-py"
    key = b"fine_labels" if cifar100 else b"labels"

    def batch(n):
        labels = rng.integers(0, classes, n)
        data = np.repeat((labels * 2).astype(np.uint8)[:, None], 3072, axis=1)
        return {b"batch_label": b"x", key: labels.tolist(), b"data": data,
                b"filenames": [b"f.png"] * n}

    files = {}
    if cifar100:
        files["train"] = batch(n_train)
        files["test"] = batch(n_test)
        files["meta"] = {b"fine_label_names": [f"c{i}".encode() for i in range(100)],
                         b"coarse_label_names": [b"x"] * 20}
    else:
        for i in range(1, 6):
            files[f"data_batch_{i}"] = batch(n_train // 5)
        files["test_batch"] = batch(n_test)
        files["batches.meta"] = {b"label_names": [f"class{i}".encode() for i in range(10)],
                                 b"num_cases_per_batch": n_train // 5}
    folder.mkdir(parents=True, exist_ok=True)
    if not archive:
        (folder / name).mkdir()
        for f, obj in files.items():
            (folder / name / f).write_bytes(pickle.dumps(obj, protocol=2))
        return folder / name
    path = folder / ("cifar-100-python.tar.gz" if cifar100 else "cifar-10-python.tar.gz")
    with tarfile.open(path, "w:gz") as tar:
        for f, obj in files.items():
            data = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"{name}/{f}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_idx_set(folder: Path, n_train=40, n_test=10):
    """IDX files like MNIST's where image i is filled with its label * 20."""
    from imgcls.data.sources import write_idx

    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = np.repeat((labels * 20).astype(np.uint8)[:, None, None], 28, 1).repeat(28, 2)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


__all__ = ["make_image", "train_digits", "write_cifar_archive", "write_idx_set", "gzip"]


@pytest.fixture
def fresh_python():
    """What a fresh interpreter prints for ``code``: import-time effects, free of what this
    test process has already imported."""
    def run(code: str) -> str:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True).stdout.strip()
    return run
