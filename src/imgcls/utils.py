"""Small helpers used across the package: crash-safe writes, safetensors headers and the cache
folder."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import yaml

from .errors import RunError

Log = Callable[[str], None]  # where progress messages go: print, a list's append, ...


def process_seconds() -> float | None:
    """Seconds since this process started (Linux's /proc/self/stat); None where unknown."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes, exclusive: bool = False) -> None:
    """Write ``data`` to a temp file in the same folder, fsync it, then rename over ``path``:
    a reader sees the old file or the new one, never half of one, even after a crash.
    ``exclusive``: FileExistsError if ``path`` exists, also when another process makes it
    at the same moment (the temp file is hard-linked to ``path``, not renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide run files from other users
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            _link_exclusive(tmp, path, data)
        else:
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


def _link_exclusive(tmp: str, path: Path, data: bytes) -> None:
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: exclusive still, if not atomic
        with open(path, "xb") as f:
            f.write(data)
    Path(tmp).unlink()


def atomic_write_text(path: str | os.PathLike, text: str, exclusive: bool = False) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), exclusive)


def write_json(path: str | os.PathLike, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def write_yaml(path: str | os.PathLike, obj: object, exclusive: bool = False) -> None:
    atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False), exclusive)


def cache_dir(*parts: str) -> Path:
    """``$IMGCLS_HOME`` (default ``~/.cache/imgcls``) joined with ``parts``, created."""
    root = Path(os.environ.get("IMGCLS_HOME") or Path.home() / ".cache" / "imgcls")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_safetensors(path: str | os.PathLike) -> tuple[dict, dict]:
    """Tensors and the ``imgcls`` JSON header of a safetensors file (a run's model file or a
    training checkpoint); RunError naming the file if it is missing, truncated or not one of
    ours."""
    import safetensors
    import safetensors.torch

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise RunError(f"{path}: cannot read ({e.strerror or e})") from e
    try:
        tensors = safetensors.torch.load(data)
        with safetensors.safe_open(path, "pt") as f:
            header = f.metadata() or {}
        meta = json.loads(header.get("imgcls", "{}"))
    except Exception as e:  # safetensors raises several types for damaged files
        raise RunError(f"{path}: damaged or not a safetensors file ({e})") from e
    return tensors, meta


def safetensors_bytes(tensors: dict, meta: dict) -> bytes:
    """A safetensors file of ``tensors`` (contiguous, CPU, no shared storage) with ``meta`` as
    its ``imgcls`` JSON header."""
    import safetensors.torch

    return safetensors.torch.save(tensors, metadata={"imgcls": json.dumps(meta)})


def settings_from(cls: type, source: object, **resolved: object) -> object:
    """An instance of the dataclass ``cls`` from the same-named attributes of ``source``
    (a run configuration), ``resolved`` values taking their place."""
    return cls(**{f.name: resolved[f.name] if f.name in resolved else getattr(source, f.name)
                  for f in fields(cls)})


# Keywords renamed to the names the command line and config use; the former names are
# accepted for one release, with a DeprecationWarning.
FORMER_NAMES = {"input_size": "image_size", "in_chans": "channels",
                "default_input_size": "default_image_size", "batch": "batch_size",
                "score": "ood_score"}


def former_keywords(kwargs: dict, where: str, *former: str, stacklevel: int = 3
                    ) -> tuple[dict, dict]:
    """(``kwargs`` without the ``former`` names (keys of :data:`FORMER_NAMES`), {new name:
    value} of those given), with a DeprecationWarning for each that ``where`` received,
    attributed to the caller of ``where`` (``stacklevel`` counts from here)."""
    import warnings

    given = {FORMER_NAMES[k]: kwargs[k] for k in former if k in kwargs}
    for old in (k for k in former if k in kwargs):
        warnings.warn(f"{where}: the keyword {old!r} is now {FORMER_NAMES[old]!r}; {old!r} "
                      "will be removed", DeprecationWarning, stacklevel=stacklevel)
    return {k: v for k, v in kwargs.items() if k not in former}, given


def former_shape_keywords(former: dict, where: str, image_size: int, channels: int,
                          batch_size: int) -> tuple[int, int, int]:
    """(image_size, channels, batch_size), each taken from its former keyword (``input_size``,
    ``in_chans``, ``batch``) where ``former`` holds it, with a DeprecationWarning."""
    other, given = former_keywords(former, where, "input_size", "in_chans", "batch",
                                   stacklevel=4)
    no_other_keywords(other, where)
    return (given.get("image_size", image_size), given.get("channels", channels),
            given.get("batch_size", batch_size))


def no_other_keywords(kwargs: dict, where: str) -> None:
    """TypeError naming what ``where`` does not take (what :func:`former_keywords` left)."""
    if kwargs:
        raise TypeError(f"{where}() got unexpected keyword argument(s) {', '.join(kwargs)}")
