"""Option checks of the authenticators and of `AuthMiddleware`: numbers, names, routes."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Final
from urllib.parse import parse_qsl

from apiguard._types import Scope
from apiguard.auth._base import MALFORMED, Authenticator, Malformed
from apiguard.errors import ConfigError
from apiguard.layer import Options
from apiguard.routing import parse_route_key

__all__ = [
    "Location",
    "check_authenticators",
    "check_int",
    "check_seconds",
    "check_strings",
    "parse_location",
    "route_list",
    "scope_map",
]

_HEADER_NAME: Final = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token
_PARAM_NAME: Final = re.compile(r"^[A-Za-z0-9._~-]+$")
_SCOPE_TOKEN: Final = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")  # RFC 6749 §3.3


def check_seconds(option: str, value: object, *, low: float = 0.0, high: float = math.inf) -> float:
    """A finite number of seconds within `[low, high]`.

    Raises:
        ConfigError: not a number, not finite, or out of range.
    """
    return Options().seconds(option, value, low=low, high=high, zero=True)


def check_int(option: str, value: object, *, low: int, high: int) -> int:
    """An int within `[low, high]`.

    Raises:
        ConfigError: not an int, or out of range.
    """
    return Options().integer(option, value, low=low, high=high)


def check_strings(option: str, value: object, *, allow_empty: bool = True) -> tuple[str, ...]:
    """A list of non-empty strings (a lone string is refused: a classic slip).

    Raises:
        ConfigError: not a list of non-empty strings.
    """
    return Options().strings(option, value, allow_empty=allow_empty)


class Location:
    """A place a credential is read from, other than the `Authorization` header.

    `header:<Name>`: the whole field value; `query:<name>`: a query
    parameter; `cookie:<name>`: a cookie. Sent twice is malformed.
    """

    __slots__ = ("header", "key", "kind", "name", "spec")

    def __init__(self, spec: str, kind: str, name: str) -> None:
        self.spec = spec
        self.kind = kind
        self.name = name
        self.header = {"header": name.lower(), "cookie": "cookie", "query": ""}[kind].encode()
        self.key = name.encode("latin-1")

    def find(self, headers: Mapping[bytes, list[bytes]], scope: Scope) -> bytes | Malformed | None:
        """The credential at this location, `MALFORMED` if sent twice, else `None`."""
        if self.kind == "header":
            values = headers.get(self.header)
            if not values:
                return None
            return values[0] if len(values) == 1 else MALFORMED
        if self.kind == "cookie":
            found = [
                value.strip()
                for field in headers.get(b"cookie", ())
                for name, _, value in (part.partition(b"=") for part in field.split(b";"))
                if name.strip() == self.key
            ]
        else:
            query = scope.get("query_string") or b""
            if self.key not in query:
                return None
            found = [
                value.encode("latin-1", "replace")
                for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True)
                if name == self.name
            ]
        if not found:
            return None
        return found[0] if len(found) == 1 else MALFORMED


def parse_location(option: str, spec: object) -> Location | None:
    """A token location: `None` for `"authorization"`, else a [`Location`][].

    Raises:
        ConfigError: an unknown form or a bad name.
    """
    if spec == "authorization":
        return None
    if isinstance(spec, str):
        kind, colon, name = spec.partition(":")
        if spec == "query":
            kind, colon, name = "query", ":", "access_token"  # RFC 6750 §2.3
        valid = {"header": _HEADER_NAME, "cookie": _HEADER_NAME, "query": _PARAM_NAME}.get(kind)
        if colon and valid is not None and valid.match(name):
            if kind == "header" and name.lower() in ("authorization", "cookie"):
                msg = f"{option}: {spec!r}: use 'authorization' or 'cookie:<name>' instead"
                raise ConfigError(msg)
            return Location(f"{kind}:{name.lower() if kind == 'header' else name}", kind, name)
    msg = (
        f"{option}: {spec!r} is not a token location: 'authorization', 'query', "
        "'query:<name>', 'cookie:<name>' or 'header:<Name>'"
    )
    raise ConfigError(msg)


def check_authenticators(authenticators: object) -> list[Authenticator]:
    """`AuthMiddleware`'s `authenticators`: a non-empty list, no location read twice."""
    if isinstance(authenticators, Authenticator):
        authenticators = [authenticators]
    if not isinstance(authenticators, Sequence) or not authenticators:
        Options().fail("authenticators", authenticators, "is not a list like [JWTAuth(...)]")
    owners: dict[str, int] = {}
    for position, auth in enumerate(authenticators):
        if not isinstance(auth, Authenticator):
            Options().fail(f"authenticators[{position}]", auth, "is not JWTAuth or APIKeyAuth")
        for location in auth.locations:
            if location in owners:
                raise Options().invalid(
                    "authenticators",
                    f"items {owners[location]} and {position} both read {location!r}; "
                    "the second would never be consulted",
                )
            owners[location] = position
    return list(authenticators)


def route_list(option: str, routes: object) -> list[str]:
    """`public=` or `optional=`: a list of route keys, each parsed."""
    if isinstance(routes, str) or not isinstance(routes, Iterable):
        Options().fail(option, routes, "is not a list of route keys like ['GET /health']")
    keys = list(routes)
    for key in keys:
        parse_route_key(option, key)
    return keys


def scope_map(scopes: object) -> dict[str, list[str]]:
    """`scopes=`: route keys to lists of RFC 6749 scope tokens."""
    if scopes is None:
        return {}
    if not isinstance(scopes, Mapping):
        Options().fail("scopes", scopes, "is not a mapping of route keys to scope lists")
    checked: dict[str, list[str]] = {}
    for key, names in scopes.items():
        if isinstance(names, str) or not isinstance(names, Iterable):
            Options().fail(f"scopes[{key!r}]", names, "is not a list of scopes")
        names = list(names)
        for name in names:
            if not isinstance(name, str) or not _SCOPE_TOKEN.match(name):
                Options().fail(f"scopes[{key!r}]", name, "is not a scope token (RFC 6749 §3.3)")
        checked[key] = names
    return checked
