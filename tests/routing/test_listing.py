"""Routes and policies without a request: `routes_of(app)` and `RoutePolicies.get`."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from hypothesis import HealthCheck, given, settings
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Host, Mount, Route, Router, WebSocketRoute

from apiguard import guard
from apiguard.routing import WEBSOCKET, RouteInfo, RoutePolicies, request_method, routes_of
from tests._layers import TagLayer
from tests.routing._apps import MarkingApp, endpoint, starlette_app, ws_endpoint
from tests.routing.test_differential import STARLETTE_TEMPLATES, requests

GET_HEAD = frozenset({"GET", "HEAD"})
WS = frozenset({WEBSOCKET})


def _small() -> Starlette:
    return Starlette(
        routes=[
            Route("/live", endpoint("/live"), methods=["GET"]),
            WebSocketRoute("/live", ws_endpoint("/live")),
            Mount(
                "/api",
                routes=[
                    Route("/items/{item_id:int}", endpoint("i"), methods=["GET", "PUT"]),
                    Mount("/v2", routes=[Route("/things", endpoint("t"), methods=["POST"])]),
                ],
            ),
            Mount("/static", app=MarkingApp("/static/{path}")),
            Host("api.example.com", app=Router([Route("/h/{x}", endpoint("h"))])),
            Route("/any", MarkingApp("/any")),
        ]
    )


def test_routes_are_listed_in_dispatch_order_mounts_and_hosts_walked() -> None:
    """Each route once per kind it serves, keyed as per-route options name it."""
    assert routes_of(_small()) == [
        RouteInfo(GET_HEAD, "/live", "http", "/live"),
        RouteInfo(WS, "/live", "websocket", "/live"),
        RouteInfo(
            frozenset({"GET", "HEAD", "PUT"}),
            "/api/items/{item_id}",
            "http",
            "/api/items/{item_id}",
        ),
        RouteInfo(frozenset({"POST"}), "/api/v2/things", "http", "/api/v2/things"),
        RouteInfo(None, "/static/{path}", "http", "/static/{path}"),  # a mount of an app
        RouteInfo(WS, "/static/{path}", "websocket", "/static/{path}"),  # takes both
        RouteInfo(GET_HEAD, "api.example.com/h/{x}", "http", "/h/{x}", "api.example.com"),
        RouteInfo(None, "/any", "http", "/any"),  # an ASGI endpoint: any method, HTTP only
    ]


def test_routes_of_finds_the_router_through_middleware() -> None:
    """Around guard()'s layers, a wrapper, or given the router itself: the same list."""
    app = guard(_small(), Middleware(TagLayer, name="t"))
    wrapped = TagLayer(_small(), name="t")
    assert routes_of(app) == routes_of(wrapped) == routes_of(_small().router) == routes_of(_small())


def test_a_plain_asgi_app_has_no_routes_to_list() -> None:
    assert routes_of(MarkingApp("/")) == []


def test_fastapi_included_routers_and_frontends_are_listed(tmp_path: Any) -> None:
    """Nested included routers where they sit; frontend routes last, as they are tried."""
    (tmp_path / "index.html").write_text("<p>hi</p>")
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.router.frontend("/app", directory=tmp_path)
    inner = APIRouter(prefix="/lines")
    inner.add_api_route("/{n:int}", endpoint("n"), methods=["GET"])
    orders = APIRouter(prefix="/orders")
    orders.add_api_route("/", endpoint("o"), methods=["POST"])
    orders.include_router(inner)
    app.include_router(orders, prefix="/v1")
    app.add_api_websocket_route("/ws", ws_endpoint("ws"))
    listed = [(r.kind, r.key, r.methods) for r in routes_of(app)]
    assert listed == [
        ("http", "/v1/orders/", frozenset({"POST"})),
        ("http", "/v1/orders/lines/{n}", frozenset({"GET"})),
        ("websocket", "/ws", WS),
        ("http", "/app/{path}", GET_HEAD),
    ]


def test_routes_added_later_are_listed() -> None:
    app = _small()
    before = len(routes_of(app))
    app.router.routes.append(Route("/late", endpoint("/late")))
    assert len(routes_of(app)) == before + 1
    assert routes_of(app)[-1].key == "/late"


POLICIES = RoutePolicies(
    "routes",
    {
        "GET /live": "page",
        "WEBSOCKET /live": "feed",
        "/static/{path}": "static",
        "POST /static/{path}": "upload",
        "PUT /api/items/{item_id:int}": "edit",
        "/api/items/{item_id}": "item",
        "api.example.com/h/{x}": "host",
    },
    "default",
)


@pytest.mark.parametrize(
    ("method", "key", "expected"),
    [
        ("GET", "/live", "page"),
        ("HEAD", "/live", "page"),  # HEAD as GET
        ("head", "/live", "page"),  # any case
        ("WEBSOCKET", "/live", "feed"),
        ("websocket", "/live", "feed"),
        ("POST", "/live", "default"),  # no method-less key there
        (None, "/live", "default"),
        ("POST", "/static/{path}", "upload"),
        ("post", "/static/{path}", "upload"),
        ("DELETE", "/static/{path}", "static"),  # the method-less key
        ("WEBSOCKET", "/static/{path}", "static"),  # a WebSocket gets it too
        (None, "/static/{path}", "static"),
        ("PUT", "/api/items/{item_id}", "edit"),
        ("PUT", "/api/items/{item_id:int}", "edit"),  # convertor types may be written
        ("GET", "/api/items/{item_id}", "item"),
        ("GET", "api.example.com/h/{x}", "host"),
        ("GET", "API.example.com/h/{x}", "host"),
        ("GET", "/nowhere", "default"),
    ],
)
def test_get_has_the_precedence_of_a_lookup(method: str | None, key: str, expected: str) -> None:
    """Method, HEAD as GET, method-less, default; `WEBSOCKET` for WebSocket routes."""
    assert POLICIES.get(method, key) == expected


def test_a_report_lists_every_route_with_its_policy() -> None:
    """What a policy report does: every route of the app, and what the layer does there."""
    report = [
        (info.kind, info.key, method, POLICIES.get(method, info.key))
        for info in routes_of(_small())
        for method in sorted(info.methods or {"POST", "DELETE"})
    ]
    assert ("websocket", "/live", "WEBSOCKET", "feed") in report
    assert ("http", "/live", "GET", "page") in report
    assert ("http", "/static/{path}", "POST", "upload") in report
    assert ("http", "/static/{path}", "DELETE", "static") in report
    assert ("http", "/api/v2/things", "POST", "default") in report


BIG = RoutePolicies(
    "routes",
    {
        **{template: f"any {template}" for template in STARLETTE_TEMPLATES[::2]},
        **{f"GET {template}": f"get {template}" for template in STARLETTE_TEMPLATES[1::3]},
        "WEBSOCKET /ws": "ws",
        "POST /static/{path}": "upload",
    },
    "default",
)
APP = starlette_app()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests(STARLETTE_TEMPLATES))
def test_get_answers_what_a_request_looks_up(scope: dict[str, Any]) -> None:
    """For any request, `get(method, its route's key)` is the policy `lookup` gives it."""
    scope = {**scope, "app": APP}
    match = BIG.match(dict(scope))
    method = WEBSOCKET if scope["type"] == "websocket" else request_method(scope)
    expected = "default" if match is None else BIG.get(method, match.key)
    assert BIG.lookup(dict(scope)) == expected
