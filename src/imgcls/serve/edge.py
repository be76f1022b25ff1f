"""The ASGI middleware at the server's edge: request body limits (413 before the app sees
the body), request metrics by route and status, and a logged JSON 500 for anything that
escapes the app."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .app import Metrics

log = logging.getLogger("imgcls.serve")
ASGIApp = Callable[..., Awaitable[None]]


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
