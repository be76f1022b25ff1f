"""The evaluation plan under its former import path. It lives in :mod:`imgcls.runtime.plan`,
which training and inference share; nothing in imgcls imports it from here. Kept for
scripts that still do (``benchmarks/audit.py``)."""

from ..runtime.plan import eval_plan

__all__ = ["eval_plan"]
