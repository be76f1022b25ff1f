"""Decode image files once into the in-memory form (uint8 tensor), with an on-disk cache.

Bad files (unreadable, truncated, zero bytes, over the pixel limit, wrong format) are skipped,
counted and listed; they never stop the run.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..progress import progress_bar
from ..runtime.images import (
    MAX_PIXELS,
    ImageDecodeError,
    decode_image,
    probe_image,
    resize_to,
)
from ..utils import cache_dir
from .dataset import ArrayDataset, FileDataset


def probe_files(ds: FileDataset, desc: str = "reading image headers",
                max_pixels: int = MAX_PIXELS) -> tuple[FileDataset, list[str]]:
    """The files of ``ds`` whose header opens (format, pixel limit), and the reasons of those
    that do not: a header read per file, in parallel threads, no pixel decoded."""
    errors: list[str | None] = [None] * len(ds)

    def work(i: int) -> None:
        try:
            probe_image(ds.paths[i], max_pixels)
        except ImageDecodeError as e:
            errors[i] = str(e)

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for _ in progress_bar(pool.map(work, range(len(ds))), total=len(ds), desc=desc):
            pass
    keep = [i for i, e in enumerate(errors) if e is None]
    return ds.subset(keep), [e for e in errors if e is not None]


def grayscale_share(ds: FileDataset, limit: int = 2000, max_pixels: int = MAX_PIXELS
                    ) -> tuple[int, int]:
    """(grayscale images, images probed) among up to ``limit`` of ``ds`` (header reads)."""
    step = max(1, len(ds) // limit)
    gray = probed = 0
    for p in ds.paths[::step]:
        try:
            gray += probe_image(p, max_pixels)[2]
            probed += 1
        except ImageDecodeError:
            continue
    return gray, probed


def infer_channels(ds: FileDataset, limit: int = 2000, max_pixels: int = MAX_PIXELS) -> int:
    """1 when most probed images are grayscale, else 3: one colour photo among many scans
    does not make the model a colour model (its colour is reduced to luma)."""
    gray, probed = grayscale_share(ds, limit, max_pixels)
    return 1 if probed and gray * 2 > probed else 3


def infer_image_size(ds: FileDataset, limit: int = 200, max_pixels: int = MAX_PIXELS) -> int:
    """Median shorter side of up to ``limit`` images, clipped to 16..224 pixels."""
    step = max(1, len(ds) // limit)
    sides = []
    for p in ds.paths[::step]:
        try:
            w, h, _ = probe_image(p, max_pixels)
            sides.append(min(w, h))
        except ImageDecodeError:
            continue
    if not sides:
        raise DataError("none of the probed images could be read: is this an image folder?")
    return int(np.clip(np.median(sides), 16, 224))


def cache_key(ds: FileDataset, size: int, channels: int, resize: str,
              max_pixels: int = MAX_PIXELS) -> str:
    """A stable key of the files (paths, sizes, modification times) and the decoding."""
    h = hashlib.sha256(f"v3|{size}|{channels}|{resize}|{max_pixels}".encode())
    for p in ds.paths:
        h.update(os.fsencode(p))  # the name's own bytes: not every file name is UTF-8
        try:
            st = os.stat(p)
            h.update(f"|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(b"|missing\n")
    return h.hexdigest()[:24]


def materialize(
    ds: FileDataset,
    size: int,
    channels: int,
    *,
    resize: str = "shorter_crop",
    cache: bool = True,
    workers: int | None = None,
    desc: str = "decoding images",
    max_pixels: int = MAX_PIXELS,
    progress: bool = True,
) -> tuple[ArrayDataset, list[str]]:
    """Decode and resize every file to ``channels`` x ``size`` x ``size`` uint8.

    Returns the in-memory data set (bad files left out) and the list of skipped files with
    their reasons. With ``cache`` the decoded array is kept under the imgcls cache folder,
    keyed by the files' paths, sizes and modification times, so a second run decodes nothing.
    """
    key = cache_key(ds, size, channels, resize, max_pixels)
    cache_file = cache_dir("decoded") / f"{key}.npz" if cache else None
    if cache_file is not None and cache_file.exists():
        try:
            with np.load(cache_file, allow_pickle=False) as z:
                keep, images = z["keep"], z["images"]
                skipped = [str(s) for s in z["skipped"]]
            return ArrayDataset(torch.from_numpy(images), ds.labels[torch.from_numpy(keep)],
                                ds.classes), skipped
        except (OSError, ValueError, KeyError):
            cache_file.unlink(missing_ok=True)  # a broken cache is rebuilt, never trusted

    out = np.empty((len(ds), channels, size, size), dtype=np.uint8)
    ok = np.zeros(len(ds), dtype=bool)
    errors: list[str | None] = [None] * len(ds)

    def work(i: int) -> None:
        try:
            img = resize_to(decode_image(ds.paths[i], channels, max_pixels), size, resize)
            out[i] = img.numpy()
            ok[i] = True
        except ImageDecodeError as e:
            errors[i] = str(e)

    # Pillow releases the GIL while decoding, so threads use every core without the start-up
    # cost and pickling of worker processes.
    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        for _ in progress_bar(pool.map(work, range(len(ds))), total=len(ds), desc=desc,
                              wanted=progress):
            pass
    keep = np.flatnonzero(ok)
    skipped = [e for e in errors if e is not None]
    if len(keep) == 0:
        raise DataError(f"none of the {len(ds)} images could be decoded; first error: "
                        f"{skipped[0] if skipped else '?'}")
    images = out[keep]
    if cache_file is not None:
        tmp = Path(f"{cache_file}.{os.getpid()}.tmp.npz")
        np.savez(tmp, images=images, keep=keep, skipped=np.array(skipped, dtype=str))
        os.replace(tmp, cache_file)
    return ArrayDataset(torch.from_numpy(images), ds.labels[torch.from_numpy(keep)],
                        ds.classes), skipped
