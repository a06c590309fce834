"""An orders app that counts its runs and can hold a request, for the idempotency tests."""

from __future__ import annotations

import collections
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from apiguard import IdempotencyMiddleware, get_context, guard

CLIENT = ("203.0.113.9", 4000)


class Orders:
    """The app's state: runs per route, and a gate that holds POST /orders while closed.

    `hold()` closes the gate: each run then sets `entered` and waits for
    `release()`. The endpoint's answer carries the run number, so a
    replay is told from a second run.
    """

    def __init__(self) -> None:
        self.runs: collections.Counter[str] = collections.Counter()
        self.gate: anyio.Event | None = None
        self.entered = anyio.Event()
        self.held_runs: int | None = None

    def hold(self, runs: int | None = None) -> None:
        """Hold every run from now on, or only the next `runs` of them."""
        self.gate = anyio.Event()
        self.entered = anyio.Event()
        self.held_runs = None if runs is None else self.runs["orders"] + runs

    def release(self) -> None:
        if self.gate is not None:
            self.gate.set()

    async def create(self, request: Request) -> Response:
        self.runs["orders"] += 1
        run = self.runs["orders"]
        body = await request.body()
        if self.gate is not None and (self.held_runs is None or run <= self.held_runs):
            self.entered.set()
            await self.gate.wait()
        params = request.query_params
        if "sleep" in params:
            await anyio.sleep(float(params["sleep"]))
        status = int(params.get("status", "201"))
        if "size" in params:
            return Response(b"x" * int(params["size"]), status_code=status)
        decisions = [
            [d.reason, d.outcome] for d in get_context(request.scope).decisions_of("idempotency")
        ]
        return JSONResponse(
            {"run": run, "body": body.decode(), "decisions": decisions},
            status_code=status,
            headers={"x-run": str(run), "set-cookie": "session=s3cr3t", "date": "then"},
        )

    async def update(self, request: Request) -> Response:
        self.runs["update"] += 1
        return JSONResponse({"id": request.path_params["order_id"], "run": self.runs["update"]})

    async def listing(self, request: Request) -> Response:
        self.runs["list"] += 1
        return JSONResponse([])

    async def boom(self, request: Request) -> Response:
        self.runs["boom"] += 1
        raise RuntimeError("the endpoint broke")

    async def stream(self, request: Request) -> Response:
        self.runs["stream"] += 1

        async def chunks() -> AsyncIterator[bytes]:
            for part in (b"one,", b"two,", b"three"):
                yield part

        return StreamingResponse(chunks(), status_code=201, media_type="text/plain")

    def routes(self) -> list[Route]:
        return [
            Route("/orders", self.create, methods=["POST"]),
            Route("/orders", self.listing, methods=["GET"]),
            Route("/orders/{order_id:int}", self.update, methods=["PATCH", "PUT"]),
            Route("/boom", self.boom, methods=["POST"]),
            Route("/stream", self.stream, methods=["POST"]),
            Route("/webhooks", self.create, methods=["POST"]),
        ]


def orders_app(*outer: Middleware, **options: Any) -> tuple[Starlette, Orders]:
    """The orders app behind `outer` layers and an `IdempotencyMiddleware(**options)`."""
    orders = Orders()
    app = guard(
        Starlette(routes=orders.routes()), *outer, Middleware(IdempotencyMiddleware, **options)
    )
    return app, orders


def client(
    app: Any, peer: tuple[str, int] = CLIENT, *, raise_app_exceptions: bool = True
) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app, client=peer, raise_app_exceptions=raise_app_exceptions)
    return httpx.AsyncClient(transport=transport, base_url="http://t")


def new_key() -> str:
    return str(uuid.uuid4())


def keyed(key: str, quoted: bool = True, **headers: str) -> dict[str, str]:
    """Request headers with `Idempotency-Key` (an sf-string, or bare)."""
    return {"idempotency-key": f'"{key}"' if quoted else key, **headers}


class DecisionLog:
    """An outer layer that keeps the idempotency decision each request ended with."""

    def __init__(self, app: Any, *, log: list[tuple[str | None, dict[str, Any]]]) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            if scope["type"] == "http":
                for decision in get_context(scope).decisions_of("idempotency"):
                    self.log.append((decision.reason, dict(decision.attributes or {})))
