"""Route keys: `"METHOD /template"`, `"/template"`, `"METHOD host/template"`."""

from __future__ import annotations

import re
from typing import Final

from apiguard.errors import ConfigError

__all__ = ["normalize_key", "normalize_template", "parse_route_key", "split_key"]

_METHOD: Final = re.compile(r"^[A-Z][A-Z0-9_-]*$")
_PARAM_TYPE: Final = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_]*):[a-zA-Z_][a-zA-Z0-9_]*\}")


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
