"""CORS preflights: they pass unauthenticated only where no route would answer them.

A preflight carries no credential (Fetch standard §4.8), so refusing it would
break every browser client of a layer placed inside `CORSMiddleware`'s reach.
But an `OPTIONS` request is a request like any other to an endpoint that
accepts it (a route listing OPTIONS, an ASGI endpoint, a mounted app): there
a "preflight" is just an unauthenticated call, and it is authenticated.
(Security review finding 2.)
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route, Router

from apiguard import APIKeyAuth, AuthMiddleware, Principal, get_context, guard
from tests.auth._helpers import CLIENT

pytestmark = pytest.mark.anyio

KEY = "k-secret-123456"
ORIGIN = "https://app.example"
PREFLIGHT = {"origin": ORIGIN, "access-control-request-method": "GET"}


def auth_layer(**options: Any) -> Middleware:
    return Middleware(
        AuthMiddleware, authenticators=[APIKeyAuth(keys={KEY: Principal(id="admin")})], **options
    )


class Recorder:
    """A raw ASGI app (any method) that remembers every request it was handed."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.seen.append(scope["method"])
        response = PlainTextResponse(f"SECRET export ({scope['method']})")
        await response(scope, receive, send)


async def options(app: Any, path: str, headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app, client=CLIENT)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.example") as client:
        return await client.options(path, headers=headers)


def reached(response: httpx.Response) -> bool:
    return "SECRET" in response.text


def plain(request: Any) -> PlainTextResponse:
    return PlainTextResponse("SECRET plain")


@pytest.mark.parametrize("headers", [PREFLIGHT, {"access-control-request-method": "GET"}])
async def test_a_mounted_app_is_not_reachable_by_a_preflight(headers: dict[str, str]) -> None:
    """A mounted ASGI app handles OPTIONS itself: the request is authenticated."""
    internal = Recorder()
    app = Starlette(routes=[Mount("/internal", internal)])
    guard(app, auth_layer())
    response = await options(app, "/internal/export", headers)
    assert response.status_code == 401
    assert internal.seen == []


async def test_an_asgi_endpoint_route_is_not_reachable_by_a_preflight() -> None:
    """`Route(path, asgi_app)` accepts every method: the request is authenticated."""
    endpoint = Recorder()
    app = guard(Starlette(routes=[Route("/export", endpoint)]), auth_layer())
    response = await options(app, "/export", PREFLIGHT)
    assert response.status_code == 401
    assert endpoint.seen == []


async def test_a_route_listing_options_is_not_reachable_by_a_preflight() -> None:
    """The reviewer's FastAPI app: a route that accepts OPTIONS gets no free pass."""
    called: list[str] = []
    app = FastAPI()

    @app.api_route("/orders/{oid}", methods=["GET", "DELETE", "OPTIONS"])
    async def order(oid: str, request: Request) -> dict[str, str]:
        called.append(request.method)
        return {"order": oid}

    guard(app, auth_layer())
    for headers in (PREFLIGHT, {"access-control-request-method": "DELETE"}):
        assert (await options(app, "/orders/7", headers)).status_code == 401
    assert called == []
    allowed = await options(app, "/orders/7", {**PREFLIGHT, "x-api-key": KEY})
    assert allowed.status_code == 200
    assert called == ["OPTIONS"]


async def test_a_preflight_needs_an_origin() -> None:
    """Without `Origin` it is no preflight (Fetch §4.8 always sends one): authenticated."""
    app = guard(Starlette(routes=[Route("/me", plain)]), auth_layer())
    response = await options(app, "/me", {"access-control-request-method": "GET"})
    assert response.status_code == 401


async def test_a_mounted_router_is_resolved_to_its_route() -> None:
    """Through a mount, a route that does not accept OPTIONS still lets a preflight pass."""
    endpoint = Recorder()
    inner = Router(routes=[Route("/get-only", plain), Route("/any", endpoint)])
    app = guard(Starlette(routes=[Mount("/v1", inner)]), auth_layer())
    assert (await options(app, "/v1/get-only", PREFLIGHT)).status_code == 405
    assert (await options(app, "/v1/any", PREFLIGHT)).status_code == 401
    assert endpoint.seen == []


async def test_a_plain_asgi_app_is_authenticated() -> None:
    """Without a router nothing tells which requests the app answers: authenticate."""
    endpoint = Recorder()
    app = AuthMiddleware(endpoint, authenticators=[APIKeyAuth(keys={KEY: Principal(id="a")})])
    assert (await options(app, "/anything", PREFLIGHT)).status_code == 401
    assert endpoint.seen == []


async def test_a_layer_wrapping_a_starlette_app_resolves_with_its_router() -> None:
    """Wrapped directly (no `scope["app"]` yet), the layer uses the router it wraps."""
    endpoint = Recorder()
    starlette_app = Starlette(routes=[Route("/get-only", plain), Route("/any", endpoint)])
    app = AuthMiddleware(starlette_app, authenticators=[APIKeyAuth(keys={KEY: Principal(id="a")})])
    assert (await options(app, "/get-only", PREFLIGHT)).status_code == 405
    assert (await options(app, "/any", PREFLIGHT)).status_code == 401
    assert endpoint.seen == []


async def test_a_preflight_to_a_route_without_options_still_passes() -> None:
    """The issue's requirement stands: a CORS layer inside still answers preflights."""
    app = guard(
        Starlette(routes=[Route("/orders", plain, methods=["GET", "POST"])]),
        auth_layer(),
        Middleware(CORSMiddleware, allow_origins=[ORIGIN], allow_methods=["*"]),
    )
    response = await options(app, "/orders", {**PREFLIGHT, "access-control-request-method": "POST"})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert (await options(app, "/orders", {"origin": ORIGIN})).status_code == 401


async def test_a_passed_preflight_is_recorded() -> None:
    seen: list[Any] = []

    async def endpoint(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    class Spy:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await self.app(scope, receive, send)
            if scope["type"] == "http":
                seen.extend(get_context(scope).decisions)

    app = guard(Starlette(routes=[Route("/get-only", endpoint)]), Middleware(Spy), auth_layer())
    assert (await options(app, "/get-only", PREFLIGHT)).status_code == 405
    assert [(d.layer, d.outcome, d.reason) for d in seen] == [("auth", "skip", "preflight")]


async def test_a_passed_preflight_has_an_anonymous_user() -> None:
    """Finding 10: `request.user` and friends are set on the preflight path too (no 500)."""
    seen: dict[str, Any] = {}

    class Reader:
        """A CORS-like layer inside auth that reads the caller, as apps do."""

        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                request = Request(scope)
                seen["authenticated"] = request.user.is_authenticated
                seen["scopes"] = request.auth.scopes
                seen["principal"] = request.state.principal
                seen["context"] = get_context(scope).principal
            await self.app(scope, receive, send)

    app = guard(
        Starlette(routes=[Route("/get-only", plain)]),
        auth_layer(optional=["/get-only"]),
        Middleware(Reader),
    )
    transport = httpx.ASGITransport(app, client=CLIENT, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.example") as client:
        response = await client.options("/get-only", headers=PREFLIGHT)
    assert response.status_code == 405
    assert seen == {"authenticated": False, "scopes": [], "principal": None, "context": None}
