"""One measured result appended as a JSON line, with when, where and how it was measured.
Standard library only, so a script running in another environment can use it too."""

import datetime
import importlib.metadata
import json
import os
import platform
import sys
from pathlib import Path

# torch kept to its AVX2 kernels: on a CPU with AVX-512 and bf16, a stand-in for the AVX2 kind
AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
            "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _torch_version() -> str | None:
    if "torch" in sys.modules:  # its own string, local build tag included
        return str(sys.modules["torch"].__version__)
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def append_row(path: str | os.PathLike, row: dict) -> dict:
    """Append ``row`` to the JSON-lines file ``path`` with the date (UTC), the machine (CPU
    and CPU count), the torch and Python versions and the command line; a key of ``row``
    wins over these. Returns the row as written."""
    full = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{_cpu()}, {os.cpu_count()} CPUs", "torch": _torch_version(),
            "python": platform.python_version(), "argv": sys.argv, **row}
    with Path(path).open("a") as f:
        f.write(json.dumps(full) + "\n")
    return full


def read_rows(path: str | os.PathLike) -> list[dict]:
    """The rows of the JSON-lines file ``path``, in the order written."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
