"""Serving a run over HTTP: the Open Inference Protocol v2 (KServe / Triton REST) and a
multipart ``/predict``, with dynamic batching, metrics and limits. See :mod:`.app`."""

from __future__ import annotations

import ipaddress
import os
import signal
import threading

from .app import create_app
from .predictor import BACKENDS, Predictor, load_predictor

__all__ = ["BACKENDS", "Predictor", "create_app", "load_predictor", "serve"]


def serve(target: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, *,
          backend: str = "auto", name: str | None = None, max_batch: int = 32,
          max_delay_ms: float = 5.0, timeout_s: float = 10.0, max_body_mb: float = 16.0,
          queue_size: int = 256, precision: str = "fp32", compile: str = "no",  # noqa: A002
          log_level: str = "info") -> None:
    """Load ``target`` (run folder, model.safetensors or model.onnx) and serve it until
    interrupted. Ctrl-C / SIGTERM stop accepting connections, finish in-flight requests
    (uvicorn's graceful shutdown, bounded by the request timeout) and return normally (the
    command exits 0)."""
    import logging

    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    predictor = load_predictor(target, backend, precision=precision, compile=compile,
                               batch=max_batch)
    app = create_app(predictor, name, max_batch=max_batch, max_delay_ms=max_delay_ms,
                     timeout_s=timeout_s, max_body_mb=max_body_mb, queue_size=queue_size)
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        print(f"warning: listening on {host}: the server has no authentication; put it "
              "behind a proxy that has")
    plan = getattr(predictor, "plan", None)
    print(f"serving {name or predictor.name} ({predictor.backend} backend"
          f"{f', {plan.describe()}' if plan else ''}) on "
          f"http://{host}:{port}  (OpenAPI schema at /openapi.json, metrics at /metrics)")
    # uvicorn answers SIGTERM with a graceful shutdown and then raises the signal again, which
    # by default kills the process (status -15) although every request was answered. Turned
    # into the KeyboardInterrupt that uvicorn.run catches, a drained stop exits 0, like Ctrl-C.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main else None
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level,
                    timeout_graceful_shutdown=int(timeout_s) + 1)
    finally:
        if main:  # None: the previous handler was not installed from Python
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
