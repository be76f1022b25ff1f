"""Small helpers used across the package: crash-safe writes and the cache folder."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import yaml


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temp file in the same folder, fsync it, then rename over ``path``:
    a reader sees the old file or the new one, never half of one, even after a crash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide run files from other users
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def write_yaml(path: str | os.PathLike, obj: object) -> None:
    atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False))


def cache_dir(*parts: str) -> Path:
    """``$IMGCLS_HOME`` (default ``~/.cache/imgcls``) joined with ``parts``, created."""
    root = Path(os.environ.get("IMGCLS_HOME") or Path.home() / ".cache" / "imgcls")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
