"""Per-route policies: route keys to policies, looked up per request."""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from typing import Any, Final, Generic, TypeVar

from starlette.routing import BaseRoute, Host, Route, Router, WebSocketRoute

from apiguard._types import ASGIApp, Scope
from apiguard.context import CONTEXT_KEY, RequestContext, get_context
from apiguard.errors import ConfigError
from apiguard.routing._framework import find_router, runs_inside
from apiguard.routing._keys import (
    CANONICAL_METHODS,
    WEBSOCKET,
    fold_method,
    normalize_key,
    parse_route_key,
    request_method,
    split_key,
)
from apiguard.routing._resolver import Resolver, app_resolver, resolve_with, resolver_for
from apiguard.routing._tree import RouteInfo, RouteMatch

__all__ = ["RoutePolicies"]

P = TypeVar("P")


class RoutePolicies(Generic[P]):
    """A per-route option: route keys to policies, with a default.

    Args:
        option: The option's name, for error messages (`"routes"`, `"scopes"`).
        routes: `"METHOD /template"`, `"WEBSOCKET /template"` or `"/template"`
            keys to policies.
        default: The policy of requests that reach no listed route.

    A request's policy is looked up by its method (uppercased) and route
    key, then (for HEAD) as GET, then by route key alone; a WebSocket
    connection's by `WEBSOCKET` and route key, then by route key alone.
    Routes not listed get `default`. Once
    [bound][apiguard.routing.RoutePolicies.bind] to an app with a Starlette
    router, the request is resolved as that router dispatches it, wherever
    the app is mounted; on a plain ASGI app, the listed templates themselves
    are matched against the path, first listed first.
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
            self._targets.append(split_key(option, raw_key))
            self._policies[parsed] = policy
        # HTTP: route key -> {method or None: policy}, two dict gets per
        # lookup. WebSocket: route key -> policy, its WEBSOCKET key's else
        # its method-less one. Apart, so that no HTTP method reaches the other.
        self._by_key: dict[str, dict[str | None, P]] = {}
        self._websocket: dict[str, P] = {}
        for (method, key), policy in self._policies.items():
            if method == WEBSOCKET:
                self._websocket[key] = policy
            else:
                self._by_key.setdefault(key, {})[method] = policy
        for key, by_method in self._by_key.items():
            if None in by_method:
                self._websocket.setdefault(key, by_method[None])
        #: No route has a policy of its own: every request gets `default`
        #: (a layer's hot path reads this rather than calling `lookup`).
        self.empty = not self._policies
        # The option's own templates, for an app without a router.
        self._templates: Resolver | None = None
        if self._policies:
            self._templates = _fallback_resolver(option, self._targets)
        # Set by bind(): the router of the app the layer wraps, else the app
        # itself (a plain ASGI app, or a chain apiguard cannot follow).
        self._router: Resolver | None = None
        self._bound: object = _UNBOUND
        # scope["app"] seen last, and its router's resolver if the layer runs
        # inside that app (else None): a process usually serves one app.
        self._inside: tuple[object, Resolver | None] = (_UNBOUND, None)

    def __bool__(self) -> bool:
        return bool(self._policies)

    def items(self) -> Iterator[tuple[tuple[str | None, str], P]]:
        """The `((method, route key), policy)` pairs, as given."""
        return iter(self._policies.items())

    def bind(self, app: ASGIApp) -> None:
        """Bind to the router of `app` (the app the layer wraps), and check every key there.

        The router is found by following `.app` links from `app`: a layer
        inside a Starlette app (`add_middleware`, `guard()`) reaches it
        through the middleware Starlette built, a layer wrapped around an app
        through the app. Requests are then resolved against that router
        wherever the app is later mounted: an outer app's router knows a
        mounted app only as one mount. Without a router (a plain ASGI app),
        the option's own templates are matched.

        Raises:
            ConfigError: a key names a route or method the app does not have.
        """
        router = find_router(app)
        self._bound = app
        self._inside = (_UNBOUND, None)
        if router is None:
            self._router = None
            return
        resolver = self._router = resolver_for(router)
        if self._policies:
            self._check(resolver.routes())

    def _check(self, routes: list[RouteInfo]) -> None:
        # One key often has several routes (FastAPI's @app.get and @app.post
        # on "/orders", a page and a WebSocket on one path): unite them.
        # Per key: the HTTP methods (None: any) and whether a WebSocket route is there.
        accepted: dict[str, tuple[frozenset[str] | None, bool]] = {}
        for info in routes:
            http, websocket = accepted.get(info.key, (frozenset(), False))
            if info.kind == "websocket":
                websocket = True
            elif http is not None:
                http = None if info.methods is None else http | info.methods
            accepted[info.key] = (http, websocket)
        for (method, key), raw_key in self._raw.items():
            if key not in accepted:
                hint = difflib.get_close_matches(key, list(accepted), n=1)
                suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
                msg = f"{self.option}: route {raw_key!r} is not a route of the app{suggestion}"
                raise ConfigError(msg)
            http, websocket = accepted[key]
            listed = ", ".join(sorted(http or ()) + ([WEBSOCKET] if websocket else []))
            if method is None:
                continue
            if method == WEBSOCKET:
                if websocket:
                    continue
                msg = f"{self.option}: route {raw_key!r} is not a WebSocket route (only {listed})"
            elif http is None or method in http:
                continue
            elif not http and websocket:
                # The old spelling: a WebSocket handshake is a GET (RFC 6455 §4.1).
                target = split_key(self.option, raw_key)[1]
                msg = (
                    f"{self.option}: route {raw_key!r} is a WebSocket route: "
                    f"use {f'{WEBSOCKET} {target}'!r}"
                )
            else:
                msg = f"{self.option}: route {raw_key!r} does not accept {method} (only {listed})"
            raise ConfigError(msg)

    def router_resolver(self, scope: Scope) -> Resolver | None:
        """The resolver of the router this request is resolved against, if there is one.

        The router bound to; else, when the layer runs inside `scope["app"]`
        (or was never bound), that app's router; else `None`: a plain ASGI
        app, where only the option's own templates can answer.
        """
        resolver = self._router
        if resolver is not None:
            return resolver
        app = scope.get("app")
        if app is None:
            return None
        bound = self._bound
        if bound is _UNBOUND:
            return app_resolver(app)
        seen, resolver = self._inside
        if seen is not app:
            # Bound, but no router was found below the layer: scope["app"]
            # is the app the layer runs in only if its middleware stack
            # holds the layer's app; otherwise the layer's app (a plain ASGI
            # app) is mounted in it, and its router knows one mount there.
            resolver = app_resolver(app) if runs_inside(app, bound) else None
            self._inside = (app, resolver)
        return resolver

    def match(self, scope: Scope) -> RouteMatch | None:
        """The route of the request, as the router (or the option's templates) sees it."""
        resolver = self._router or self.router_resolver(scope)
        if resolver is not None:
            return resolve_with(scope, resolver)
        templates = self._templates
        return templates.resolve(scope) if templates is not None else None

    def lookup(self, scope: Scope) -> P:
        """The policy for the request in `scope`."""
        # The hot path of every per-route layer: resolve_with() inlined (a
        # call frame is a fifth of its cost), the method folded only when
        # the method as sent finds no policy.
        if not self._policies:
            return self.default
        resolver = self._router
        if resolver is None:
            resolver = self.router_resolver(scope)
        if resolver is not None:
            context: RequestContext | None = scope.get(CONTEXT_KEY)
            if context is not None and context.route_resolver is resolver:
                match = context.route
            else:
                if context is None:
                    context = get_context(scope)
                match = resolver.resolve(scope)
                context.route_resolver = resolver
                context.route = match
        else:
            templates = self._templates
            match = templates.resolve(scope) if templates is not None else None
        if match is None:
            return self.default
        method = scope.get("method")
        if method is None:  # a WebSocket connection: its own keys
            policy = self._websocket.get(match.key)
            return self.default if policy is None else policy
        by_method = self._by_key.get(match.key)
        if by_method is None:
            return self.default
        policy = by_method.get(method)
        if policy is None:
            if method not in CANONICAL_METHODS:
                method = request_method(scope)  # `post` gets POST's policy
                policy = by_method.get(method)
            if policy is None:
                if method == "HEAD":
                    policy = by_method.get("GET")
                if policy is None:
                    policy = by_method.get(None)
                    if policy is None:
                        return self.default
        return policy

    def get(self, method: str | None, key: str) -> P:
        """The policy a request with `method` on the route keyed `key` gets, without a request.

        The same precedence as a request's lookup: the method's policy, HEAD's
        as GET, the route's method-less policy, the default. For reports and
        API descriptions, over [`routes_of`][apiguard.routing.routes_of].

        Args:
            method: An HTTP method (any case), `"WEBSOCKET"` for a WebSocket
                route, or `None` for the route's method-less policy.
            key: A route key as [`RouteInfo.key`][apiguard.routing.RouteInfo]
                gives it (convertor types may be written).

        Examples:
            >>> policies = RoutePolicies("scopes", {"POST /orders": "write", "/orders": "any"}, "-")
            >>> policies.get("POST", "/orders"), policies.get("GET", "/orders")
            ('write', 'any')
            >>> policies.get("WEBSOCKET", "/orders"), policies.get("GET", "/items")
            ('any', '-')
        """
        key = normalize_key(key)
        if method is not None:
            method = fold_method(method)
            if method == WEBSOCKET:
                policy = self._websocket.get(key)
                return self.default if policy is None else policy
        by_method = self._by_key.get(key)
        if by_method is None:
            return self.default
        policy = by_method.get(method)
        if policy is None and method == "HEAD":
            policy = by_method.get("GET")
        if policy is None:
            policy = by_method.get(None)
        return self.default if policy is None else policy


_UNBOUND: Final = object()


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
        found: list[BaseRoute] = []
        http = None if methods is None else sorted(methods - {WEBSOCKET})
        if http is None or http:
            found.append(Route(path, _no_endpoint, methods=http))
        if methods is None or WEBSOCKET in methods:
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
    return _TemplateResolver(Router(routes, redirect_slashes=False))


class _TemplateResolver(Resolver):
    """Resolves with the option's own templates, deciding on the uppercased method.

    The app behind them cannot be asked how it dispatches: it is resolved as
    if it uppercased methods, which is never looser than what it does.
    """

    def resolve(self, scope: Scope) -> RouteMatch | None:
        method = scope.get("method")
        if method is not None and method not in CANONICAL_METHODS:
            scope = {**scope, "method": fold_method(method)}  # a copy: the app sees its own
        return super().resolve(scope)

    def resolve_uncached(self, scope: Scope) -> RouteMatch | None:
        method = scope.get("method")
        if method is not None and method not in CANONICAL_METHODS:
            scope = {**scope, "method": fold_method(method)}
        return super().resolve_uncached(scope)
