"""Plots (PNG, matplotlib without a display) and the self-contained HTML report."""

from __future__ import annotations


def absent_note(result: dict) -> str:
    """The sentence that names the classes absent from the evaluated data; "" if none."""
    absent = result.get("absent_classes") or []
    if not absent:
        return ""
    return (f"absent from these data (support 0): {', '.join(absent)}; the macro averages "
            f"are over the {len(result['per_class']) - len(absent)} classes present")
