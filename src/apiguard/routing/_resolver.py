"""The resolver: a request to the route its router dispatches it to, with a bounded cache."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

from starlette.routing import Match, Router

from apiguard._types import Scope
from apiguard.context import CONTEXT_KEY, RequestContext, get_context
from apiguard.routing._framework import (
    WEBSOCKET_METHODS,
    compile_router,
    find_router,
    frontend_routes,
    low_priority,
    route_path,
    router_of,
)
from apiguard.routing._tree import HOST, LEAF, MOUNT, OPAQUE, Entry, Level, RouteInfo, RouteMatch

__all__ = [
    "Resolver",
    "app_resolver",
    "reset",
    "resolve",
    "resolve_with",
    "resolver_for",
    "routes_of",
]

#: Paths (and Host headers) longer than this are resolved without the cache.
_MAX_CACHED_PATH = 512


def _listed(level: Level) -> Iterator[RouteInfo]:
    """A level's routes in dispatch order, mounted and included ones where they sit."""
    for entry in level.entries:
        if entry.child is not None:
            yield from _listed(entry.child)
            continue
        match = entry.match
        if match is None:  # a route type without a template: nothing to name
            continue
        for kind in entry.types:
            if kind == "websocket":
                yield RouteInfo(
                    WEBSOCKET_METHODS, match.key, "websocket", match.template, match.host
                )
            else:
                yield RouteInfo(match.methods, match.key, "http", match.template, match.host)
    for match in frontend_routes(level):
        yield RouteInfo(match.methods, match.key, "http", match.template, match.host)


class Resolver:
    """Resolves requests to the routes of one router, as the router dispatches.

    Args:
        router: The app's router (`app.router`).
        cache_size: How many resolved paths to keep.
    """

    def __init__(self, router: Router, *, cache_size: int = 4096) -> None:
        self._router = router
        self._cache_size = cache_size
        self._compile()

    def _compile(self) -> None:
        routes = self._router.routes
        self._routes = routes
        self._count = len(routes)
        self._level = compile_router(self._router)
        self._host_dependent = any(e.kind in (HOST, OPAQUE) for e in self._all_entries())
        self._cache: dict[tuple[str, ...], list[Any]] = {}
        self._seen: set[tuple[str, ...]] = set()

    def _all_entries(self) -> Iterator[Entry]:
        stack = [self._level]
        while stack:
            level = stack.pop()
            for entry in level.entries:
                yield entry
                if entry.child is not None:
                    stack.append(entry.child)

    def routes(self) -> list[RouteInfo]:
        """Every route of the router, in dispatch order.

        Mounts, sub-applications, `Host` routes and FastAPI's included
        routers are walked where they sit; FastAPI's low-priority frontend
        routes come last at their level, as they are tried. A mount of an
        app without routes is one route, `"/prefix/{path}"`, listed for
        HTTP and for WebSocket.
        """
        self._refresh()
        return list(_listed(self._level))

    def known(self) -> dict[str, RouteMatch]:
        """Every route key the app has, with the methods its routes accept together.

        Routes that share a key (`GET /orders` and `POST /orders` declared
        separately, as FastAPI does, or a page and a WebSocket on one path)
        are merged: their methods are united, `WEBSOCKET` included.
        """
        known: dict[str, RouteMatch] = {}
        for info in self.routes():
            seen = known.get(info.key)
            if seen is None:
                known[info.key] = RouteMatch(info.template, info.host, info.methods)
            elif seen.methods is not None:
                methods = None if info.methods is None else seen.methods | info.methods
                known[info.key] = RouteMatch(seen.template, seen.host, methods)
        return known

    def _refresh(self) -> None:
        routes = self._router.routes
        if routes is not self._routes or len(routes) != self._count:
            self._compile()

    def resolve(self, scope: Scope) -> RouteMatch | None:
        """The route `scope` dispatches to, or `None` (404, 405, redirect)."""
        routes = self._router.routes
        if routes is not self._routes or len(routes) != self._count:
            self._compile()
        path = scope["path"]
        if len(path) > _MAX_CACHED_PATH:
            # Long paths are resolved but never kept: 4096 keys of 64 KiB paths
            # would otherwise pin a quarter of a GiB.
            return self.resolve_uncached(scope)
        # A websocket scope has no method: "" keeps it apart from any HTTP request.
        root_path = scope.get("root_path")
        key: tuple[str, ...] = (
            (scope.get("method", ""), path)
            if not root_path
            else (scope.get("method", ""), path, root_path)
        )
        if self._host_dependent:
            host = next((v for k, v in scope["headers"] if k == b"host"), b"")
            if len(host) > _MAX_CACHED_PATH:
                # Never a truncated Host in a key: two hosts sharing a prefix
                # would share an entry while the router tells them apart.
                return self.resolve_uncached(scope)
            key += (host.decode("latin-1"),)
        slot = self._cache.get(key)
        if slot is not None:
            slot[1] = True
            return slot[0]  # type: ignore[no-any-return]
        match = self.resolve_uncached(scope)
        self._admit(key, match)
        return match

    def _admit(self, key: tuple[str, ...], match: RouteMatch | None) -> None:
        seen = self._seen
        if key not in seen:
            # First sighting: remember it, cache nothing (random ids stop here).
            if len(seen) >= self._cache_size:
                seen.clear()
            seen.add(key)
            return
        seen.discard(key)
        cache = self._cache
        if len(cache) >= self._cache_size:
            # Second chance: drop what was not used since the last sweep.
            for stale_key, slot in list(cache.items()):
                if slot[1]:
                    slot[1] = False
                else:
                    del cache[stale_key]
            if len(cache) >= self._cache_size:
                return
        cache[key] = [match, False]

    def resolve_uncached(self, scope: Scope) -> RouteMatch | None:
        """Resolve without the cache: the path every new path takes."""
        return _resolve(
            self._level,
            scope,
            scope["type"],
            scope.get("method", ""),
            scope["path"],
            scope.get("root_path", ""),
        )


def _resolve(
    level: Level, scope: Scope, kind: str, method: str, path: str, root_path: str
) -> RouteMatch | None:
    the_route_path = route_path(path, root_path)
    entries = level.entries
    partial = False
    for index in level.candidates(the_route_path):
        entry = entries[index]
        if kind not in entry.types:
            continue
        if entry.kind == LEAF:
            if entry.regex.match(the_route_path):  # type: ignore[union-attr]
                if entry.methods is None or kind != "http" or method in entry.methods:
                    return entry.match
                partial = True
        elif entry.kind == MOUNT:
            found = entry.regex.match(the_route_path)  # type: ignore[union-attr]
            if found is not None:
                if entry.child is None:
                    return entry.match
                matched_path = the_route_path[: -len("/" + found["path"])]
                return _resolve(entry.child, scope, kind, method, path, root_path + matched_path)
        else:
            child_scope = {**scope, "root_path": root_path, "path_params": {}}
            outcome, _ = entry.route.matches(child_scope)  # type: ignore[union-attr]
            if outcome is Match.FULL:
                if entry.kind == HOST and entry.child is not None:
                    return _resolve(entry.child, scope, kind, method, path, root_path)
                return entry.match
            if outcome is Match.PARTIAL:
                partial = True
    if partial or level.low_priority is None or kind != "http":
        return None  # 405, or 404 / redirect
    return low_priority(level, scope, path, root_path, the_route_path)


# --- one resolver per router, one per app ---------------------------------------------

# Router defines __eq__ without __hash__, so it cannot key a WeakKeyDictionary:
# key by id and keep a weak reference to tell a recycled id from the router.
_resolvers: dict[int, tuple[weakref.ref[Router], Resolver]] = {}

# scope["app"] -> its resolver (or None for an app without a router), by id
# with a weak reference, so that the per-request lookup is one dict get.
_app_resolvers: dict[int, tuple[weakref.ref[Any], Resolver | None]] = {}

# The app seen last, and its resolver: a process usually serves one app.
_last_app: tuple[Any, Resolver | None] = (None, None)


def reset() -> None:
    """Forget every shared resolver (for tests: `apiguard.testing.reset_state`)."""
    global _last_app
    _resolvers.clear()
    _app_resolvers.clear()
    _last_app = (None, None)


def resolver_for(router: Router) -> Resolver:
    """The one shared [`Resolver`][apiguard.routing.Resolver] of `router`."""
    entry = _resolvers.get(id(router))
    if entry is not None and entry[0]() is router:
        return entry[1]
    resolver = Resolver(router)
    key = id(router)
    _resolvers[key] = (weakref.ref(router, lambda _: _resolvers.pop(key, None)), resolver)
    return resolver


def routes_of(app: object) -> list[RouteInfo]:
    """Every route of an app, in dispatch order, without a request.

    For reports and API descriptions: what each route is keyed as, and what
    a layer's [`RoutePolicies.get`][apiguard.routing.RoutePolicies.get]
    gives there. The app's router is found as a layer finds it (following
    `.app` links through middleware); an app without one has no routes to
    list.

    Args:
        app: A Starlette or FastAPI app, a router, or middleware around one.

    Returns:
        One [`RouteInfo`][apiguard.routing.RouteInfo] per route and kind.

    Examples:
        >>> from starlette.applications import Starlette
        >>> from starlette.routing import Route, WebSocketRoute
        >>> app = Starlette(routes=[Route("/items/{id:int}", None), WebSocketRoute("/live", None)])
        >>> [(r.kind, r.key) for r in routes_of(app)]
        [('http', '/items/{id}'), ('websocket', '/live')]
    """
    router = find_router(app)
    return resolver_for(router).routes() if router is not None else []


def app_resolver(app: Any) -> Resolver | None:
    """The resolver of `app`'s router (`scope["app"]`), or `None` without one."""
    global _last_app
    last, resolver = _last_app
    if last is app:
        return resolver
    resolver = _lookup_app(app)
    _last_app = (app, resolver)
    return resolver


def _lookup_app(app: Any) -> Resolver | None:
    entry = _app_resolvers.get(id(app))
    if entry is not None and entry[0]() is app:
        return entry[1]
    router = router_of(app)
    resolver = resolver_for(router) if router is not None else None
    key = id(app)
    try:
        ref = weakref.ref(app, lambda _: _app_resolvers.pop(key, None))
    except TypeError:  # not weakly referenceable: no memo
        return resolver
    _app_resolvers[key] = (ref, resolver)
    return resolver


def resolve_with(scope: Scope, resolver: Resolver) -> RouteMatch | None:
    """The route `resolver`'s router dispatches this request to, once per request.

    The result is kept in the request context with the resolver it came
    from: the next layer bound to the same router reads it for free, and a
    layer bound to another router (an app mounted in another) resolves
    again, so that layers alternating between routers each get their own.
    """
    context: RequestContext | None = scope.get(CONTEXT_KEY)
    if context is None:
        context = get_context(scope)
    elif context.route_resolver is resolver:
        return context.route
    match = resolver.resolve(scope)
    context.route_resolver = resolver
    context.route = match
    return match


def resolve(scope: Scope, fallback: Resolver | None = None) -> RouteMatch | None:
    """The route `scope["app"]` will dispatch this request to, resolved once per request.

    The result is kept in the request context, so every layer after the
    first reads it for free. Without a Starlette router in `scope["app"]`,
    `fallback` (a layer's own templates) answers, uncached in the context.
    `None` when the request reaches no route.
    """
    app = scope.get("app")
    if app is not None:
        resolver = app_resolver(app)
        if resolver is not None:
            return resolve_with(scope, resolver)
    return fallback.resolve(scope) if fallback is not None else None
