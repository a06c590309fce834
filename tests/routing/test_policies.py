"""Per-route options: keys, start-up checks, lookup, the fallback matcher, the cache."""

from __future__ import annotations

import random
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from apiguard import ConfigError
from apiguard.context import get_context
from apiguard.routing import Resolver, RouteMatch, RoutePolicies, parse_route_key, resolve
from tests.routing._apps import endpoint, starlette_app


def _scope(path: str, method: str = "GET", app: Any = None, **extra: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "query_string": b"",
    }
    if app is not None:
        scope["app"] = app
    scope.update(extra)
    return scope


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("/items/{item_id}", (None, "/items/{item_id}")),
        ("/items/{item_id:int}", (None, "/items/{item_id}")),
        ("GET /items/{item_id:int}", ("GET", "/items/{item_id}")),
        ("  POST   /orders ", ("POST", "/orders")),
        ("GET api.example.com/h/{x}", ("GET", "api.example.com/h/{x}")),
        ("API.Example.com/h", (None, "api.example.com/h")),
    ],
)
def test_route_keys_parse(key: str, expected: tuple[str | None, str]) -> None:
    """Keys take an optional method, an optional host and a template with or without types."""
    assert parse_route_key("routes", key) == expected


@pytest.mark.parametrize(
    "key", ["", "get /items", "GET", "GET  ", "items", "GET /a /b", "/a b", 42]
)
def test_malformed_route_keys_are_config_errors(key: Any) -> None:
    """A key that is not `METHOD /template` fails, naming the option and the key."""
    with pytest.raises(ConfigError, match="scopes: route key"):
        parse_route_key("scopes", key)


def test_duplicate_keys_after_normalisation_fail() -> None:
    """Two spellings of one route are one key given twice."""
    with pytest.raises(ConfigError, match="given twice"):
        RoutePolicies("routes", {"/items/{id}": 1, "/items/{id:int}": 2}, 0)


def test_non_mapping_option_fails() -> None:
    with pytest.raises(ConfigError, match="expected a mapping"):
        RoutePolicies("routes", ["/items"], 0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (
            "/itemz/{item_id}",
            r"'/itemz/\{item_id\}' is not a route of the app; did you mean '/items/\{item_id\}'",
        ),
        ("PATCH /health", "does not accept PATCH"),
        ("/nowhere", "is not a route of the app"),
    ],
)
def test_unknown_templates_fail_when_bound_to_the_app(key: str, message: str) -> None:
    """A key naming a route or method the app does not have is a start-up error."""
    policies = RoutePolicies("routes", {key: 1}, 0)
    with pytest.raises(ConfigError, match=message):
        policies.bind(starlette_app().router)


def test_known_templates_bind_through_a_middleware_chain() -> None:
    """Binding follows `.app` links down to the router, as Starlette builds its stack."""

    class Wrapper:
        def __init__(self, app: Any) -> None:
            self.app = app

    policies = RoutePolicies(
        "routes",
        {
            "GET /items/{item_id:int}": 1,
            "/static/{path}": 2,
            "api.example.com/h": 3,
            "HEAD /health": 4,
            "/ws": 5,
        },
        0,
    )
    policies.bind(Wrapper(Wrapper(starlette_app().router)))  # type: ignore[arg-type]


def test_a_template_with_a_route_per_method_binds_every_method() -> None:
    """@app.get("/orders") and @app.post("/orders") are two routes of one template."""
    app = Starlette(
        routes=[
            Route("/orders", endpoint, methods=["GET"]),
            Route("/orders", endpoint, methods=["POST"]),
        ]
    )
    RoutePolicies("routes", {"POST /orders": 1, "GET /orders": 2}, 0).bind(app.router)
    with pytest.raises(ConfigError, match=r"does not accept PUT \(only GET, HEAD, POST\)"):
        RoutePolicies("routes", {"PUT /orders": 1}, 0).bind(app.router)


def test_lookup_by_method_then_head_as_get_then_any_method() -> None:
    """HEAD gets the GET policy; a method-less key covers every method."""
    app = starlette_app()
    policies = RoutePolicies(
        "routes",
        {"GET /items/{item_id}": "get", "/items/{item_id}": "any", "/health": "h"},
        "default",
    )
    assert policies.lookup(_scope("/items/1", "GET", app)) == "get"
    assert policies.lookup(_scope("/items/1", "HEAD", app)) == "get"
    assert policies.lookup(_scope("/items/1", "PUT", app)) == "any"
    assert policies.lookup(_scope("/health", "HEAD", app)) == "h"
    assert policies.lookup(_scope("/nothing", "GET", app)) == "default"
    # A 405 reaches no endpoint: the default policy.
    assert policies.lookup(_scope("/health", "POST", app)) == "default"


def test_resolution_is_shared_through_the_request_context() -> None:
    """The first layer resolves; later layers read the context."""
    app = starlette_app()
    scope = _scope("/items/5", app=app)
    first = resolve(scope)
    assert first is not None
    assert get_context(scope).route is first
    app.router.routes.clear()  # would resolve to none now, but the context answers
    assert resolve(scope) is first


def test_a_sub_app_resolves_its_own_routes() -> None:
    """When scope["app"] changes (a mounted Starlette app), resolution starts again."""
    inner = Starlette(routes=[Route("/x/{id:int}", endpoint("x"))])
    outer = Starlette(routes=[Mount("/sub", app=inner)])
    scope = _scope("/sub/x/1", app=outer)
    assert resolve(scope) == RouteMatch("/sub/x/{id}", None, frozenset({"GET", "HEAD"}))
    scope.update(app=inner, root_path="/sub")
    assert resolve(scope) == RouteMatch("/x/{id}", None, frozenset({"GET", "HEAD"}))


def test_fallback_matcher_for_plain_asgi_apps() -> None:
    """Without a router, the option's own templates are matched, first listed first."""
    policies = RoutePolicies(
        "routes",
        {
            "POST /orders": "create",
            "/orders/{order_id:int}": "one",
            "/files/{rest:path}": "file",
            "api.example.com/h": "host",
        },
        "default",
    )
    assert policies.lookup(_scope("/orders", "POST")) == "create"
    assert policies.lookup(_scope("/orders", "GET")) == "default"
    assert policies.lookup(_scope("/orders/12", "DELETE")) == "one"
    assert policies.lookup(_scope("/orders/x", "GET")) == "default"
    assert policies.lookup(_scope("/files/a/b")) == "file"
    assert policies.lookup(_scope("/h", headers=[(b"host", b"api.example.com")])) == "host"
    assert policies.lookup(_scope("/h")) == "default"


def test_fallback_rejects_invalid_templates() -> None:
    with pytest.raises(ConfigError, match="not a valid Starlette path template"):
        RoutePolicies("routes", {"/a/{x:nosuchtype}": 1}, 0)


def test_empty_policies_never_resolve() -> None:
    """With no per-route keys, lookup is the default and touches no resolver."""
    policies: RoutePolicies[str] = RoutePolicies("routes", None, "d")
    assert not policies
    scope = _scope("/items/1", app=starlette_app())
    assert policies.lookup(scope) == "d"
    assert "state" not in scope


def _cached_paths(resolver: Resolver) -> set[str]:
    return {key[1] for key in resolver._cache}


def _hot_and_random(resolver: Resolver, hot: list[dict[str, Any]], n_random: int) -> None:
    rng = random.Random(7)
    for i in range(n_random):
        resolver.resolve(_scope(f"/items/{rng.getrandbits(64)}"))
        resolver.resolve(hot[i % len(hot)])


def test_random_ids_neither_fill_nor_flush_the_cache() -> None:
    """Paths seen once are never cached; hot paths stay cached through a flood."""
    resolver = Resolver(starlette_app().router, cache_size=64)
    hot = [_scope(p) for p in ("/items/1", "/health", "/api/users/7", "/files/a")]
    for scope in hot * 2:
        resolver.resolve(scope)
    _hot_and_random(resolver, hot, 20_000)
    assert {s["path"] for s in hot} <= _cached_paths(resolver)
    assert len(resolver._cache) <= 64


def test_flood_of_repeated_random_ids_keeps_hot_paths() -> None:
    """Even ids sent twice (admitted) are evicted before paths in use."""
    resolver = Resolver(starlette_app().router, cache_size=64)
    hot = [_scope(p) for p in ("/items/1", "/health")]
    rng = random.Random(3)
    for scope in hot * 2:
        resolver.resolve(scope)
    for i in range(5_000):
        attack = _scope(f"/items/{rng.getrandbits(64)}")
        resolver.resolve(attack)
        resolver.resolve(attack)
        resolver.resolve(hot[i % 2])
    assert {"/items/1", "/health"} <= _cached_paths(resolver)
    assert len(resolver._cache) <= 64


def test_cached_answers_equal_uncached_ones() -> None:
    resolver = Resolver(starlette_app().router, cache_size=8)
    paths = ["/items/1", "/items/abc", "/health", "/nothing", "/api/users/2", "/static/x"] * 5
    for path in paths:
        scope = _scope(path)
        assert resolver.resolve(dict(scope)) == resolver.resolve_uncached(dict(scope))


def test_long_paths_are_never_cached() -> None:
    """A client sending huge paths (twice) cannot make the cache hold them."""
    resolver = Resolver(starlette_app().router, cache_size=64)
    scope = _scope("/files/" + "a" * 60_000)
    for _ in range(3):
        match = resolver.resolve(dict(scope))
        assert match is not None
        assert match.key == "/files/{rest}"
    assert resolver._cache == {}
    assert resolver._seen == set()
