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
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.routing import Host, Mount

from apiguard.compose import startup_error
from apiguard.errors import ConfigError
from apiguard.layer import Describes
from apiguard.routing import find_router, normalize_template, routes_of

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


def mounted_layers(app: object) -> dict[str, list[Layered]]:
    """The layers of mounted apps, by the outer app's route key they apply to.

    A mounted Starlette app (or a layer wrapped around an app, then mounted)
    runs its own layers for the routes under its mount; they know those
    routes by their keys inside the mounted app (`/items`, not `/api/items`).

    Raises:
        ConfigError: a mounted app's layer failed its start-up check.
    """
    found: dict[str, list[Layered]] = {}
    router = find_router(app)
    if router is not None:
        _walk(router.routes, "", None, found, 0)
    return found


def _walk(
    routes: Sequence[object],
    prefix: str,
    host: str | None,
    found: dict[str, list[Layered]],
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
            for info in routes_of(route.app):
                if info.host is not None:
                    continue  # a Host inside a mount: keyed by that host, not this prefix
                outer = f"{inner_host or ''}{inner_prefix}{info.template}"
                found.setdefault(outer, []).extend(Layered(layer, info.key) for layer in layers)
        sub_router = find_router(route.app)
        if sub_router is not None:
            _walk(sub_router.routes, inner_prefix, inner_host, found, depth + 1)
