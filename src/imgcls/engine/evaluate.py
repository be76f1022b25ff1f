"""The logits pass under its former import path. It lives in :mod:`imgcls.runtime.forward`,
which training and inference share; nothing in imgcls imports it from here. Kept for
scripts that still do (``benchmarks/audit.py``)."""

from ..runtime.forward import predict_logits

__all__ = ["predict_logits"]
