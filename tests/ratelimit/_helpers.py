"""Apps, a principal-setting layer and draft-11 header parsing for the rate-limit tests."""

from __future__ import annotations

import os
import re
import time
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from apiguard import Principal, get_context, guard
from apiguard.ratelimit import RateLimitMiddleware

CLIENT = ("203.0.113.9", 4000)


async def _order(request: Request) -> Response:
    decisions = [d._asdict() for d in get_context(request.scope).decisions_of("ratelimit")]
    for decision in decisions:
        decision["attributes"] = dict(decision["attributes"] or {})
    return JSONResponse({"decisions": decisions})


async def _health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def routes() -> list[Route]:
    return [
        Route("/health", _health),
        Route("/orders", _order, methods=["GET", "POST"]),
        Route("/orders/{order_id:int}", _order, methods=["GET", "DELETE"]),
    ]


class WorkerHeader:
    """Says which worker process answered (`X-Worker-Pid`), rejections included."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.pid = str(os.getpid()).encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def tagged(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [*message["headers"], (b"x-worker-pid", self.pid)]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, tagged)


class PrincipalLayer:
    """Stands in for the authentication layer: `X-Test-User: id:plan` -> Principal."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"x-test-user":
                    user, _, plan = value.decode().partition(":")
                    principal = Principal(id=user, plan=plan or None)
                    get_context(scope).principal = principal
                    scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


def limited_app(*, principals: bool = False, **options: Any) -> Starlette:
    layers = [Middleware(PrincipalLayer)] if principals else []
    return guard(Starlette(routes=routes()), *layers, Middleware(RateLimitMiddleware, **options))


def client(app: Any, peer: tuple[str, int] = CLIENT) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app, client=peer)
    return httpx.AsyncClient(transport=transport, base_url="http://api.example.com")


# RFC 9651 §3.1 / §3.1.2, narrowed to what draft-11 defines: a list of items
# whose value is an sf-string and whose parameters are integers (or strings).
_ITEM = re.compile(
    r'"([\x20\x21\x23-\x5b\x5d-\x7e]*)"((?:;[a-z*][a-z0-9_.*-]*=(?:-?\d{1,15}|"[^"]*"))*)'
)
_PARAM = re.compile(r';([a-z*][a-z0-9_.*-]*)=(-?\d{1,15}|"[^"]*")')


def parse_list(field: str) -> dict[str, dict[str, int | str]]:
    """Parse a RateLimit or RateLimit-Policy value; fail on anything malformed."""
    items: dict[str, dict[str, int | str]] = {}
    for member in re.split(r",[ \t]*", field):
        match = _ITEM.fullmatch(member)
        assert match is not None, f"not an sf-list member with integer parameters: {member!r}"
        params: dict[str, int | str] = {}
        for name, value in _PARAM.findall(match[2]):
            assert name not in params, f"parameter {name} twice in {member!r}"
            params[name] = value.strip('"') if value.startswith('"') else int(value)
        assert match[1] not in items, f"policy {match[1]!r} listed twice"
        items[match[1]] = params
    return items


def ratelimit(response: httpx.Response) -> dict[str, tuple[int, int]]:
    """`{policy: (r, t)}` from the RateLimit field, checked against draft-11's definitions."""
    items = parse_list(response.headers["ratelimit"])
    out = {}
    for name, params in items.items():
        assert set(params) <= {"r", "t", "pk"}, params
        r, t = params["r"], params["t"]
        # draft-11: r is the remaining quota, t the seconds until it resets,
        # both non-negative integers.
        assert isinstance(r, int), r
        assert r >= 0, r
        assert isinstance(t, int), t
        assert t >= 0, t
        out[name] = (r, t)
    return out


def policies(response: httpx.Response) -> dict[str, tuple[int, int]]:
    """`{policy: (q, w)}` from RateLimit-Policy, checked against draft-11's definitions."""
    items = parse_list(response.headers["ratelimit-policy"])
    out = {}
    for name, params in items.items():
        q, w = params["q"], params["w"]
        # draft-11: q is the quota, w the window in seconds, both positive integers.
        assert isinstance(q, int), q
        assert q > 0, q
        assert isinstance(w, int), w
        assert w > 0, w
        out[name] = (q, w)
    return out


def clear_of_window_edge(window: float, within: float) -> None:
    """Return when the next fixed-window edge is more than `within` seconds away.

    Fixed windows are aligned on the clock: a burst that straddles an edge
    legitimately admits up to twice the limit (a test once failed at
    20:00:00 UTC for this reason). A test that counts exactly over real time
    calls this first; it waits only when the edge is that close.
    """
    left = window - time.time() % window
    if left <= within:
        time.sleep(left + 0.05)
