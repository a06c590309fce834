"""Starlette's and FastAPI's routing, as apiguard reads it: every private detail in one place.

The compiler turns a router into [levels][apiguard.routing._tree.Level] that
resolve as the framework dispatches. What it reads beyond the public routing
API (each a pinned-version detail, covered by the differential tests):

- Starlette: `Mount._base_app` (the mounted app, under the mount's own
  middleware), and `get_route_path` (copied in `route_path`).
- FastAPI 0.137+: included routers nested rather than flattened
  (`effective_candidates()`, `original_router`), the routes seen through an
  inclusion (`_EffectiveRouteContext`: `original_route`, `starlette_route`,
  `path_regex`, `path_format`, `param_convertors`, `methods`), and the
  low-priority frontend routes (`_low_priority_routes`,
  `effective_low_priority_routes()`, `_iter_low_priority_routes()`,
  `_match_low_priority()`, a group's `_match()` and `routes`, a frontend
  route's `path` and `methods`, `frontend_prefix`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from starlette.convertors import Convertor
from starlette.routing import Host, Match, Mount, Route, Router, WebSocketRoute

from apiguard._types import Scope
from apiguard.errors import ConfigError
from apiguard.routing._keys import WEBSOCKET, normalize_template
from apiguard.routing._tree import (
    BOTH,
    HOST,
    HTTP_ONLY,
    LEAF,
    MOUNT,
    OPAQUE,
    WEBSOCKET_ONLY,
    Entry,
    Level,
    RouteMatch,
)

__all__ = [
    "WEBSOCKET_METHODS",
    "compile_router",
    "find_router",
    "frontend_routes",
    "low_priority",
    "route_path",
    "router_of",
    "runs_inside",
]

#: What a WebSocket route accepts: keyed `"WEBSOCKET /path"`, apart from HTTP GET.
WEBSOCKET_METHODS: Final = frozenset({WEBSOCKET})
#: How deep mounts may nest before a router mounted in itself is suspected.
_MAX_DEPTH = 32


def route_path(path: str, root_path: str) -> str:
    """The path a router matches: exactly `starlette._utils.get_route_path`."""
    if not root_path or not path.startswith(root_path):
        return path
    if path == root_path:
        return ""
    if path[len(root_path)] == "/":
        return path[len(root_path) :]
    return path


def router_of(app: object) -> Router | None:
    """The router that dispatches for `app`: the app itself, or its `.router`."""
    if isinstance(app, Router):
        return app
    router = getattr(app, "router", None)
    return router if isinstance(router, Router) else None


def find_router(app: object, *, max_depth: int = 64) -> Router | None:
    """Follow a middleware chain's `.app` links down to the router, if any.

    Starlette builds its stack as middleware wrapping `ExceptionMiddleware`
    wrapping the router, each holding the next in `.app`; a layer wrapped
    around an app holds the app in `.app` too.
    """
    for _ in range(max_depth):
        router = router_of(app)
        if router is not None:
            return router
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


def runs_inside(app: object, target: object, *, max_depth: int = 64) -> bool:
    """Whether `target` is in the middleware stack `app` runs before its router.

    Starlette keeps that stack, built at the first call, in
    `app.middleware_stack`; each middleware holds the next in `.app`.
    """
    node = getattr(app, "middleware_stack", None)
    for _ in range(max_depth):
        if node is None:
            return False
        if node is target:
            return True
        node = getattr(node, "app", None)
    return False


def _is_included_router(route: object) -> bool:
    # FastAPI 0.137+ nests included routers instead of copying their routes.
    return hasattr(route, "effective_candidates") and hasattr(route, "original_router")


def compile_router(router: Router) -> Level:
    """The router's routes as a tree of levels, mounts and included routers walked."""
    return _Compiler().level(router, "", None)


class _Compiler:
    def __init__(self) -> None:
        self.depth = 0

    def level(self, router: Router, prefix: str, host: str | None) -> Level:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            msg = "routing: routes nest more than 32 levels deep (a router mounted in itself?)"
            raise ConfigError(msg)
        low = router if getattr(router, "_low_priority_routes", None) else None
        if low is None and any(
            _is_included_router(route) and route.effective_low_priority_routes()  # type: ignore[attr-defined]
            for route in router.routes
        ):
            low = router
        level = Level(bool(getattr(router, "redirect_slashes", False)), low, prefix, host)
        self.routes(level, router.routes, prefix, host)
        self.depth -= 1
        return level

    def routes(self, level: Level, routes: Sequence[Any], prefix: str, host: str | None) -> None:
        for route in routes:
            if _is_included_router(route):
                self.routes(level, route.effective_candidates(), prefix, host)
            elif hasattr(route, "original_route") and hasattr(route, "path_regex"):
                self.effective(level, route, prefix, host)
            else:
                self.route(level, route, prefix, host)

    def effective(self, level: Level, context: Any, prefix: str, host: str | None) -> None:
        """A FastAPI `_EffectiveRouteContext`: a route seen through its inclusion."""
        starlette_route = getattr(context, "starlette_route", None)
        if starlette_route is not None:
            self.route(level, starlette_route, prefix, host)
            return
        original = context.original_route
        if isinstance(original, Route):
            methods = frozenset(context.methods) if context.methods else None
            self.leaf(
                level,
                context.path_regex,
                context.path_format,
                context.param_convertors,
                methods,
                HTTP_ONLY,
                prefix,
                host,
            )
            return
        self.opaque(level, context, prefix, host)

    def leaf(
        self,
        level: Level,
        regex: re.Pattern[str],
        path_format: str,
        convertors: Mapping[str, Convertor[Any]],
        methods: frozenset[str] | None,
        types: tuple[str, ...],
        prefix: str,
        host: str | None,
    ) -> None:
        keyed = WEBSOCKET_METHODS if types is WEBSOCKET_ONLY else methods
        match = RouteMatch(prefix + path_format, host, keyed)
        level.add(Entry(LEAF, types, regex, methods, match), path_format, convertors)

    def route(self, level: Level, route: Any, prefix: str, host: str | None) -> None:
        if isinstance(route, Route):
            methods = frozenset(route.methods) if route.methods else None
            self.leaf(
                level,
                route.path_regex,
                route.path_format,
                route.param_convertors,
                methods,
                HTTP_ONLY,
                prefix,
                host,
            )
        elif isinstance(route, WebSocketRoute):
            self.leaf(
                level,
                route.path_regex,
                route.path_format,
                route.param_convertors,
                None,
                WEBSOCKET_ONLY,
                prefix,
                host,
            )
        elif isinstance(route, Mount):
            mount_prefix = prefix + route.path_format.removesuffix("/{path}")
            # Mount.app may be wrapped in the mount's own middleware; the
            # mounted app itself is kept in _base_app (Starlette 1.x). It may
            # be wrapped too (a layer around an app, then mounted): the
            # request reaches its router through the wrappers' .app links.
            sub_router = find_router(getattr(route, "_base_app", route.app))
            child = self.level(sub_router, mount_prefix, host) if sub_router is not None else None
            entry = Entry(
                MOUNT,
                BOTH,
                route.path_regex,
                None,
                RouteMatch(mount_prefix + "/{path}", host),
                child,
            )
            level.add(entry, route.path_format, route.param_convertors)
        elif isinstance(route, Host):
            host_key = normalize_template(route.host.lower())
            sub_router = find_router(route.app)
            child = self.level(sub_router, "", host_key) if sub_router is not None else None
            entry = Entry(HOST, BOTH, None, None, RouteMatch("/{path}", host_key), child, route)
            level.add(entry, None, {})
        else:
            self.opaque(level, route, prefix, host)

    def opaque(self, level: Level, route: Any, prefix: str, host: str | None) -> None:
        """A route type apiguard does not know: ask it, via its own `matches()`."""
        path_format = getattr(route, "path_format", None)
        match = RouteMatch(prefix + path_format, host) if isinstance(path_format, str) else None
        level.add(Entry(OPAQUE, BOTH, None, None, match, None, route), None, {})


def low_priority(
    level: Level, scope: Scope, path: str, root_path: str, route_path_: str
) -> RouteMatch | None:
    """FastAPI's low-priority routes (`app.frontend(...)`): after the redirect check."""
    if level.redirect_slashes and route_path_ != "/":
        toggled = path.rstrip("/") if route_path_.endswith("/") else path + "/"
        toggled_route_path = route_path(toggled, root_path)
        redirect_scope = {**scope, "path": toggled, "root_path": root_path}
        for index in level.candidates(toggled_route_path):
            entry = level.entries[index]
            if "http" not in entry.types:
                continue
            if entry.regex is not None:
                if entry.regex.match(toggled_route_path):
                    return None
            elif (
                entry.route is not None and entry.route.matches(redirect_scope)[0] is not Match.NONE
            ):
                return None
    router = level.low_priority
    child_scope = {**scope, "root_path": root_path}
    outcome, _, route, context = router._match_low_priority(child_scope)
    if outcome is not Match.FULL:
        return None
    group = context.original_route if context is not None else route
    prefix = getattr(context, "frontend_prefix", "") if context is not None else ""
    _, _, frontend = group._match(child_scope, prefix=prefix)
    if frontend is None:  # pragma: no cover - FULL implies a route
        return None
    return _frontend_match(level, prefix, frontend)


def _frontend_match(level: Level, prefix: str, frontend: Any) -> RouteMatch:
    """A frontend route's match: everything under its path, as `/{path}`."""
    base = (prefix.rstrip("/") + frontend.path).rstrip("/")
    return RouteMatch(level.prefix + base + "/{path}", level.host, frozenset(frontend.methods))


def frontend_routes(level: Level) -> list[RouteMatch]:
    """A level's low-priority routes (FastAPI's frontends), in the order they are tried."""
    router = level.low_priority
    if router is None:
        return []
    found: list[RouteMatch] = []
    for candidate in router._iter_low_priority_routes():
        original = getattr(candidate, "original_route", None)
        group = candidate if original is None else original
        prefix = getattr(candidate, "frontend_prefix", "") if original is not None else ""
        found += [_frontend_match(level, prefix, frontend) for frontend in group.routes]
    return found
