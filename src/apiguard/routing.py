"""Per-route policy: resolve a request to the route the app will dispatch it to.

Options that vary by route take a mapping from `"METHOD /template"` or
`"/template"` (Starlette path syntax) to a policy. A request is resolved to
exactly the route the app's own router would dispatch it to, or to none: the
resolver walks `scope["app"]`'s routes as Starlette and FastAPI walk them
(mounts, sub-applications, `Host` routes, `root_path`, FastAPI's nested
included routers) and matches with the framework's own compiled regexes, so
that no path variant reaches an endpoint while escaping that route's policy.

Cost: a segment trie narrows the routes to try to those whose literal segments
fit the path, so an uncached resolution does not grow with the number of
routes; a bounded cache serves repeated paths, and admits a path only on its
second sighting and evicts only entries not used since the last sweep, so an
attacker sending random ids neither fills it nor flushes it.
"""

from __future__ import annotations

import difflib
import re
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from starlette.convertors import (
    Convertor,
    FloatConvertor,
    IntegerConvertor,
    PathConvertor,
    StringConvertor,
    UUIDConvertor,
)
from starlette.routing import BaseRoute, Host, Match, Mount, Route, Router, WebSocketRoute

from apiguard._types import ASGIApp, Scope
from apiguard.context import CONTEXT_KEY, RequestContext, get_context
from apiguard.errors import ConfigError

__all__ = [
    "Resolver",
    "RouteMatch",
    "RoutePolicies",
    "find_router",
    "parse_route_key",
    "resolve",
]

P = TypeVar("P")

_METHOD = re.compile(r"^[A-Z][A-Z0-9_-]*$")
_PARAM_TYPE = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_]*):[a-zA-Z_][a-zA-Z0-9_]*\}")
#: Convertors whose regex matches one non-empty path segment and nothing else.
_SEGMENT_CONVERTORS: Final = (StringConvertor, IntegerConvertor, FloatConvertor, UUIDConvertor)
_HTTP: Final = ("http",)
_WEBSOCKET: Final = ("websocket",)
#: A WebSocket route is reached by a GET handshake (RFC 6455 §4.1): keyed as GET.
_HANDSHAKE: Final = frozenset({"GET"})
_BOTH: Final = ("http", "websocket")


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """The route a request resolves to.

    Attributes:
        template: The full path template, convertor types stripped
            (`/api/items/{item_id}`), mount prefixes included. A mount that
            hands the rest of the path to an app without routes ends in
            `/{path}`.
        host: The `Host` pattern the route sits under, if any.
        methods: The methods the route accepts; `None` for any.
        key: `host + template` under a `Host`, else `template`: what a
            per-route option names.
    """

    template: str
    host: str | None = None
    methods: frozenset[str] | None = None
    key: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "key", f"{self.host}{self.template}" if self.host else self.template
        )


def normalize_template(template: str) -> str:
    """Strip convertor types: `/items/{item_id:int}` -> `/items/{item_id}`."""
    return _PARAM_TYPE.sub(r"{\1}", template)


def parse_route_key(option: str, key: str) -> tuple[str | None, str]:
    """Split a per-route option key into `(method or None, route key)`.

    Accepted forms: `"/items/{id}"`, `"GET /items/{id}"`,
    `"GET api.example.com/items"` and `"api.example.com/items"` for routes
    under a `Host`. The route key has convertor types stripped and the host
    lowercased, as [`RouteMatch.key`][apiguard.routing.RouteMatch] has.

    Raises:
        ConfigError: the key is not of one of those forms.
    """
    method, target = _split_key(option, key)
    if target.startswith("/"):
        return method, normalize_template(target)
    host, _, path = target.partition("/")
    return method, normalize_template(host.lower()) + "/" + normalize_template(path)


def _split_key(option: str, key: str) -> tuple[str | None, str]:
    """`(method or None, target as written)`, the target being `/path` or `host/path`."""
    raw: object = key  # typed str, but users pass anything
    if not isinstance(raw, str):
        msg = f"{option}: route key {raw!r} is not a string like 'GET /items/{{item_id}}'"
        raise ConfigError(msg)
    method: str | None = None
    target = key.strip()
    if " " in target:
        method, _, target = target.partition(" ")
        target = target.strip()
        if not _METHOD.match(method):
            msg = f"{option}: route key {key!r} does not start with an uppercase HTTP method"
            raise ConfigError(msg)
    if not target or " " in target:
        msg = f"{option}: route key {key!r} is not like 'GET /items/{{item_id}}' or '/items'"
        raise ConfigError(msg)
    if not target.startswith("/"):
        host, slash, _ = target.partition("/")
        if not slash or not host:
            msg = f"{option}: route key {key!r} is not like '/items' or 'host.example/items'"
            raise ConfigError(msg)
    return method, target


# --- the compiled routing tree -------------------------------------------------------

_LEAF, _MOUNT, _HOST, _OPAQUE = range(4)
#: Paths (and Host headers) longer than this are resolved without the cache.
_MAX_CACHED_PATH = 512


@dataclass(slots=True)
class _Entry:
    kind: int
    types: tuple[str, ...]
    regex: re.Pattern[str] | None = None
    methods: frozenset[str] | None = None
    match: RouteMatch | None = None
    child: _Level | None = None
    route: BaseRoute | None = None


class _Node:
    __slots__ = ("ends", "literal", "param", "tails")

    def __init__(self) -> None:
        self.literal: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.ends: list[int] = []
        self.tails: list[int] = []


class _Level:
    """One router's routes, in dispatch order, with a segment trie over them."""

    __slots__ = ("always", "entries", "low_priority", "redirect_slashes", "root")

    def __init__(self, redirect_slashes: bool, low_priority: Any) -> None:
        self.entries: list[_Entry] = []
        self.redirect_slashes = redirect_slashes
        self.low_priority = low_priority
        self.root = _Node()
        self.always: list[int] = []

    def add(self, entry: _Entry, path_format: str | None, convertors: Mapping[str, Any]) -> None:
        index = len(self.entries)
        self.entries.append(entry)
        segments = _segments(path_format, convertors) if path_format is not None else None
        if segments is None:
            self.always.append(index)
            return
        node = self.root
        for segment in segments:
            if segment is _TAIL:
                node.tails.append(index)
                return
            if segment is _PARAM:
                if node.param is None:
                    node.param = _Node()
                node = node.param
            else:
                node = node.literal.setdefault(segment, _Node())
        node.ends.append(index)

    def candidates(self, route_path: str) -> Sequence[int]:
        """Indices of the entries that may match `route_path`, in dispatch order."""
        # A regex `$` also matches before a final newline: such paths get every entry.
        if not route_path.startswith("/") or route_path.endswith("\n"):
            return range(len(self.entries))
        segments = route_path[1:].split("/")
        depth = len(segments)
        found = list(self.always)
        stack = [(self.root, 0)]
        while stack:
            node, k = stack.pop()
            found += node.tails
            if k == depth:
                found += node.ends
                continue
            child = node.literal.get(segments[k])
            if child is not None:
                stack.append((child, k + 1))
            if node.param is not None:
                stack.append((node.param, k + 1))
        found.sort()
        return found


_PARAM = object()
_TAIL = object()
_PLACEHOLDER = re.compile(r"^\{([a-zA-Z_][a-zA-Z0-9_]*)\}$")


def _segments(path_format: str, convertors: Mapping[str, Any]) -> list[Any] | None:
    """Split a template into literal segments, `_PARAM` and a final `_TAIL`.

    `None` when the template does not split cleanly (a parameter inside a
    segment, a custom convertor, a `path` parameter before the end): such
    routes are tried on every request at their level.
    """
    if not path_format.startswith("/"):
        return None
    parts = path_format[1:].split("/")
    out: list[Any] = []
    for position, part in enumerate(parts):
        if "{" not in part and "}" not in part:
            out.append(part)
            continue
        placeholder = _PLACEHOLDER.match(part)
        if placeholder is None:
            return None
        convertor = convertors.get(placeholder[1])
        if type(convertor) in _SEGMENT_CONVERTORS:
            out.append(_PARAM)
        elif type(convertor) is PathConvertor and position == len(parts) - 1:
            out.append(_TAIL)
        else:
            return None
    return out


def _route_path(path: str, root_path: str) -> str:
    # Exactly starlette._utils.get_route_path.
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
    wrapping the router, each holding the next in `.app`.
    """
    for _ in range(max_depth):
        router = router_of(app)
        if router is not None:
            return router
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


def _is_included_router(route: object) -> bool:
    # FastAPI 0.137+ nests included routers instead of copying their routes.
    return hasattr(route, "effective_candidates") and hasattr(route, "original_router")


class _Compiler:
    def __init__(self) -> None:
        self.depth = 0

    def level(self, router: Router, prefix: str, host: str | None) -> _Level:
        self.depth += 1
        if self.depth > 32:
            msg = "routing: routes nest more than 32 levels deep (a router mounted in itself?)"
            raise ConfigError(msg)
        low_priority = router if getattr(router, "_low_priority_routes", None) else None
        if low_priority is None and any(
            _is_included_router(route) and route.effective_low_priority_routes()  # type: ignore[attr-defined]
            for route in router.routes
        ):
            low_priority = router
        level = _Level(bool(getattr(router, "redirect_slashes", False)), low_priority)
        self.routes(level, router.routes, prefix, host)
        self.depth -= 1
        return level

    def routes(self, level: _Level, routes: Sequence[Any], prefix: str, host: str | None) -> None:
        for route in routes:
            if _is_included_router(route):
                self.routes(level, route.effective_candidates(), prefix, host)
            elif hasattr(route, "original_route") and hasattr(route, "path_regex"):
                self.effective(level, route, prefix, host)
            else:
                self.route(level, route, prefix, host)

    def effective(self, level: _Level, context: Any, prefix: str, host: str | None) -> None:
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
                _HTTP,
                prefix,
                host,
            )
            return
        self.opaque(level, context, prefix, host)

    def leaf(
        self,
        level: _Level,
        regex: re.Pattern[str],
        path_format: str,
        convertors: Mapping[str, Convertor[Any]],
        methods: frozenset[str] | None,
        types: tuple[str, ...],
        prefix: str,
        host: str | None,
    ) -> None:
        keyed = _HANDSHAKE if types is _WEBSOCKET else methods
        match = RouteMatch(prefix + path_format, host, keyed)
        level.add(_Entry(_LEAF, types, regex, methods, match), path_format, convertors)

    def route(self, level: _Level, route: Any, prefix: str, host: str | None) -> None:
        if isinstance(route, Route):
            methods = frozenset(route.methods) if route.methods else None
            self.leaf(
                level,
                route.path_regex,
                route.path_format,
                route.param_convertors,
                methods,
                _HTTP,
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
                _WEBSOCKET,
                prefix,
                host,
            )
        elif isinstance(route, Mount):
            mount_prefix = prefix + route.path_format.removesuffix("/{path}")
            # Mount.app may be wrapped in the mount's own middleware; the
            # mounted app itself is kept in _base_app (Starlette 1.x).
            sub_router = router_of(getattr(route, "_base_app", route.app))
            child = self.level(sub_router, mount_prefix, host) if sub_router is not None else None
            entry = _Entry(
                _MOUNT,
                _BOTH,
                route.path_regex,
                None,
                RouteMatch(mount_prefix + "/{path}", host),
                child,
            )
            level.add(entry, route.path_format, route.param_convertors)
        elif isinstance(route, Host):
            host_key = normalize_template(route.host.lower())
            sub_router = router_of(route.app)
            child = self.level(sub_router, "", host_key) if sub_router is not None else None
            entry = _Entry(_HOST, _BOTH, None, None, RouteMatch("/{path}", host_key), child, route)
            level.add(entry, None, {})
        else:
            self.opaque(level, route, prefix, host)

    def opaque(self, level: _Level, route: Any, prefix: str, host: str | None) -> None:
        """A route type apiguard does not know: ask it, via its own `matches()`."""
        path_format = getattr(route, "path_format", None)
        match = RouteMatch(prefix + path_format, host) if isinstance(path_format, str) else None
        level.add(_Entry(_OPAQUE, _BOTH, None, None, match, None, route), None, {})


def _walk(level: _Level) -> Iterator[RouteMatch]:
    for entry in level.entries:
        if entry.child is not None:
            yield from _walk(entry.child)
        elif entry.match is not None:
            yield entry.match


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
        self._level = _Compiler().level(self._router, "", None)
        self._host_dependent = any(e.kind in (_HOST, _OPAQUE) for e in self._all_entries())
        self._cache: dict[tuple[str, ...], list[Any]] = {}
        self._seen: set[tuple[str, ...]] = set()

    def _all_entries(self) -> Iterator[_Entry]:
        stack = [self._level]
        while stack:
            level = stack.pop()
            for entry in level.entries:
                yield entry
                if entry.child is not None:
                    stack.append(entry.child)

    def known(self) -> dict[str, RouteMatch]:
        """Every route the app has, by route key; for checking option keys.

        Routes that share a key (`GET /orders` and `POST /orders` declared
        separately, as FastAPI does) are merged: their methods are united.
        """
        self._refresh()
        known: dict[str, RouteMatch] = {}
        for match in _walk(self._level):
            seen = known.get(match.key)
            if seen is None:
                known[match.key] = match
            elif seen.methods is not None:
                methods = None if match.methods is None else seen.methods | match.methods
                known[match.key] = RouteMatch(seen.template, seen.host, methods)
        return known

    def matches(self) -> list[RouteMatch]:
        """Every route the app has, in dispatch order, several per key where several are."""
        self._refresh()
        return list(_walk(self._level))

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
    level: _Level, scope: Scope, kind: str, method: str, path: str, root_path: str
) -> RouteMatch | None:
    route_path = _route_path(path, root_path)
    entries = level.entries
    partial = False
    for index in level.candidates(route_path):
        entry = entries[index]
        if kind not in entry.types:
            continue
        if entry.kind == _LEAF:
            if entry.regex.match(route_path):  # type: ignore[union-attr]
                if entry.methods is None or kind != "http" or method in entry.methods:
                    return entry.match
                partial = True
        elif entry.kind == _MOUNT:
            found = entry.regex.match(route_path)  # type: ignore[union-attr]
            if found is not None:
                if entry.child is None:
                    return entry.match
                matched_path = route_path[: -len("/" + found["path"])]
                return _resolve(entry.child, scope, kind, method, path, root_path + matched_path)
        else:
            child_scope = {**scope, "root_path": root_path, "path_params": {}}
            outcome, _ = entry.route.matches(child_scope)  # type: ignore[union-attr]
            if outcome is Match.FULL:
                if entry.kind == _HOST and entry.child is not None:
                    return _resolve(entry.child, scope, kind, method, path, root_path)
                return entry.match
            if outcome is Match.PARTIAL:
                partial = True
    if partial or level.low_priority is None or kind != "http":
        return None  # 405, or 404 / redirect
    return _low_priority(level, scope, path, root_path, route_path)


def _low_priority(
    level: _Level, scope: Scope, path: str, root_path: str, route_path: str
) -> RouteMatch | None:
    """FastAPI's low-priority routes (`app.frontend(...)`): after the redirect check."""
    if level.redirect_slashes and route_path != "/":
        toggled = path.rstrip("/") if route_path.endswith("/") else path + "/"
        toggled_route_path = _route_path(toggled, root_path)
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
    base = (prefix.rstrip("/") + frontend.path).rstrip("/")
    return RouteMatch(base + "/{path}", None, frozenset(frontend.methods))


# --- shared resolution per request ---------------------------------------------------

# Router defines __eq__ without __hash__, so it cannot key a WeakKeyDictionary:
# key by id and keep a weak reference to tell a recycled id from the router.
_resolvers: dict[int, tuple[weakref.ref[Router], Resolver]] = {}


def resolver_for(router: Router) -> Resolver:
    """The one shared [`Resolver`][apiguard.routing.Resolver] of `router`."""
    entry = _resolvers.get(id(router))
    if entry is not None and entry[0]() is router:
        return entry[1]
    resolver = Resolver(router)
    key = id(router)
    _resolvers[key] = (weakref.ref(router, lambda _: _resolvers.pop(key, None)), resolver)
    return resolver


# scope["app"] -> its resolver (or None for an app without a router), by id
# with a weak reference, so that the per-request lookup is one dict get.
_app_resolvers: dict[int, tuple[weakref.ref[Any], Resolver | None]] = {}


# The app seen last, and its resolver: a process usually serves one app.
_last_app: tuple[Any, Resolver | None] = (None, None)


def _resolver_of_app(app: Any) -> Resolver | None:
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


def resolve(scope: Scope, fallback: Resolver | None = None) -> RouteMatch | None:
    """The route `scope["app"]` will dispatch this request to, resolved once per request.

    The result is kept in the request context, so every layer after the
    first reads it for free. Without a Starlette router in `scope["app"]`,
    `fallback` (a layer's own templates) answers, uncached in the context.
    `None` when the request reaches no route.
    """
    app = scope.get("app")
    if app is not None:
        resolver = _resolver_of_app(app)
        if resolver is not None:
            context: RequestContext | None = scope.get(CONTEXT_KEY)
            if context is None:
                context = get_context(scope)
            elif context.route_resolver is resolver:
                return context.route
            match = resolver.resolve(scope)
            context.route_resolver = resolver
            context.route = match
            return match
    return fallback.resolve(scope) if fallback is not None else None


# --- per-route policies --------------------------------------------------------------


class RoutePolicies(Generic[P]):
    """A per-route option: route keys to policies, with a default.

    Args:
        option: The option's name, for error messages (`"routes"`, `"scopes"`).
        routes: `"METHOD /template"` or `"/template"` keys to policies.
        default: The policy of requests that reach no listed route.

    A request's policy is looked up by method and route key, then (for HEAD)
    as GET, then by route key alone; routes not listed get `default`. On an
    app with a Starlette router the request is resolved as the router
    dispatches it; on a plain ASGI app, the listed templates themselves are
    matched against the path, first listed first.
    """

    def __init__(self, option: str, routes: Mapping[str, P] | None, default: P) -> None:
        self.option = option
        self.default = default
        self._raw: dict[tuple[str | None, str], str] = {}
        self._targets: list[tuple[str | None, str]] = []
        self._policies: dict[tuple[str | None, str], P] = {}
        given: object = routes  # typed a mapping, but users pass anything
        if given is not None and not isinstance(given, Mapping):
            msg = f"{option}: expected a mapping of route keys to policies, got {given!r}"
            raise ConfigError(msg)
        for raw_key, policy in (routes or {}).items():
            parsed = parse_route_key(option, raw_key)
            if parsed in self._policies:
                msg = f"{option}: route {raw_key!r} is given twice (as {self._raw[parsed]!r})"
                raise ConfigError(msg)
            self._raw[parsed] = raw_key
            self._targets.append(_split_key(option, raw_key))
            self._policies[parsed] = policy
        # route key -> {method or None: policy}: two dict gets per lookup.
        self._by_key: dict[str, dict[str | None, P]] = {}
        for (method, key), policy in self._policies.items():
            self._by_key.setdefault(key, {})[method] = policy
        self._fallback: Resolver | None = None
        if self._policies:
            self._fallback = _fallback_resolver(option, self._targets)

    def __bool__(self) -> bool:
        return bool(self._policies)

    def items(self) -> Iterator[tuple[tuple[str | None, str], P]]:
        """The `((method, route key), policy)` pairs, as given."""
        return iter(self._policies.items())

    def bind(self, app: ASGIApp) -> None:
        """Check every route key against the app's routes, if the chain reaches a router.

        Raises:
            ConfigError: a key names a route or method the app does not have.
        """
        router = find_router(app)
        if router is None or not self._policies:
            return
        # A layer that wraps the app directly (not inside it) sees no
        # scope["app"]: it resolves with the router it wraps, never with the
        # templates as written (a mount's "/admin/{path}" is one segment there).
        self._fallback = resolver_for(router)
        # One template often has several routes (FastAPI's @app.get and
        # @app.post on "/orders"): known() unites their methods.
        known = resolver_for(router).known()
        accepted = {key: match.methods for key, match in known.items()}
        for (method, key), raw_key in self._raw.items():
            if key not in accepted:
                hint = difflib.get_close_matches(key, list(accepted), n=1)
                suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
                msg = f"{self.option}: route {raw_key!r} is not a route of the app{suggestion}"
                raise ConfigError(msg)
            allowed = accepted[key]
            if method is not None and allowed is not None and method not in allowed:
                listed = ", ".join(sorted(allowed))
                msg = f"{self.option}: route {raw_key!r} does not accept {method} (only {listed})"
                raise ConfigError(msg)

    def match(self, scope: Scope) -> RouteMatch | None:
        """The route of the request, as the app's router (or the fallback) sees it."""
        return resolve(scope, self._fallback)

    def lookup(self, scope: Scope) -> P:
        """The policy for the request in `scope`."""
        # The hot path of every per-route layer: resolve() and policy_for()
        # inlined (two call frames are a fifth of its cost).
        by_key = self._by_key
        if not by_key:
            return self.default
        match = resolve(scope, self._fallback)
        if match is None:
            return self.default
        by_method = by_key.get(match.key)
        if by_method is None:
            return self.default
        # A WebSocket handshake is a GET: "GET /ws" keys apply to it.
        method = scope.get("method", "GET")
        policy = by_method.get(method)
        if policy is None:
            if method == "HEAD":
                policy = by_method.get("GET")
            if policy is None:
                policy = by_method.get(None)
                if policy is None:
                    return self.default
        return policy

    def policy_for(self, match: RouteMatch | None, method: str | None) -> P:
        """The policy for a resolved route and method."""
        if match is None:
            return self.default
        by_method = self._by_key.get(match.key)
        if by_method is None:
            return self.default
        policy = by_method.get(method)
        if policy is None and method == "HEAD":
            policy = by_method.get("GET")
        if policy is None:
            policy = by_method.get(None)
        return self.default if policy is None else policy


class _NoEndpoint:
    """An ASGI endpoint (so that Route keeps `methods=None`) that is never called."""

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:  # pragma: no cover
        raise RuntimeError("apiguard's fallback routes are never dispatched to")


_no_endpoint = _NoEndpoint()


def _fallback_resolver(option: str, keys: list[tuple[str | None, str]]) -> Resolver:
    """Routes built from the option's own templates (as written), for plain ASGI apps."""
    routes: list[BaseRoute] = []
    by_target: dict[str, set[str] | None] = {}
    for method, key in keys:
        if method is None:
            by_target[key] = None
        elif key not in by_target or by_target[key] is not None:
            by_target.setdefault(key, set()).add(method)  # type: ignore[union-attr]

    def leaves(path: str, methods: set[str] | None) -> list[BaseRoute]:
        found: list[BaseRoute] = [
            Route(path, _no_endpoint, methods=sorted(methods) if methods else None)
        ]
        if methods is None or "GET" in methods:  # a WebSocket handshake is a GET
            found.append(WebSocketRoute(path, _no_endpoint))
        return found

    for key, methods in by_target.items():
        try:
            if key.startswith("/"):
                routes += leaves(key, methods)
            else:
                host, _, path = key.partition("/")
                routes.append(Host(host, Router(leaves("/" + path, methods))))
        except (AssertionError, ValueError) as exc:
            msg = f"{option}: route {key!r} is not a valid Starlette path template ({exc})"
            raise ConfigError(msg) from exc
    return Resolver(Router(routes, redirect_slashes=False))
