"""Differential: apiguard resolves every request to the route the framework dispatches to.

Hypothesis generates paths (trailing and doubled slashes, percent-encoding,
dot segments, case, odd characters), methods (HEAD, lowercase, unknown),
hosts, `root_path` and query strings; each request is resolved by apiguard
and dispatched by the app itself, whose endpoints record which route ran.
A request that reaches no endpoint (404, 405, redirect) must resolve to none.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import Mount

from apiguard.routing import Resolver, router_of
from tests.routing._apps import MARK, fastapi_app, fastapi_key, starlette_app

SEGMENTS = [
    "",
    "items",
    "Items",
    "ITEMS",
    "new",
    "42",
    "007",
    "-1",
    "3.5",
    "1e3",
    "abc",
    "users",
    "u1",
    "orders",
    "lines",
    "7",
    "api",
    "API",
    "v1",
    "v2",
    "x",
    "sub",
    "static",
    "files",
    "a b",
    "%2F",
    "%2f",
    "%20",
    "%0A",
    "%00",
    "%C3%A9",
    "é",
    ".",
    "..",
    "%2E",
    "%2e%2e",
    "health",
    "HEALTH",
    "Health",
    "trailing",
    "reports",
    "r.csv",
    ".csv",
    "dash",
    "m",
    "acme",
    "tenant",
    "things",
    "h",
    "after-host",
    "Case",
    "case",
    "any",
    "ws",
    "live",
    "legacy",
    "old",
    "wrapped",
    "w",
    "admin",
    "stats",
    "prices",
    str(uuid.UUID(int=7)),
    uuid.UUID(int=9).hex,
    "x" * 300,
    "%ZZ",
    ";a=1",
]
METHODS = ["GET"] * 6 + ["HEAD", "POST", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "get", "FOO"]
HOSTS = [
    "testserver",
    "api.example.com",
    "API.Example.COM",
    "api.example.com:8443",
    "acme.example.org",
    "example.org",
    "[::1]:80",
    "bad host",
    "",
    None,
]


def _templates(app: Any, *extra: str) -> list[str]:
    return sorted({match.template for match in Resolver(app.router).known().values()} | set(extra))


STARLETTE = starlette_app()
FASTAPI = fastapi_app()
STARLETTE_TEMPLATES = _templates(STARLETTE, "/api", "/sub/x", "/items/new")
FASTAPI_TEMPLATES = _templates(FASTAPI, "/v1/orders/{order_id}/lines/{line_no}/extra", "/v1/x")
PARAM_VALUES = [
    "42",
    "007",
    "0",
    "-1",
    "3.5",
    "1e3",
    "abc",
    "new",
    str(uuid.UUID(int=7)),
    uuid.UUID(int=9).hex,
    "",
    "a/b",
    "..",
    ".",
    "%2F",
    "x" * 300,
    "é",
    "a b",
    "%0A",
    "q1.csv",
]


@st.composite
def template_paths(draw: st.DrawFn, templates: list[str]) -> str:
    """A real route's template, filled in, then maybe bent out of shape."""
    template = draw(st.sampled_from(templates))
    parts = template.split("{")
    path = parts[0]
    for part in parts[1:]:
        _, _, rest = part.partition("}")
        path += draw(st.sampled_from(PARAM_VALUES)) + rest
    mutation = draw(st.integers(0, 13))
    if mutation == 1:
        path = path[:-1] if path.endswith("/") and len(path) > 1 else path + "/"
    elif mutation == 2 and "/" in path[1:]:
        at = draw(st.integers(1, path.count("/")))
        pieces = path.split("/")
        path = "/".join(pieces[:at]) + "//" + "/".join(pieces[at:])
    elif mutation == 3:
        path = path.upper() if draw(st.booleans()) else path.title()
    elif mutation == 4:
        pieces = path.split("/")
        at = draw(st.integers(1, len(pieces)))
        path = "/".join([*pieces[:at], draw(st.sampled_from([".", "..", "x/.."])), *pieces[at:]])
    elif mutation == 5:
        path = "/" + draw(st.sampled_from(SEGMENTS)) + path
    elif mutation == 6:
        path = path.replace("/", "%2F", 1) if draw(st.booleans()) else path + "%20"
    return path


@st.composite
def random_paths(draw: st.DrawFn) -> str:
    segments = draw(st.lists(st.sampled_from(SEGMENTS), min_size=0, max_size=6))
    path = "/" + "/".join(segments)
    if draw(st.booleans()):
        path += "/"
    return path


@st.composite
def requests(draw: st.DrawFn, templates: list[str] | None = None) -> dict[str, Any]:
    """A request scope; its path from `templates` when given, else from random segments."""
    raw = draw(template_paths(templates) if templates else random_paths())
    # Servers hand the app a percent-decoded path (uvicorn: unquote).
    path = unquote(raw)
    root_path = draw(st.sampled_from(["", "", "", "/prefix"]))
    if root_path and draw(st.booleans()):
        path = root_path + path  # uvicorn: path includes root_path
    kind = draw(st.sampled_from(["http"] * 9 + ["websocket"]))
    host = draw(st.sampled_from(HOSTS))
    headers = [] if host is None else [(b"host", host.encode("utf-8"))]
    query = draw(st.sampled_from([b"", b"a=1", b"next=/items/1&x=%2F"]))
    scope: dict[str, Any] = {
        "type": kind,
        "path": path,
        "raw_path": raw.encode("utf-8"),
        "root_path": root_path,
        "query_string": query,
        "headers": headers,
        "scheme": "http" if kind == "http" else "ws",
        "server": ("testserver", 80),
        "client": ("203.0.113.9", 4000),
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
    }
    if kind == "http":
        scope["method"] = draw(st.sampled_from(METHODS))
    return scope


async def _dispatch(app: Any, scope: dict[str, Any]) -> str | None:
    """Run the request through the app; the key of the endpoint that ran, or None."""
    messages = (
        [{"type": "http.request", "body": b"", "more_body": False}]
        if scope["type"] == "http"
        else [{"type": "websocket.connect"}]
    )

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        return None

    await app(scope, receive, send)
    marked = scope.get(MARK)
    return marked if isinstance(marked, str) else None


def _route_path(scope: dict[str, Any]) -> str:
    path, root = scope["path"], scope["root_path"]
    if root and path.startswith(root) and path != root and path[len(root)] == "/":
        return path[len(root) :]
    return path


def _check(app: Any, scope: dict[str, Any]) -> None:
    router = router_of(app)
    assert router is not None
    resolver = Resolver(router)
    resolved = resolver.resolve_uncached(dict(scope))
    # The cached path answers the same, on first, second and third sighting.
    cached = [resolver.resolve(dict(scope)) for _ in range(3)]
    dispatched = asyncio.run(_dispatch(app, dict(scope)))
    if dispatched is not None and dispatched.startswith("*"):
        dispatched = fastapi_key(dispatched, _route_path(scope))
    got = resolved.key if resolved is not None else None
    assert got == dispatched, (
        scope["type"],
        scope.get("method"),
        scope["path"],
        scope["root_path"],
    )
    assert all(c == resolved for c in cached)


@pytest.mark.parametrize(
    ("method", "path", "host", "expected"),
    [
        ("GET", "/items/42", "testserver", "/items/{item_id}"),
        ("HEAD", "/items/42", "testserver", "/items/{item_id}"),  # HEAD for GET
        ("POST", "/items/42", "testserver", None),  # 405: both /items routes are partial
        ("FOO", "/items/abc", "testserver", None),
        ("GET", "/items/new", "testserver", "/items/{slug}"),  # the earlier route wins
        ("GET", "/items/", "testserver", None),  # redirect to /items
        ("GET", "/items//42", "testserver", None),
        ("GET", "/Items/42", "testserver", None),  # paths are case-sensitive
        ("GET", "/items/42/", "testserver", None),
        ("GET", "/items/../items/42", "testserver", None),  # no dot-segment folding
        ("GET", "/items\n", "testserver", "/items"),  # `$` matches before a final newline
        ("GET", "/health", "testserver", "/health"),
        ("DELETE", "/health", "testserver", None),  # 405
        ("GET", "/files/", "testserver", "/files/{rest}"),
        ("GET", "/files/a/../../etc", "testserver", "/files/{rest}"),
        ("GET", "/reports/q1.csv", "testserver", "/reports/{name}.csv"),
        ("GET", "/api", "testserver", None),  # redirect to /api/
        ("GET", "/api/", "testserver", "/api/"),
        ("PATCH", "/api/users/9", "testserver", "/api/users/{uid}"),
        ("GET", "/api/v2/things/3", "testserver", "/api/v2/things/{tid}"),
        ("GET", "/sub/x/5", "testserver", "/sub/x/{id}"),
        ("GET", "/sub/x", "testserver", None),  # the sub-app redirects
        ("GET", "/wrapped/w/3", "testserver", "/wrapped/w/{n}"),  # through the wrapper
        ("POST", "/wrapped/w/3", "testserver", None),  # 405 inside the wrapped app
        ("GET", "/static/css/site.css", "testserver", "/static/{path}"),
        ("GET", "/m/acme/dash", "testserver", "/m/{tenant}/dash"),
        ("GET", "/h/1", "API.EXAMPLE.COM:8080", "api.example.com/h/{x}"),
        ("GET", "/tenant", "acme.example.org", "{sub}.example.org/tenant"),
        ("GET", "/h", "other.example.com", None),
        ("FOO", "/any", "testserver", "/any"),
    ],
)
def test_starlette_table(method: str, path: str, host: str, expected: str | None) -> None:
    """Hand-picked variants resolve as Starlette dispatches them."""
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", host.encode())],
        "scheme": "http",
        "server": ("testserver", 80),
        "client": ("203.0.113.9", 4000),
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
    }
    resolved = Resolver(STARLETTE.router).resolve_uncached(scope)
    assert (resolved.key if resolved else None) == expected
    _check(STARLETTE, scope)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests(STARLETTE_TEMPLATES))
def test_starlette_resolves_as_it_dispatches(scope: dict[str, Any]) -> None:
    """For any generated request, apiguard's route is the route Starlette runs."""
    _check(STARLETTE, scope)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests(FASTAPI_TEMPLATES))
@example(
    {
        "type": "http",
        "method": "GET",
        "path": "/v1/orders/7/lines/2",
        "raw_path": b"",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "scheme": "http",
    }
)
@example(
    {
        "type": "http",
        "method": "POST",
        "path": "/v2/orders/",
        "raw_path": b"",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "scheme": "http",
    }
)
@example(
    {
        "type": "websocket",
        "path": "/v1/x/live",
        "raw_path": b"",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "scheme": "ws",
    }
)
def test_fastapi_resolves_as_it_dispatches(scope: dict[str, Any]) -> None:
    """Nested included routers, a router included twice, mounts: as FastAPI dispatches."""
    _check(FASTAPI, scope)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_random_paths_resolve_as_dispatched(scope: dict[str, Any]) -> None:
    """Paths of random segments (mostly 404s) agree on both frameworks."""
    _check(STARLETTE, scope)
    _check(FASTAPI, scope)


def test_fastapi_routes_added_after_first_request_are_seen() -> None:
    """Routes included after the resolver compiled are picked up."""
    app = fastapi_app()
    router = router_of(app)
    assert router is not None
    resolver = Resolver(router)
    scope = {"type": "http", "method": "GET", "path": "/late", "root_path": "", "headers": []}
    assert resolver.resolve(scope) is None
    app.add_api_route("/late", lambda: None, methods=["GET"])
    match = resolver.resolve(scope)
    assert match is not None
    assert match.key == "/late"


def test_fastapi_frontend_routes_resolve_last(tmp_path: Any) -> None:
    """FastAPI's low-priority frontend routes resolve after every other route and redirect."""
    (tmp_path / "index.html").write_text("<p>hi</p>")
    app = fastapi_app()
    if not hasattr(app.router, "frontend"):  # pragma: no cover - older FastAPI
        pytest.fail("this FastAPI has no frontend(): the pinned range should")
    app.router.frontend("/app", directory=tmp_path)
    router = router_of(app)
    assert router is not None
    for path, method in [
        ("/app/index.html", "GET"),
        ("/app/deep/link", "GET"),
        ("/app", "GET"),
        ("/health", "GET"),
        ("/app/x", "POST"),
        ("/nothing", "GET"),
    ]:
        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "root_path": "",
            "headers": [(b"accept", b"text/html")],
            "query_string": b"",
        }
        resolved = Resolver(router).resolve_uncached(dict(scope))
        expected = "/app/{path}" if path.startswith("/app") and method == "GET" else None
        if path == "/health":
            expected = "/health"
        assert (resolved.key if resolved else None) == expected, path


def test_fastapi_frontend_routes_of_a_mounted_app_keep_the_mount_prefix(tmp_path: Any) -> None:
    """A frontend inside a mounted FastAPI app resolves under the mount, as it is served."""
    (tmp_path / "index.html").write_text("<p>hi</p>")
    sub = fastapi_app()
    sub.router.frontend("/app", directory=tmp_path)
    outer = Starlette(routes=[Mount("/sub", app=sub)])
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/sub/app/deep/link",
        "root_path": "",
        "headers": [(b"accept", b"text/html")],
        "query_string": b"",
    }
    resolved = Resolver(outer.router).resolve_uncached(dict(scope))
    assert resolved is not None
    assert resolved.key == "/sub/app/{path}"
    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    asyncio.run(outer(dict(scope), receive, send))
    assert statuses == [200]  # served by the frontend: a route that ran


def test_router_without_redirects_resolves_slash_variant_to_none() -> None:
    """With redirect_slashes off, a slash variant is a 404: none, not the route."""
    app = starlette_app()
    app.router.redirect_slashes = False
    scope = {"type": "http", "method": "GET", "path": "/health/", "root_path": "", "headers": []}
    assert Resolver(app.router).resolve_uncached(dict(scope)) is None
    assert asyncio.run(_dispatch(app, dict(scope))) is None
