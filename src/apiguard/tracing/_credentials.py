"""Where the authenticators of an app read credentials from the query: names to redact.

`url.query` must never carry a credential. The default list holds the usual
names (`access_token`, `api_key`, ...); an authenticator may read another
(`JWTAuth(token_locations=["query:tok"])`), and its value must be redacted
too, wherever the authentication layer sits relative to tracing: directly
below it, registered in an app the tracing layer wraps (its middleware stack
not built yet), or in a sub-app mounted under the traced one (its stack is
built on its first request, long after the tracing layer started). So the
app is walked once, at start-up: `.app` links, Starlette apps' registered
middleware (the options given, which hold the authenticators) and built
stacks, and every route's app (mounts, `Host` routes, included routers).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from apiguard.layer import Describes, SecurityScheme

__all__ = ["query_credentials"]

#: Objects looked at before the walk stops (a loop, or an app beyond reason).
_MAX_NODES: Final = 100_000


def _query_names(schemes: Iterable[SecurityScheme], into: set[str]) -> None:
    for scheme in schemes:
        if scheme.location == "query" and scheme.parameter:
            into.add(scheme.parameter.lower())


def _from_option(value: object, into: set[str]) -> None:
    """The query names of an authenticator given as an option (or a list of them)."""
    items = value if isinstance(value, list | tuple) else (value,)
    for item in items:
        schemes = _attribute(item, "security_schemes")
        if callable(schemes):
            try:
                _query_names(schemes(), into)
            except Exception:  # noqa: S112 - another object's method must not stop start-up
                continue


def _attribute(node: object, name: str) -> object:
    """`node.name`, or `None`: a property of someone else's object must not stop start-up."""
    try:
        return getattr(node, name, None)
    except Exception:
        return None


def query_credentials(app: object, *, skip: type | None = None) -> set[str]:
    """The lowercase names of the query parameters authenticators in `app` read credentials from.

    Args:
        app: What a tracing layer wraps.
        skip: A layer class not to ask (the tracing layer itself).
    """
    found: set[str] = set()
    seen: set[int] = set()
    pending: list[object] = [app]
    while pending and len(seen) < _MAX_NODES:
        node = pending.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, Describes) and (skip is None or not isinstance(node, skip)):
            try:
                security = node.describe("GET", "/").security
            except Exception:  # another layer's report must not stop start-up
                security = None
            if security is not None:
                _query_names(security.schemes, found)
        # A Starlette app: the middleware registered (built or not) and its routes.
        specs = _attribute(node, "user_middleware")
        for spec in specs if isinstance(specs, list) else ():
            args = _attribute(spec, "args")
            kwargs = _attribute(spec, "kwargs")
            for value in (
                *(args if isinstance(args, tuple | list) else ()),
                *(kwargs.values() if isinstance(kwargs, dict) else ()),
            ):
                _from_option(value, found)
        pending.append(_attribute(node, "middleware_stack"))
        pending.append(_attribute(node, "app"))
        routes = _attribute(node, "routes")
        if isinstance(routes, list):
            pending.extend(routes)
        router = _attribute(node, "router")
        if router is not node:
            pending.append(router)
    return found
