"""An app's middleware, found as a request meets it: the layers that describe themselves.

Starlette builds its middleware stack lazily (at lifespan start-up under a
server, at the first request under a test client). Building it is what runs
the layers' start-up checks (route keys against the app's routes), and it
connects to nothing: stores connect at lifespan start-up. So a stack built
here tells what the app would run, and whether it would start, without
serving it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from starlette.applications import Starlette
from starlette.routing import Host, Mount

from apiguard.compose import startup_error
from apiguard.errors import ConfigError
from apiguard.layer import Describes
from apiguard.routing import WEBSOCKET, RouteInfo, find_router, normalize_template, routes_of

__all__ = ["Layered", "chain", "layers_of", "mounted_layers"]

#: How many objects a chain may hold before it is taken to loop.
_MAX_CHAIN = 128


def chain(app: object) -> Iterator[object]:
    """Every object a request passes through before the router, outermost first.

    `.app` links are followed; a Starlette app is entered through its
    middleware stack, the one it runs if it has been built, else one built
    for the occasion (the app itself is left as it was, so that middleware
    can still be added to it).

    Raises:
        ConfigError: building the stack failed (a layer added without
            `guard()` refused its options).
    """
    node: object = app
    seen: set[int] = set()
    for _ in range(_MAX_CHAIN):
        if node is None or id(node) in seen:
            return
        seen.add(id(node))
        yield node
        if isinstance(node, Starlette):
            stack = node.middleware_stack
            node = stack if stack is not None else node.build_middleware_stack()
        else:
            node = getattr(node, "app", None)


def layers_of(app: object) -> list[Describes]:
    """The layers in front of `app`'s router that describe themselves, outermost first.

    Raises:
        ConfigError: a layer's start-up check failed (a route key the app
            does not have), or building the stack failed.
    """
    nodes = list(chain(app))
    for node in nodes:
        error = startup_error(node, max_depth=1)
        if error is not None:
            raise error
    return [node for node in nodes if isinstance(node, Describes)]


@dataclass(frozen=True, slots=True)
class Layered:
    """A layer of a mounted app, and the key it names one of the outer app's routes by."""

    layer: Describes
    key: str


@dataclass(slots=True)
class _Mounted:
    """One mounted app with layers of its own: the outer routes it holds, and its layers there."""

    routes: list[RouteInfo]
    layers: dict[str, list[Layered]]


def _covers(info: RouteInfo, method: str, key: str) -> bool:
    """Whether route `info` takes requests of `method` (`"*"`: any) to route key `key`."""
    if info.key != key:
        return False
    if info.methods is None:
        return info.kind == "http" and method != WEBSOCKET
    return method in info.methods or (method == "*" and info.kind == "http")


def mounted_layers(app: object) -> dict[tuple[str, str], list[Layered]]:
    """The layers of mounted apps, by the outer app's method and route key they apply to.

    A mounted Starlette app (or a layer wrapped around an app, then mounted)
    runs its own layers for the routes under its mount; they know those
    routes by their keys inside the mounted app (`/items`, not `/api/items`).

    A mount's layers are credited to a method and key only when every route
    of the app taking them is the mount's: an outer route of the same
    template (before the mount, it answers; after it, it is shadowed) or a
    second mount with the same paths makes it unknowable here which one a
    request reaches, and crediting the mount's authentication to a route it
    never guards would let `--check` pass an unguarded route. Uncredited,
    the route shows the outer app's layers only.

    Raises:
        ConfigError: a mounted app's layer failed its start-up check.
    """
    mounts: list[_Mounted] = []
    router = find_router(app)
    if router is None:
        return {}
    _walk(router.routes, "", None, mounts, 0)
    if not mounts:
        return {}
    by_key: dict[str, list[RouteInfo]] = {}
    for info in routes_of(app):
        by_key.setdefault(info.key, []).append(info)
    found: dict[tuple[str, str], list[Layered]] = {}
    for mount in mounts:
        for key, layered in mount.layers.items():
            everywhere = by_key.get(key, [])
            for method in _mount_methods(mount.routes, key):
                count = sum(_covers(info, method, key) for info in everywhere)
                if count == sum(_covers(info, method, key) for info in mount.routes):
                    found.setdefault((method, key), []).extend(layered)
    return found


def _mount_methods(routes: Sequence[RouteInfo], key: str) -> set[str]:
    """The methods the mount's routes of `key` are reported under (`"*"` for any)."""
    methods: set[str] = set()
    for info in routes:
        if info.key == key:
            if info.kind == "websocket":
                methods.add(WEBSOCKET)
            elif info.methods is None:
                methods.add("*")
            else:
                methods |= info.methods
    return methods


def _walk(
    routes: Sequence[object],
    prefix: str,
    host: str | None,
    found: list[_Mounted],
    depth: int,
) -> None:
    if depth > 32:  # a router mounted in itself
        return
    for route in routes:
        if isinstance(route, Mount):
            inner_prefix = prefix + normalize_template(route.path)
            inner_host = host
        elif isinstance(route, Host):
            inner_prefix, inner_host = "", normalize_template(route.host.lower())
        else:
            continue
        try:
            layers = layers_of(route.app)
        except ConfigError as exc:
            raise ConfigError(f"mounted at {inner_host or ''}{inner_prefix}: {exc}") from None
        if layers:
            mounted = _Mounted([], {})
            for info in routes_of(route.app):
                if info.host is not None:
                    continue  # a Host inside a mount: keyed by that host, not this prefix
                outer = f"{inner_host or ''}{inner_prefix}{info.template}"
                mounted.routes.append(replace(info, key=outer))
                mounted.layers.setdefault(outer, []).extend(
                    Layered(layer, info.key) for layer in layers
                )
            found.append(mounted)
        sub_router = find_router(route.app)
        if sub_router is not None:
            _walk(sub_router.routes, inner_prefix, inner_host, found, depth + 1)
