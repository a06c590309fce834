"""A real app whose endpoints raise, hang, answer slowly or answer 5xx on command.

Each test scripts what the endpoints do, call by call (`script.plan("/items",
Act(503), Act(503), Act())`), and reads what they saw: calls per path, the
bodies and root paths of each call, cancellations.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI, Request
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from apiguard import get_context, guard


@dataclass
class Act:
    """What an endpoint does on one call."""

    status: int = 200
    sleep: float = 0.0
    hang: bool = False
    fail: bool = False
    fail_after_start: bool = False
    stream: bool = False
    stream_sleep: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    background: float = 0.0


class Script:
    """The endpoints' plan, call by call, and what they saw."""

    def __init__(self) -> None:
        self.acts: dict[str, deque[Act]] = {}
        self.calls: Counter[str] = Counter()
        self.cancelled: Counter[str] = Counter()
        self.finished: Counter[str] = Counter()
        self.bodies: list[bytes] = []
        self.seen: list[dict[str, Any]] = []
        self.release = threading.Event()
        self.background_done = 0

    def plan(self, path: str, *acts: Act) -> None:
        self.acts[path] = deque(acts)

    def next(self, path: str) -> Act:
        self.calls[path] += 1
        queue = self.acts.get(path)
        if queue:
            return queue.popleft() if len(queue) > 1 else queue[0]
        return Act()


def _remaining(request: Request) -> float | None:
    return get_context(request.scope).remaining()


async def _background(script: Script, seconds: float) -> None:
    await asyncio.sleep(seconds)
    script.background_done += 1


async def perform(script: Script, request: Request, path: str) -> Response:
    """Do what the script says for this call of `path`."""
    act = script.next(path)
    body = await request.body()
    script.bodies.append(body)
    script.seen.append(
        {
            "root_path": request.scope.get("root_path"),
            "path_params": dict(request.path_params),
            "remaining": _remaining(request),
            "state": sorted(request.state._state),
        }
    )
    request.state.touched = True
    payload = {"path": path, "call": script.calls[path], "body": body.decode("latin-1")}
    try:
        if act.hang:
            await asyncio.sleep(3600)
        if act.sleep:
            await asyncio.sleep(act.sleep)
    except asyncio.CancelledError:
        script.cancelled[path] += 1
        raise
    if act.fail:
        raise RuntimeError(f"{path} failed on command")
    task = BackgroundTask(_background, script, act.background) if act.background else None
    if act.stream or act.fail_after_start:

        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"part": 1}\n'
            if act.fail_after_start:
                raise RuntimeError("failed after the response started")
            if act.stream_sleep:
                await asyncio.sleep(act.stream_sleep)
            yield b'{"part": 2}\n'

        return StreamingResponse(
            chunks(), act.status, act.headers, media_type="application/x-ndjson", background=task
        )
    script.finished[path] += 1
    return JSONResponse(payload, act.status, act.headers, background=task)


def make_app(script: Script) -> FastAPI:
    """The FastAPI app: async and `def` endpoints, reads and writes."""
    app = FastAPI()

    @app.get("/items")
    async def items(request: Request) -> Response:
        return await perform(script, request, "/items")

    @app.get("/items/{item_id}")
    async def item(request: Request, item_id: int) -> Response:
        return await perform(script, request, "/items/{item_id}")

    @app.put("/items/{item_id}")
    async def put_item(request: Request, item_id: int) -> Response:
        return await perform(script, request, "PUT /items/{item_id}")

    @app.delete("/items/{item_id}")
    async def delete_item(request: Request, item_id: int) -> Response:
        return await perform(script, request, "DELETE /items/{item_id}")

    @app.post("/orders")
    async def orders(request: Request) -> Response:
        return await perform(script, request, "POST /orders")

    @app.post("/search")
    async def search(request: Request) -> Response:
        return await perform(script, request, "POST /search")

    @app.get("/fast")
    async def fast() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/sync/hang")
    def sync_hang() -> dict[str, int]:
        script.calls["/sync/hang"] += 1
        script.release.wait(60)
        script.finished["/sync/hang"] += 1
        return {"threads": threading.active_count()}

    @app.get("/sync/fast")
    def sync_fast() -> dict[str, int]:
        script.calls["/sync/fast"] += 1
        return {"threads": threading.active_count()}

    @app.get("/sync/slow")
    def sync_slow() -> dict[str, int]:
        script.calls["/sync/slow"] += 1
        time.sleep(1.0)
        script.finished["/sync/slow"] += 1
        return {"threads": threading.active_count()}

    @app.get("/stats")
    async def stats() -> dict[str, int]:
        return {"threads": threading.active_count()}

    return app


def mounted_app(script: Script, *layers: Middleware) -> Starlette:
    """An outer app mounting, at `/api`, a sub-app that mounts `/v1` and is guarded itself.

    The sub-app's router rewrites `root_path` and `path_params` of the scope
    it is handed, at each mount: an attempt run again on that same scope
    would route wrong.
    """

    async def thing(request: Request) -> Response:
        return await perform(script, request, "/things/{thing_id}")

    inner = Starlette(routes=[Mount("/v1", routes=[Route("/things/{thing_id:int}", thing)])])
    guard(inner, *layers)
    return Starlette(routes=[Mount("/api", app=inner)])


def client(app: Any, **options: Any) -> httpx.AsyncClient:
    """An in-process client of `app`."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://api.example.com", **options
    )


@dataclass
class Watch:
    """Elapsed time of a block, for bounds no loaded machine can break (generous ones)."""

    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


async def eventually(condition: Callable[[], bool], within: float = 30.0) -> bool:
    """Whether `condition` turns true within `within` seconds (checked every 20 ms)."""
    for _ in range(int(within / 0.02)):
        if condition():
            return True
        await asyncio.sleep(0.02)
    return condition()
