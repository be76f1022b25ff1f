"""The HTTP server: Open Inference Protocol v2 routes, ``/predict``, ``/metrics``, dynamic
batching, limits. Every error a client can cause is a 4xx ``{"error": ...}``."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager

import numpy as np
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..data.images import MAX_PIXELS
from ..errors import ConfigError, ImgclsError
from . import protocol
from .predictor import Predictor
from .protocol import HTTPError

log = logging.getLogger("imgcls.serve")
INLINE_BYTES = 64 * 1024
ASGIApp = Callable[..., Awaitable[None]]


class Metrics:
    """Prometheus metrics in a registry of their own (several apps may live in one process)."""

    def __init__(self, max_batch: int) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("imgcls_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=r)
        self.latency = Histogram("imgcls_request_seconds", "HTTP request latency", ["route"],
                                 registry=r, buckets=(.001, .0025, .005, .01, .025, .05, .1,
                                                      .25, .5, 1, 2.5, 5, 10))
        sizes = [2 ** i for i in range(max_batch.bit_length()) if 2 ** i < max_batch]
        self.batch = Histogram("imgcls_batch_size", "images per model run", registry=r,
                               buckets=(*sizes, max_batch))
        self.inference = Histogram("imgcls_inference_seconds", "model run time per batch",
                                   registry=r)
        self.images = Counter("imgcls_images", "images classified", registry=r)
        self.queue = Gauge("imgcls_queue_requests", "requests waiting for the model",
                           registry=r)
        self.ready = Gauge("imgcls_ready", "1 once the warm-up inference is done", registry=r)


class Batcher:
    """Dynamic batching: requests queue up; one worker takes everything queued (up to
    ``max_batch`` images), runs the model once in its own thread and hands each request its
    rows. Requests arriving while the model runs form the next batch. The worker waits (up to
    ``max_delay_s``) only for requests known to be coming (being parsed or decoded right
    now), so a lone request pays no delay."""

    def __init__(self, predict: Predictor, max_batch: int, max_delay_s: float, queue_size: int,
                 metrics: Metrics) -> None:
        self.predict, self.max_batch, self.max_delay_s = predict, max_batch, max_delay_s
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=queue_size)
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="imgcls-model")
        self.task: asyncio.Task | None = None
        self._held: tuple | None = None  # an item that did not fit the previous batch
        self.incoming = 0  # requests being parsed / decoded: they will be submitted soon
        metrics.queue.set_function(self.queue.qsize)

    @contextmanager
    def expecting(self) -> Iterator[None]:
        self.incoming += 1
        try:
            yield
        finally:
            self.incoming -= 1

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def submit(self, images: np.ndarray) -> np.ndarray:
        fut = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((images, fut))
        except asyncio.QueueFull:
            raise HTTPError("the server is busy (request queue full); retry later", 503) from None
        return await fut

    async def _gather(self) -> list[tuple]:
        loop = asyncio.get_running_loop()
        first = self._held or await self.queue.get()
        self._held = None
        items, n = [first], len(first[0])
        deadline = loop.time() + self.max_delay_s
        while n < self.max_batch:
            try:
                item = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - loop.time()
                if left <= 0 or not self.incoming:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), left)
                except TimeoutError:
                    break
            if n + len(item[0]) > self.max_batch:
                self._held = item
                break
            items.append(item)
            n += len(item[0])
        return items

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # requests that timed out meanwhile have cancelled their futures: skip them
            items = [it for it in await self._gather() if not it[1].done()]
            if not items:
                continue
            x = items[0][0] if len(items) == 1 else np.concatenate([it[0] for it in items])
            t0 = time.perf_counter()
            try:
                probs = await loop.run_in_executor(self.executor, self.predict, x)
            except Exception as e:  # a model fault: fail these requests, keep serving
                log.exception("inference failed on a batch of %d", len(x))
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            self.metrics.inference.observe(time.perf_counter() - t0)
            self.metrics.batch.observe(len(x))
            self.metrics.images.inc(len(x))
            start = 0
            for images, fut in items:
                if not fut.done():
                    fut.set_result(probs[start:start + len(images)])
                start += len(images)

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        while not self.queue.empty():
            _, fut = self.queue.get_nowait()
            if not fut.done():
                fut.set_exception(HTTPError("the server is shutting down", 503))
        self.executor.shutdown(wait=False)


async def _send_json(send: Callable, status: int, obj: dict, close: bool = False) -> None:
    body = json.dumps(obj).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    if close:  # the unread rest of the body must not be parsed as a next request
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Edge:
    """ASGI middleware at the edge: reads a POST body up to ``max_body`` bytes (413 from
    Content-Length before reading, or as soon as the streamed size passes it), records the
    metrics, and turns anything that escapes the app into a logged JSON 500 instead of a
    dropped connection."""

    def __init__(self, app: ASGIApp, max_body: int, metrics: Metrics) -> None:
        self.app, self.max_body, self.metrics = app, max_body, metrics

    async def _body(self, scope: dict, receive: Callable) -> bytes | tuple[int, str] | None:
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit():
            return 400, "Content-Length must be a number"
        if int(length) > self.max_body:
            return 413, f"request body of {int(length):,} bytes is over the limit of " \
                        f"{self.max_body:,}"
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return None
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body:
                return 413, f"request body is over the limit of {self.max_body:,} bytes"
            if not msg.get("more_body"):
                return b"".join(chunks)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, status = time.perf_counter(), [0]

        async def send_(msg: dict) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            if scope["method"] in ("POST", "PUT", "PATCH"):
                body = await self._body(scope, receive)
                if body is None:  # the client went away
                    return
                if isinstance(body, tuple):
                    return await _send_json(send_, body[0], {"error": body[1]}, close=True)
                receive = _replay(body, receive)
            await self.app(scope, receive, send_)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if not status[0]:
                await _send_json(send_, 500, {"error": "internal server error (logged)"})
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route, str(status[0] or 499)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - t0)


def _replay(body: bytes, receive: Callable) -> Callable:
    """An ASGI receive that gives the body already read, then waits on the real one (for the
    disconnect message)."""
    given = False

    async def replay() -> dict:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}
    return replay


def create_app(predictor: Predictor, name: str | None = None, *, max_batch: int = 32,
               max_delay_ms: float = 5.0, timeout_s: float = 10.0, max_body_mb: float = 16.0,
               queue_size: int = 256, max_pixels: int = MAX_PIXELS) -> FastAPI:
    """The FastAPI app serving ``predictor`` as model ``name`` (default: the predictor's)."""
    from .. import __version__

    if min(max_batch, timeout_s, max_body_mb, queue_size) <= 0 or max_delay_ms < 0:
        raise ConfigError("max batch, timeout, max body size and queue size must be positive, "
                          "max delay not negative")
    name = name or predictor.name
    pre = predictor.pre
    labels = list(pre.class_names)
    metrics = Metrics(max_batch)
    state: dict = {"ready": False, "batcher": None}
    c, s, _ = predictor.input_shape

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # noqa: ANN202
        batcher = Batcher(predictor, max_batch, max_delay_ms / 1000, queue_size, metrics)
        batcher.start()
        state["batcher"] = batcher
        # the first run pays for allocation and kernel selection: not a client's request
        out = await batcher.submit(np.zeros((1, c, s, s), np.uint8))
        if out.shape != (1, len(labels)):
            raise ImgclsError(f"the model returns {out.shape[1:]} scores for "
                              f"{len(labels)} class names")
        # Everything allocated so far (model, app, imports) lives as long as the server: keep
        # it out of the garbage collector's full passes, whose pauses set the tail latency.
        gc.collect()
        gc.freeze()
        state["ready"] = True
        metrics.ready.set(1)
        log.info("model %s ready (%s backend)", name, predictor.backend)
        yield
        state["ready"] = False
        metrics.ready.set(0)
        await batcher.stop()  # uvicorn has finished the in-flight requests by now

    app = FastAPI(title="imgcls inference server", version=__version__, lifespan=lifespan,
                  description="Open Inference Protocol v2 (KServe / Triton REST) for an "
                              "imgcls model, plus a multipart /predict.")

    @app.exception_handler(HTTPError)
    async def _http_error(_: Request, e: HTTPError) -> JSONResponse:
        return JSONResponse({"error": e.message}, e.status)

    @app.exception_handler(StarletteHTTPException)
    async def _starlette_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(e.detail)}, e.status_code, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, e: RequestValidationError) -> JSONResponse:
        msg = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        return JSONResponse({"error": msg or "invalid request"}, 400)

    def model(model_name: str, version: str | None = None) -> None:
        if model_name != name or version not in (None, "1"):
            raise HTTPError(f"unknown model {model_name!r}" + (f" version {version!r}"
                            if version else "") + f"; this server has {name!r} version 1", 404)

    def batcher() -> Batcher:
        if not state["ready"]:
            raise HTTPError("the model is not ready yet", 503)
        return state["batcher"]

    async def run(images: np.ndarray) -> np.ndarray:
        return await batcher().submit(images)

    async def limited(coro: Awaitable) -> object:
        try:
            return await asyncio.wait_for(coro, timeout_s)
        except TimeoutError:
            raise HTTPError(f"the request took longer than {timeout_s:g} s", 504) from None

    metadata = {
        "name": name, "versions": ["1"],
        "platform": "onnxruntime_onnx" if predictor.backend == "onnx" else "pytorch",
        "inputs": [{"name": protocol.INPUT_NAME, "datatype": "UINT8", "shape": [-1, c, s, s]}],
        "outputs": [{"name": protocol.OUTPUT_NAME, "datatype": "FP32",
                     "shape": [-1, len(labels)]}],
    }

    @app.get("/v2/health/live", tags=["health"])
    async def live() -> dict:
        return {"live": True}

    @app.get("/v2/health/ready", tags=["health"])
    async def ready() -> JSONResponse:
        return JSONResponse({"ready": state["ready"]}, 200 if state["ready"] else 503)

    @app.get("/v2", tags=["metadata"])
    async def server_metadata() -> dict:
        return {"name": "imgcls", "version": __version__,
                "extensions": ["binary_tensor_data", "classification"]}

    @app.get("/v2/models/{model_name}", tags=["metadata"])
    @app.get("/v2/models/{model_name}/versions/{version}", tags=["metadata"])
    async def model_metadata(model_name: str, version: str | None = None) -> dict:
        model(model_name, version)
        return metadata

    @app.get("/v2/models/{model_name}/ready", tags=["health"])
    @app.get("/v2/models/{model_name}/versions/{version}/ready", tags=["health"])
    async def model_ready(model_name: str, version: str | None = None) -> JSONResponse:
        model(model_name, version)
        return JSONResponse({"name": name, "ready": state["ready"]},
                            200 if state["ready"] else 503)

    infer_doc = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["inputs"], "properties": {
            "id": {"type": "string"},
            "inputs": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string", "enum": [protocol.INPUT_NAME]},
                "datatype": {"type": "string", "enum": ["UINT8", "FP32", "BYTES"]},
                "shape": {"type": "array", "items": {"type": "integer"}},
                "data": {"type": "array", "items": {}}}}},
            "outputs": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string", "enum": [protocol.OUTPUT_NAME]},
                "parameters": {"type": "object", "properties": {
                    "classification": {"type": "integer"},
                    "binary_data": {"type": "boolean"}}}}}}}}}}}}

    @app.post("/v2/models/{model_name}/infer", tags=["inference"], openapi_extra=infer_doc)
    @app.post("/v2/models/{model_name}/versions/{version}/infer", tags=["inference"],
              openapi_extra=infer_doc, include_in_schema=False)
    async def infer(model_name: str, request: Request, version: str | None = None) -> Response:
        """Classify a UINT8/FP32 pixel tensor or BYTES image files (Triton's binary tensor
        extension and classification parameter included)."""
        model(model_name, version)
        if request.headers.get("content-encoding", "identity") != "identity":
            raise HTTPError("compressed request bodies are not accepted", 415)
        body = await request.body()
        header = request.headers.get(protocol.HEADER_LENGTH)

        async def work() -> tuple[bytes, int | None]:
            # Small pixel tensors are parsed on the event loop (a thread hop would cost more
            # than the parsing); large bodies and image files are parsed in a thread.
            small = len(body) <= INLINE_BYTES
            with batcher().expecting():
                req, binary = (protocol.split_body(body, header) if small else
                               await asyncio.to_thread(protocol.split_body, body, header))
                specs = protocol.parse_outputs(req)  # cheap checks before decoding images
                if small and protocol.input_datatype(req) != "BYTES":
                    images = protocol.parse_inputs(req, binary, pre, max_pixels)
                else:
                    images = await asyncio.to_thread(protocol.parse_inputs, req, binary, pre,
                                                     max_pixels)
            probs = await run(images)
            return protocol.encode_response(name, req, probs, specs, labels)

        content, head_len = await limited(work())
        if head_len is None:
            return Response(content, media_type="application/json")
        return Response(content, media_type="application/octet-stream",
                        headers={"Inference-Header-Content-Length": str(head_len)})

    @app.post("/predict", tags=["inference"])
    async def predict(files: list[UploadFile] = File(..., description="image files"),
                      top_k: int = Query(5, ge=1, description="classes per image")) -> dict:
        """Top-k classes of each uploaded image file (multipart field ``files``)."""
        async def work() -> dict:
            data = [await f.read() for f in files]
            names = [f.filename or f"file {i}" for i, f in enumerate(files)]
            with batcher().expecting():
                images = await asyncio.to_thread(protocol.decode_files, data, pre, max_pixels,
                                                 names)
            probs = await run(images)
            idx = protocol.top_k(probs, min(top_k, probs.shape[1]))
            return {"model": name, "predictions": [
                {"file": names[i], "top_k": [
                    {"index": int(j), "label": labels[j] if j < len(labels) else str(j),
                     "probability": float(probs[i, j])} for j in idx[i]]}
                for i in range(len(files))]}
        return await limited(work())

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(Edge, max_body=int(max_body_mb * 2**20), metrics=metrics)
    app.state.metrics = metrics
    return app
