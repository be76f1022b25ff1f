"""The HTTP server: Open Inference Protocol v2 routes, ``/predict``, ``/metrics``, dynamic
batching, limits. Every error a client can cause is a 4xx ``{"error": ...}``.

:func:`create_app` registers each group of routes (health and metadata, infer, ``/predict``,
metrics) with the :class:`Served` state they share; the body limits and request metrics sit in
the ASGI middleware of :mod:`.edge`."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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

from ..errors import ConfigError, ImgclsError
from ..results import TOP_K, failure, prediction, ranked
from ..runtime.images import MAX_PIXELS
from . import protocol
from .edge import Edge
from .predictor import Predictor
from .protocol import HTTPError

if TYPE_CHECKING:
    from ..runtime.preprocess import Preprocess

log = logging.getLogger("imgcls.serve")
INLINE_BYTES = 64 * 1024


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

    async def submit(self, images: np.ndarray) -> dict[str, np.ndarray]:
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
                out = await loop.run_in_executor(self.executor, self.predict.run, x)
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
                    fut.set_result({k: v[start:start + len(images)] for k, v in out.items()})
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


@dataclass
class Served:
    """What the routes share: the served model and its fixed facts, the request limits, and
    the batcher that the app's lifespan starts (``ready`` once the warm-up run is done)."""

    predictor: Predictor
    name: str
    metrics: Metrics
    max_batch: int
    max_delay_s: float
    queue_size: int
    timeout_s: float
    max_pixels: int
    ready: bool = False
    labels: list[str] = field(init=False)
    _batcher: Batcher | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.labels = list(self.predictor.pre.class_names)

    @property
    def pre(self) -> Preprocess:
        return self.predictor.pre

    @asynccontextmanager
    async def lifespan(self, _: FastAPI):  # noqa: ANN201
        """Start the batcher, warm the model up, serve; then stop the batcher."""
        batcher = Batcher(self.predictor, self.max_batch, self.max_delay_s, self.queue_size,
                          self.metrics)
        batcher.start()
        self._batcher = batcher
        # the first run pays for allocation and kernel selection: not a client's request
        c, s, _ = self.predictor.input_shape
        out = (await batcher.submit(np.zeros((1, c, s, s), np.uint8)))[protocol.OUTPUT_NAME]
        if out.shape != (1, len(self.labels)):
            raise ImgclsError(f"the model returns {out.shape[1:]} scores for "
                              f"{len(self.labels)} class names")
        # Everything allocated so far (model, app, imports) lives as long as the server: keep
        # it out of the garbage collector's full passes, whose pauses set the tail latency.
        gc.collect()
        gc.freeze()
        self.ready = True
        self.metrics.ready.set(1)
        log.info("model %s ready (%s backend)", self.name, self.predictor.backend)
        yield
        self.ready = False
        self.metrics.ready.set(0)
        await batcher.stop()  # uvicorn has finished the in-flight requests by now

    def check_model(self, model_name: str, version: str | None = None) -> None:
        """404 unless the URL names this server's model (version 1 or none)."""
        if model_name != self.name or version not in (None, "1"):
            raise HTTPError(f"unknown model {model_name!r}" + (f" version {version!r}"
                            if version else "") + f"; this server has {self.name!r} version 1",
                            404)

    def batcher(self) -> Batcher:
        if not self.ready:
            raise HTTPError("the model is not ready yet", 503)
        assert self._batcher is not None
        return self._batcher

    async def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the model (:attr:`Predictor.outputs`) for ``images``, by name."""
        return await self.batcher().submit(images)

    async def limited(self, coro: Awaitable) -> object:
        """``coro``'s result, or 504 after the request timeout."""
        try:
            return await asyncio.wait_for(coro, self.timeout_s)
        except TimeoutError:
            raise HTTPError(f"the request took longer than {self.timeout_s:g} s", 504) from None

    def metadata(self) -> dict:
        """The OIP v2 model metadata."""
        c, s, _ = self.predictor.input_shape
        return {
            "name": self.name, "versions": ["1"],
            "platform": "onnxruntime_onnx" if self.predictor.backend == "onnx" else "pytorch",
            "inputs": [{"name": protocol.INPUT_NAME, "datatype": "UINT8",
                        "shape": [-1, c, s, s]}],
            "outputs": [{"name": name, "datatype": "FP32", "shape": [-1, len(self.labels)]}
                        for name in self.predictor.outputs],
            # the class of each output column (a field that OIP clients pass through)
            "parameters": {"labels": list(self.labels)},
        }


def create_app(predictor: Predictor, name: str | None = None, *, max_batch: int = 32,
               max_delay_ms: float = 5.0, timeout_s: float = 10.0, max_body_mb: float = 16.0,
               queue_size: int = 256, max_pixels: int = MAX_PIXELS) -> FastAPI:
    """The FastAPI app serving ``predictor`` as model ``name`` (default: the predictor's)."""
    from .. import __version__

    if min(max_batch, timeout_s, max_body_mb, queue_size) <= 0 or max_delay_ms < 0:
        raise ConfigError("max batch, timeout, max body size and queue size must be positive, "
                          "max delay not negative")
    metrics = Metrics(max_batch)
    served = Served(predictor, name or predictor.name, metrics, max_batch, max_delay_ms / 1000,
                    queue_size, timeout_s, max_pixels)
    # No /docs or /redoc pages: FastAPI's load their scripts from a CDN, blank offline and
    # a third party's code in a served page; /openapi.json describes the API.
    app = FastAPI(title="imgcls inference server", version=__version__,
                  lifespan=served.lifespan, docs_url=None, redoc_url=None,
                  description="Open Inference Protocol v2 (KServe / Triton REST) for an "
                              "imgcls model, plus a multipart /predict.")
    _add_error_handlers(app)
    _add_health_and_metadata_routes(app, served)
    _add_infer_route(app, served)
    _add_predict_route(app, served)
    _add_metrics_route(app, metrics)
    app.add_middleware(Edge, max_body=int(max_body_mb * 2**20), metrics=metrics)
    app.state.metrics = metrics
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error answers ``{"error": message}`` with its status (a client's: 4xx)."""

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


def _add_health_and_metadata_routes(app: FastAPI, served: Served) -> None:
    """OIP v2 liveness, readiness (server and model) and metadata (server and model)."""
    from .. import __version__

    @app.get("/v2/health/live", tags=["health"])
    async def live() -> dict:
        return {"live": True}

    @app.get("/v2/health/ready", tags=["health"])
    async def ready() -> JSONResponse:
        return JSONResponse({"ready": served.ready}, 200 if served.ready else 503)

    @app.get("/v2", tags=["metadata"])
    async def server_metadata() -> dict:
        return {"name": "imgcls", "version": __version__,
                "extensions": ["binary_tensor_data", "classification"]}

    metadata = served.metadata()

    @app.get("/v2/models/{model_name}", tags=["metadata"])
    @app.get("/v2/models/{model_name}/versions/{version}", tags=["metadata"])
    async def model_metadata(model_name: str, version: str | None = None) -> dict:
        served.check_model(model_name, version)
        return metadata

    @app.get("/v2/models/{model_name}/ready", tags=["health"])
    @app.get("/v2/models/{model_name}/versions/{version}/ready", tags=["health"])
    async def model_ready(model_name: str, version: str | None = None) -> JSONResponse:
        served.check_model(model_name, version)
        return JSONResponse({"name": served.name, "ready": served.ready},
                            200 if served.ready else 503)


# The OpenAPI description of the infer request body (the route reads the raw body itself).
INFER_DOC = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string"},
        "inputs": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string", "enum": [protocol.INPUT_NAME]},
            "datatype": {"type": "string", "enum": ["UINT8", "FP32", "BYTES"]},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "data": {"type": "array", "items": {}}}}},
        "outputs": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string", "enum": list(protocol.OUTPUT_NAMES)},
            "parameters": {"type": "object", "properties": {
                "classification": {"type": "integer"},
                "binary_data": {"type": "boolean"}}}}}}}}}}}}


async def _infer(served: Served, body: bytes, header: str | None) -> tuple[bytes, int | None]:
    """Parse an infer request body, classify it, encode the response (and the length of its
    JSON header when binary outputs follow)."""
    # Small pixel tensors are parsed on the event loop (a thread hop would cost more than the
    # parsing); large bodies and image files are parsed in a thread.
    small = len(body) <= INLINE_BYTES
    pre, max_pixels = served.pre, served.max_pixels
    with served.batcher().expecting():
        req, binary = (protocol.split_body(body, header) if small else
                       await asyncio.to_thread(protocol.split_body, body, header))
        # cheap checks before decoding images
        specs = protocol.parse_outputs(req, served.predictor.outputs)
        if small and protocol.input_datatype(req) != "BYTES":
            images = protocol.parse_inputs(req, binary, pre, max_pixels)
        else:
            images = await asyncio.to_thread(protocol.parse_inputs, req, binary, pre,
                                             max_pixels)
    return protocol.encode_response(served.name, req, await served.run(images), specs,
                                    served.labels)


def _add_infer_route(app: FastAPI, served: Served) -> None:
    """The OIP v2 infer route, JSON or binary tensors, with and without a version."""

    @app.post("/v2/models/{model_name}/infer", tags=["inference"], openapi_extra=INFER_DOC)
    @app.post("/v2/models/{model_name}/versions/{version}/infer", tags=["inference"],
              openapi_extra=INFER_DOC, include_in_schema=False)
    async def infer(model_name: str, request: Request, version: str | None = None) -> Response:
        """Classify a UINT8/FP32 pixel tensor or BYTES image files (Triton's binary tensor
        extension and classification parameter included)."""
        served.check_model(model_name, version)
        if request.headers.get("content-encoding", "identity") != "identity":
            raise HTTPError("compressed request bodies are not accepted", 415)
        body = await request.body()
        header = request.headers.get(protocol.HEADER_LENGTH)
        content, head_len = await served.limited(_infer(served, body, header))
        if head_len is None:
            return Response(content, media_type="application/json")
        return Response(content, media_type="application/octet-stream",
                        headers={"Inference-Header-Content-Length": str(head_len)})


async def _predict(served: Served, files: list[UploadFile], top_k: int) -> dict:
    """``/predict``'s answer: per uploaded file, in order, its top-k classes or the reason it
    cannot be read (:mod:`imgcls.results`); 400 only when no file can be read."""
    data = [await f.read() for f in files]
    names = [f.filename or f"file {i}" for i, f in enumerate(files)]
    with served.batcher().expecting():
        decoded = await asyncio.to_thread(protocol.decode_each, data, served.pre,
                                          served.max_pixels, names)
    good = [d for d in decoded if not isinstance(d, str)]
    if not good:
        raise HTTPError("; ".join(decoded), 400)
    probs = (await served.run(np.stack(good)))[protocol.OUTPUT_NAME]
    tops = iter(ranked(probs, served.labels, top_k))
    return {"model": served.name, "predictions": [
        failure(name, d) if isinstance(d, str) else prediction(name, next(tops))
        for name, d in zip(names, decoded)]}


def _add_predict_route(app: FastAPI, served: Served) -> None:
    """``/predict``: multipart image files in, top-k classes out."""

    @app.post("/predict", tags=["inference"])
    async def predict(files: list[UploadFile] = File(..., description="image files"),
                      top_k: int = Query(TOP_K, ge=1, description="classes per image (all "
                                         "of them when above their number)")) -> dict:
        """Per uploaded image file (multipart field ``files``), in order: ``{file, label,
        probability, top_k: [{label, probability}]}``, or ``{file, error}`` for a file that
        cannot be read (a 400 only when none can)."""
        return await served.limited(_predict(served, files, top_k))


def _add_metrics_route(app: FastAPI, metrics: Metrics) -> None:
    """``/metrics`` in the Prometheus text format (left out of the OpenAPI schema)."""

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
