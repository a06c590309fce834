"""Option checks shared by the authenticators: numbers, names, locations."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import parse_qsl

from apiguard._types import Scope
from apiguard.auth._base import MALFORMED, Malformed
from apiguard.errors import ConfigError
from apiguard.layer import Options

__all__ = ["Location", "check_int", "check_seconds", "check_strings", "parse_location"]

_HEADER_NAME: Final = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token
_PARAM_NAME: Final = re.compile(r"^[A-Za-z0-9._~-]+$")


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
