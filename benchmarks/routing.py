"""Route resolution: cached and uncached (random ids), by number of routes.

Beside it, the reference: Starlette's own `matches()` scan over the routes,
which is what the OpenTelemetry Starlette/FastAPI instrumentations do per
request to find `http.route`.
"""

from __future__ import annotations

import itertools
from typing import Any

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Match, Route

from apiguard.routing import Resolver
from benchmarks.driver import Case, FuncCase

SIZES = (10, 100, 1000)


def _app(size: int) -> Starlette:
    """`size` routes of realistic shapes: collections and items, a few nested."""

    async def endpoint(request: Any) -> PlainTextResponse:
        return PlainTextResponse("")

    routes = []
    for i in range(size // 2):
        routes.append(Route(f"/res{i}", endpoint, methods=["GET", "POST"]))
        if i % 5 == 4:
            routes.append(Route(f"/res{i}/{{item_id:int}}/parts/{{part}}", endpoint))
        else:
            routes.append(
                Route(f"/res{i}/{{item_id:int}}", endpoint, methods=["GET", "PUT", "DELETE"])
            )
    return Starlette(routes=routes[:size])


def _scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "root_path": "",
        "headers": [(b"host", b"api.example.com")],
    }


def cases() -> list[Case]:
    out: list[Case] = []
    for size in SIZES:
        app = _app(size)
        resolver = Resolver(app.router)
        last = size // 2 - 2  # a late route: the worst case of a linear scan
        prefix = f"/res{last}/"
        counter = itertools.count(10**12)
        hot = _scope(f"{prefix}42")
        assert resolver.resolve_uncached(hot) is not None

        def build(_i: int, prefix: str = prefix, counter: Any = counter) -> Any:
            return _scope(prefix + str(next(counter)))

        def uncached(
            _i: int, prefix: str = prefix, counter: Any = counter, resolver: Resolver = resolver
        ) -> Any:
            # A new id every call: each path is seen once, so never cached.
            return resolver.resolve(_scope(prefix + str(next(counter))))

        def cached(_i: int, resolver: Resolver = resolver, hot: Any = hot) -> Any:
            return resolver.resolve(hot)

        def starlette_scan(
            _i: int, prefix: str = prefix, counter: Any = counter, routes: Any = app.routes
        ) -> Any:
            scope = _scope(prefix + str(next(counter)))
            for route in routes:
                match, _ = route.matches(scope)
                if match is Match.FULL:
                    return route
            return None

        base = f"{size} routes: build a scope (baseline)"
        out += [
            FuncCase(base, build),
            FuncCase(f"{size} routes: resolve, random ids (uncached)", uncached, baseline=base),
            FuncCase(f"{size} routes: resolve, repeated path (cached)", cached),
            FuncCase(f"{size} routes: Starlette matches() scan", starlette_scan, baseline=base),
        ]
    return out


TITLE = "routing: µs per resolution, by number of routes"
