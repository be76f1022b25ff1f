"""Byte-identical image files given different labels: the same file copied into two class
folders (or into a training class and a test class), which no label can make right.

Files are grouped by size first, so only files that share their size with a file of another
class are read and hashed; the answer is cached under the imgcls cache folder, keyed by the
files' paths, sizes and modification times, so a repeated run reads nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from pathlib import Path

from ..runtime.images import display_name
from ..utils import atomic_write_text, cache_dir
from .dataset import FileDataset


def _digest(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "blake2b").hexdigest()
    except OSError:  # unreadable files are reported by the decoder, with their reason
        return None


def label_conflicts(parts: list[FileDataset], unreadable: list[str] = (),
                    cache: bool = True) -> list[str]:
    """One line per pair of byte-identical files with different class names across
    ``parts`` (e.g. the training and test folders): ``"a = b (classes X and Y)"``. Files
    named in ``unreadable`` (ImageDecodeError messages) are left out: they are not trained on."""
    bad = {m.split(": ", 1)[0] for m in unreadable}
    files: list[tuple[Path, str]] = [(p, ds.classes[int(y)]) for ds in parts
                                     for p, y in zip(ds.paths, ds.labels.tolist())
                                     if display_name(p) not in bad]
    key = hashlib.sha256(b"conflicts-v1")
    sizes: list[int] = []
    for p, label in files:
        try:
            st = os.stat(p)
            sizes.append(st.st_size)
            key.update(os.fsencode(p) + f"|{label}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            sizes.append(-1)
    cache_file = cache_dir("conflicts") / f"{key.hexdigest()[:24]}.json" if cache else None
    if cache_file is not None and cache_file.exists():
        try:
            return list(json.loads(cache_file.read_text()))
        except (OSError, ValueError):
            pass  # rebuilt below
    by_size: dict[int, list[int]] = defaultdict(list)
    for i, size in enumerate(sizes):
        if size > 0:
            by_size[size].append(i)
    by_digest: dict[str, list[int]] = defaultdict(list)
    for group in by_size.values():
        if len({files[i][1] for i in group}) > 1:  # only sizes shared across classes
            for i in group:
                d = _digest(files[i][0])
                if d is not None:
                    by_digest[d].append(i)
    lines = []
    for group in by_digest.values():
        first = group[0]
        for i in group[1:]:
            if files[i][1] != files[first][1]:
                lines.append(f"{display_name(files[first][0])} = {display_name(files[i][0])} "
                             f"(classes {files[first][1]} and {files[i][1]})")
    lines.sort()
    if cache_file is not None:
        atomic_write_text(cache_file, json.dumps(lines))
    return lines
