"""Progress bars (rich) that stay quiet when output is not a terminal or is disabled."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")
console = Console(stderr=True)


def enabled(wanted: bool = True) -> bool:
    """Bars are drawn when ``wanted`` (``--progress``), on an interactive terminal, unless
    the user set ``IMGCLS_NO_PROGRESS`` in the environment."""
    return wanted and sys.stderr.isatty() and not os.environ.get("IMGCLS_NO_PROGRESS")


def make_progress(wanted: bool = True) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
        console=console, disable=not enabled(wanted), transient=False,
    )


def progress_bar(items: Iterable[T], total: int | None = None, desc: str = "",
                 wanted: bool = True) -> Iterator[T]:
    """Iterate ``items`` with a bar (no-op when disabled)."""
    with make_progress(wanted) as p:
        task = p.add_task(desc, total=total, info="")
        for item in items:
            yield item
            p.advance(task)
