"""Apps and an ASGI driver for the validation layer's tests."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from apiguard import Rules, ValidationMiddleware, guard
from apiguard.validation import validated


class LineIn(BaseModel):
    sku: Annotated[str, Field(pattern=r"^[A-Z0-9-]{3,32}$")]
    quantity: Annotated[int, Field(gt=0, le=1000)]


class OrderIn(BaseModel):
    customer_email: Annotated[str, Field(max_length=254)]
    lines: Annotated[list[LineIn], Field(min_length=1, max_length=100)]
    note: str | None = None


class SearchQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    q: Annotated[str, Field(min_length=1, max_length=50)]
    limit: Annotated[int, Field(ge=1, le=100)] = 20
    tag: list[str] = []


class TenantHeaders(BaseModel):
    x_tenant: Annotated[str, Field(pattern=r"^[a-z]{2,16}$")]
    x_trace: list[str] = []


ORDER = {
    "customer_email": "ada@example.com",
    "lines": [{"sku": "BOOK-1", "quantity": 2}],
}


@dataclass
class Calls:
    """What the endpoints saw: one entry per call."""

    seen: list[dict[str, Any]] = field(default_factory=list)


def starlette_app(calls: Calls | None = None, **options: Any) -> Starlette:
    """A Starlette app behind the layer; endpoints record the body they received."""
    calls = calls if calls is not None else Calls()

    async def record(request: Request) -> Response:
        body = await request.body()
        values = request.state.apiguard.values
        calls.seen.append(
            {
                "path": request.url.path,
                "body": body,
                "values": dict(values),
            }
        )
        return JSONResponse(
            {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}, status_code=200
        )

    async def create_order(request: Request) -> Response:
        body = await request.body()
        order = validated(request, "body")
        calls.seen.append({"path": "/orders", "body": body, "values": {"body": order}})
        # The app's own parse of the bytes it received.
        return JSONResponse(
            {"lines": len(order.lines), "app_parse": json.loads(body)}, status_code=201
        )

    routes = [
        Route("/orders", create_order, methods=["POST"]),
        Route("/orders/{order_id:int}", record, methods=["GET", "PUT", "DELETE"]),
        Route("/orders/{order_id:int}/cancel", record, methods=["POST"]),
        Route("/documents", record, methods=["POST", "PATCH"]),
        Route("/uploads", record, methods=["POST"]),
        Route("/search", record, methods=["GET"]),
        Route("/tenant", record, methods=["GET"]),
    ]
    layer = {
        "routes": {
            "POST /orders": Rules(body=OrderIn),
            "PATCH /documents": Rules(content_types=["application/*+json"]),
            "POST /uploads": Rules(
                content_types=["application/octet-stream", "image/*"], max_body_bytes=4096
            ),
            "GET /search": Rules(query=SearchQuery),
            "GET /tenant": Rules(headers=TenantHeaders),
            "POST /orders/{order_id}/cancel": Rules(no_body=True),
        },
        **options,
    }
    return guard(
        Starlette(routes=routes),
        Middleware(ValidationMiddleware, **layer),
    )


@dataclass
class Answer:
    """A response as the ASGI driver saw it."""

    status: int | None
    headers: dict[str, str]
    body: bytes
    receive_calls: int
    bytes_delivered: int

    def json(self) -> Any:
        return json.loads(self.body)


async def drive(
    app: Any,
    method: str = "POST",
    path: str = "/documents",
    headers: Sequence[tuple[bytes, bytes]] = (),
    chunks: Iterable[bytes] = (),
    *,
    query_string: bytes = b"",
    disconnect: bool = False,
    http_version: str = "1.1",
) -> Answer:
    """Send one request straight to an ASGI app, body in `chunks`, lazily.

    The chunks are pulled one per `receive()` call, so a test can hand in a
    generator of hundreds of megabytes that is never built. With
    `disconnect`, `http.disconnect` follows the last chunk instead of the
    end of the body.
    """
    iterator = iter(chunks)
    counters = {"calls": 0, "bytes": 0}
    lookahead: list[bytes | None] = []
    finished = False

    async def receive() -> dict[str, Any]:
        nonlocal finished
        counters["calls"] += 1
        if finished:
            return {"type": "http.disconnect"}
        chunk = lookahead.pop() if lookahead else next(iterator, None)
        if chunk is None:
            finished = True
            if disconnect:
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": b"", "more_body": False}
        following = next(iterator, None)
        lookahead.append(following)
        counters["bytes"] += len(chunk)
        more = following is not None or disconnect
        finished = not more
        return {"type": "http.request", "body": chunk, "more_body": more}

    status: int | None = None
    out_headers: dict[str, str] = {}
    body = bytearray()

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            out_headers.update(
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in message["headers"]
            )
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": http_version,
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query_string,
        "headers": [(b"host", b"api.example.com"), *headers],
        "client": ("203.0.113.9", 4000),
        "server": ("127.0.0.1", 8000),
    }
    await app(scope, receive, send)
    return Answer(status, out_headers, bytes(body), counters["calls"], counters["bytes"])


def json_headers(length: int | None = None) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", b"application/json")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return headers


#: What the uvicorn tests serve: `tests.validation._apps:app`.
app = starlette_app()
