"""Route keys: `"METHOD /template"`, `"/template"`, `"METHOD host/template"`."""

from __future__ import annotations

import re
from typing import Final

from apiguard._types import Scope
from apiguard.errors import ConfigError

__all__ = [
    "CANONICAL_METHODS",
    "WEBSOCKET",
    "fold_method",
    "normalize_key",
    "normalize_template",
    "parse_route_key",
    "request_method",
    "split_key",
]

#: The pseudo-method of WebSocket route keys (`"WEBSOCKET /live"`): apart from
#: any HTTP method, so that a page and a feed on one path are told apart. An
#: HTTP request sending `WEBSOCKET` as its method never gets these keys' policy.
WEBSOCKET: Final = "WEBSOCKET"

#: The methods of RFC 9110 §9 and RFC 5789, as clients almost always send them:
#: one set-membership test spares `upper()` on nearly every request.
CANONICAL_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)

_ASCII_UPPER: Final = {code: code - 32 for code in range(ord("a"), ord("z") + 1)}
_METHOD: Final = re.compile(r"^[A-Z][A-Z0-9_-]*$")
_PARAM_TYPE: Final = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_]*):[a-zA-Z_][a-zA-Z0-9_]*\}")


def request_method(scope: Scope) -> str:
    """The method apiguard decides on: the request's method, uppercased.

    RFC 9110 §9.1 makes methods case-sensitive, and h11 passes `post`
    through as sent; but an app that accepts any method (a mount of a
    Django or WSGI app, an ASGI endpoint) may uppercase it and run it as
    POST. Deciding on the uppercased method is never looser than the app:
    an app that uppercases gets POST's policy for `post`, and a
    case-sensitive app (Starlette's routes) answers 405 to it anyway.
    Refusing such requests instead would break clients the app accepts.
    The scope is never rewritten: the app sees what the client sent.
    A WebSocket handshake is a GET (RFC 6455 §4.1); its policy is looked
    up under [`WEBSOCKET`][apiguard.routing.WEBSOCKET] instead.

    Examples:
        >>> request_method({"type": "http", "method": "post"})
        'POST'
        >>> request_method({"type": "http", "method": "PROPFIND"})
        'PROPFIND'
    """
    method: str = scope.get("method", "GET")
    if method in CANONICAL_METHODS:
        return method
    return fold_method(method)


def fold_method(method: str) -> str:
    """`method` with its ASCII letters uppercased, and nothing else changed.

    Methods are tokens of ASCII characters (RFC 9110 §5.6.2): only `a`-`z`
    are folded, so that no other letter turns into an ASCII one (Python's
    `"ß".upper()` is `"SS"`).
    """
    return method.upper() if method.isascii() else method.translate(_ASCII_UPPER)


def normalize_template(template: str) -> str:
    """Strip convertor types: `/items/{item_id:int}` -> `/items/{item_id}`."""
    return _PARAM_TYPE.sub(r"{\1}", template)


def normalize_key(target: str) -> str:
    """A route key as written (`/path` or `host/path`) in its canonical form.

    Convertor types are stripped and the host lowercased, as
    [`RouteMatch.key`][apiguard.routing.RouteMatch] has them.
    """
    if target.startswith("/"):
        return normalize_template(target)
    host, _, path = target.partition("/")
    return normalize_template(host.lower()) + "/" + normalize_template(path)


def parse_route_key(option: str, key: str) -> tuple[str | None, str]:
    """Split a per-route option key into `(method or None, route key)`.

    Accepted forms: `"/items/{id}"`, `"GET /items/{id}"`,
    `"GET api.example.com/items"` and `"api.example.com/items"` for routes
    under a `Host`. The route key has convertor types stripped and the host
    lowercased, as [`RouteMatch.key`][apiguard.routing.RouteMatch] has.

    Raises:
        ConfigError: the key is not of one of those forms.
    """
    method, target = split_key(option, key)
    return method, normalize_key(target)


def split_key(option: str, key: str) -> tuple[str | None, str]:
    """`(method or None, target as written)`, the target being `/path` or `host/path`.

    Raises:
        ConfigError: the key is not like `"GET /items/{item_id}"` or `"/items"`.
    """
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
