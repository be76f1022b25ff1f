"""Data sources: every ``--data`` value becomes a :class:`Source` with train (and test) sets.

Names: ``sample`` (embedded Fashion-MNIST subset), ``fashion-mnist``, ``mnist``, ``cifar10``,
``cifar100``, ``digits``. Anything else is a path: a folder of class sub-folders (optionally
split into ``train/``, ``val/``, ``test/``), or a CSV manifest ``path,label[,split]``.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import pickle
import struct
import tarfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..runtime.images import IMAGE_EXTENSIONS, REFUSED_EXTENSIONS, display_name
from ..utils import atomic_write_bytes, cache_dir
from .dataset import ArrayDataset, Dataset, FileDataset

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]
DIGIT_CLASSES = [str(i) for i in range(10)]
SAMPLE_DIR = Path(__file__).parent / "sample"
SYSTEM_DIRS = {"fashion-mnist": "/usr/share/datasets/fashion-mnist",
               "mnist": "/usr/share/datasets/mnist"}
IDX_URLS = {
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
}
CIFAR = {
    "cifar10": ("cifar-10-batches-py", "cifar-10-python.tar.gz",
                [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "batches.meta", b"label_names", b"labels"),
    "cifar100": ("cifar-100-python", "cifar-100-python.tar.gz", ["train"], ["test"],
                 "meta", b"fine_label_names", b"fine_labels"),
}
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/"
IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
ALIASES = {"fashion_mnist": "fashion-mnist", "fmnist": "fashion-mnist",
           "cifar-10": "cifar10", "cifar-100": "cifar100"}
NAMES = ("sample", "fashion-mnist", "mnist", "cifar10", "cifar100", "digits")


@dataclass
class Source:
    """A data set as the rest of imgcls sees it."""

    name: str
    train: Dataset
    test: Dataset | None = None
    val: Dataset | None = None

    @property
    def classes(self) -> list[str]:
        return self.train.classes


# --------------------------------------------------------------------------- IDX (MNIST)
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
               0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed), the MNIST family's original format."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read IDX file ({e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    count = int(np.prod(dims)) if dims else 0
    body = raw[4 + 4 * ndim:]
    if len(body) != count * dtype.itemsize:
        raise DataError(f"{path}: IDX file is truncated or padded ({len(body)} bytes of data, "
                        f"expected {count * dtype.itemsize})")
    return np.frombuffer(body, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzip-compressed IDX file."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    atomic_write_bytes(path, gzip.compress(header + array.tobytes(), mtime=0))


def _idx_split(folder: Path, prefix: str, classes: list[str]) -> ArrayDataset:
    images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")
    if images.ndim != 3 or len(images) != len(labels):
        raise DataError(f"{folder}: {prefix} images {images.shape} and labels {labels.shape} "
                        "do not match")
    return ArrayDataset(torch.from_numpy(images.copy())[:, None],
                        torch.from_numpy(labels.astype(np.int64)), classes)


def _find_idx_folder(name: str, data_dir: str | None) -> Path:
    candidates = [Path(data_dir)] if data_dir else []
    candidates += [Path(SYSTEM_DIRS[name]), cache_dir("datasets", name)]
    for folder in candidates:
        if all((folder / f).exists() for f in IDX_FILES):
            return folder
    if data_dir:
        raise DataError(f"{data_dir}: no {name} IDX files there (expected {', '.join(IDX_FILES)})")
    dest = cache_dir("datasets", name)
    _download_all([IDX_URLS[name] + f for f in IDX_FILES], dest, name,
                  hint="install Debian's dataset-fashion-mnist or pass --data-dir")
    return dest


def _download_all(urls: list[str], dest: Path, name: str, hint: str) -> None:
    for url in urls:
        target = dest / url.rsplit("/", 1)[1]
        if target.exists():
            continue
        try:
            with urllib.request.urlopen(url, timeout=60) as r:
                atomic_write_bytes(target, r.read())
        except OSError as e:
            raise DataError(f"{name}: not found locally and the download of {url} failed ({e}); "
                            f"{hint}") from e


def _load_idx_source(name: str, data_dir: str | None) -> Source:
    folder = _find_idx_folder(name, data_dir)
    classes = FASHION_CLASSES if name == "fashion-mnist" else DIGIT_CLASSES
    return Source(name, _idx_split(folder, "train", classes), _idx_split(folder, "t10k", classes))


def _load_sample(_: str, __: str | None) -> Source:
    train = _idx_split(SAMPLE_DIR, "train", FASHION_CLASSES)
    test = _idx_split(SAMPLE_DIR, "test", FASHION_CLASSES)
    return Source("sample", train, test)


# --------------------------------------------------------------------------- CIFAR
class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches without running arbitrary code: only numpy arrays, dicts,
    lists, strings and numbers may be reconstructed."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _unpickle(data: bytes, where: str) -> dict:
    try:
        obj = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:
        raise DataError(f"{where}: not a CIFAR python batch ({e})") from e
    if not isinstance(obj, dict):
        raise DataError(f"{where}: not a CIFAR python batch (a {type(obj).__name__})")
    return obj


def _cifar_reader(name: str, data_dir: str | None) -> tuple[Callable[[str], bytes], str]:
    folder_name, archive_name = CIFAR[name][:2]
    roots = [Path(data_dir)] if data_dir else []
    roots.append(cache_dir("datasets"))
    for root in roots:
        for folder in (root, root / folder_name):
            if (folder / CIFAR[name][4]).is_file():
                return (lambda f, d=folder: (d / f).read_bytes()), str(folder)
        for archive in (root, root / archive_name):
            if archive.is_file() and tarfile.is_tarfile(archive):
                tar = tarfile.open(archive)
                members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}

                def read(f: str, tar: tarfile.TarFile = tar, members: dict = members) -> bytes:
                    if f not in members:
                        raise DataError(f"{tar.name}: archive has no member {f}")
                    return tar.extractfile(members[f]).read()

                return read, str(archive)
    if data_dir:
        raise DataError(f"{data_dir}: no {name} data there (expected the folder {folder_name}/ "
                        f"or the archive {archive_name})")
    dest = cache_dir("datasets")
    _download_all([CIFAR_URL + archive_name], dest, name,
                  hint=f"put {archive_name} in a folder and pass --data-dir")
    return _cifar_reader(name, str(dest))


def _load_cifar(name: str, data_dir: str | None) -> Source:
    _, _, train_files, test_files, meta_file, names_key, labels_key = CIFAR[name]
    read, where = _cifar_reader(name, data_dir)
    meta = _unpickle(read(meta_file), f"{where}/{meta_file}")
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta[names_key]]

    def split(files: list[str]) -> ArrayDataset:
        xs, ys = [], []
        for f in files:
            batch = _unpickle(read(f), f"{where}/{f}")
            try:
                xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(batch[labels_key], dtype=np.int64))
            except (KeyError, ValueError) as e:
                raise DataError(f"{where}/{f}: malformed CIFAR batch ({e})") from e
        return ArrayDataset(torch.from_numpy(np.concatenate(xs)),
                            torch.from_numpy(np.concatenate(ys)), classes)

    return Source(name, split(train_files), split(test_files))


# --------------------------------------------------------------------------- digits
DIGITS_TEST_FRACTION = 0.2


def _load_digits(_: str, __: str | None) -> Source:
    from sklearn.datasets import load_digits

    from .splits import stratified_split

    d = load_digits()
    images = torch.from_numpy(np.round(d.images * (255 / 16)).astype(np.uint8))[:, None]
    ds = ArrayDataset(images, torch.from_numpy(d.target.astype(np.int64)), DIGIT_CLASSES)
    # The digits have no official test split: a fixed stratified 20% (seed 0, whatever the
    # run's seed) plays that part so that every run is scored on the same images.
    train_idx, test_idx = stratified_split(ds.labels, DIGITS_TEST_FRACTION, seed=0)
    return Source("digits", ds.subset(train_idx), ds.subset(test_idx))


# --------------------------------------------------------------------------- folders, CSV
# What operating systems and tools leave in folders of images: never a class, never an image.
LITTER_DIRS = frozenset({"__MACOSX", "@eaDir", "$RECYCLE.BIN", "System Volume Information",
                         "__pycache__"})
LITTER_FILES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini", "icon\r"})


def _is_litter(name: str) -> bool:
    """Hidden files and folders (``.DS_Store``, ``._*`` AppleDouble files, ``.git``) and the
    metadata of macOS, Windows and NAS boxes: ignored silently, not counted as bad images."""
    return name.startswith(".") or name in LITTER_DIRS or name.lower() in LITTER_FILES


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not _is_litter(p.name))


def folder_images(folder: Path) -> list[Path]:
    """Every file below ``folder`` with an image extension (any case), following symbolic
    links to folders but never into a loop, leaving out litter."""
    wanted = IMAGE_EXTENSIONS | REFUSED_EXTENSIONS
    # a folder's ancestors count as walked: a link up the tree is a loop
    seen = {(st.st_dev, st.st_ino) for st in map(os.stat, folder.resolve().parents)}
    files = []
    for top, dirs, names in os.walk(folder, followlinks=True):
        st = os.stat(top)
        if (st.st_dev, st.st_ino) in seen:  # a link back up the tree: walked already
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not _is_litter(d))
        files += [Path(top) / n for n in names
                  if not _is_litter(n) and os.path.splitext(n)[1].lower() in wanted]
    return sorted(files)


def _scan_class_folder(root: Path, classes: list[str] | None = None) -> FileDataset:
    dirs = _class_dirs(root)
    if not dirs:
        raise DataError(f"{display_name(root)}: no class sub-folders (expected "
                        f"{display_name(root)}/<class>/<image files>)")
    found = [display_name(d.name) for d in dirs]
    names = found
    if classes is not None:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise DataError(f"{display_name(root)}: classes {unknown} are not in the training "
                            "classes")
        names = classes
    paths, labels = [], []
    for d, name in zip(dirs, found):
        files = folder_images(d)
        if not files:
            raise DataError(f"{display_name(d)}: class folder has no image files "
                            f"({', '.join(sorted(IMAGE_EXTENSIONS))}); remove it or add images")
        paths += files
        labels += [names.index(name)] * len(files)
    return FileDataset(paths, torch.tensor(labels, dtype=torch.long), names)


def _load_folder(root: Path) -> Source:
    sub = {d.name.lower(): d for d in _class_dirs(root)}
    if "train" in sub and ("test" in sub or "val" in sub):
        train = _scan_class_folder(sub["train"])
        other = {k: _scan_class_folder(sub[k], train.classes) for k in ("val", "test") if k in sub}
        return Source(str(root), train, other.get("test"), other.get("val"))
    return Source(str(root), _scan_class_folder(root))


def _sort_classes(names: set[str]) -> list[str]:
    if all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def _load_manifest(path: Path) -> Source:
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8-sig").splitlines()))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read CSV manifest ({e})") from e
    start = 1 if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "label"] else 0
    entries, missing = [], []
    for line, row in enumerate(rows[start:], start=start + 1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise DataError(f"{path}:{line}: expected 'path,label[,split]', got {','.join(row)!r}")
        file = Path(row[0].strip())
        file = file if file.is_absolute() else path.parent / file
        split = row[2].strip().lower() if len(row) > 2 and row[2].strip() else "train"
        if split not in ("train", "val", "test"):
            raise DataError(f"{path}:{line}: split must be train, val or test, got {split!r}")
        if not file.is_file():
            missing.append(f"line {line}: {file}")
        entries.append((file, row[1].strip(), split))
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise DataError(f"{path}: {len(missing)} listed file(s) do not exist: "
                        f"{'; '.join(missing[:5])}{more}")
    if not entries:
        raise DataError(f"{path}: the manifest lists no images")
    classes = _sort_classes({label for _, label, _ in entries})

    def part(split: str) -> FileDataset | None:
        sel = [(f, label) for f, label, s in entries if s == split]
        if not sel:
            return None
        return FileDataset([f for f, _ in sel],
                           torch.tensor([classes.index(lb) for _, lb in sel]), classes)

    train = part("train")
    if train is None:
        raise DataError(f"{path}: no rows for the train split")
    return Source(str(path), train, part("test"), part("val"))


# --------------------------------------------------------------------------- entry point
_LOADERS: dict[str, Callable[[str, str | None], Source]] = {
    "sample": _load_sample,
    "fashion-mnist": _load_idx_source,
    "mnist": _load_idx_source,
    "cifar10": _load_cifar,
    "cifar100": _load_cifar,
    "digits": _load_digits,
}


def load_source(spec: str, data_dir: str | os.PathLike | None = None) -> Source:
    """Resolve a ``--data`` value: a data set name or a folder / CSV path."""
    spec = str(spec)
    name = ALIASES.get(spec.lower(), spec.lower())
    data_dir = str(data_dir) if data_dir else None
    if name in _LOADERS:
        return _LOADERS[name](name, data_dir)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _load_folder(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        return _load_manifest(path)
    if path.is_file():
        raise DataError(f"{spec}: a data path must be a folder of class sub-folders or a .csv "
                        "manifest")
    raise DataError(f"{spec}: no such data set name or path (names: {', '.join(NAMES)})")
