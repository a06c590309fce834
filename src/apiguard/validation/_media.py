"""Media types: the allowed list of a route, and a request's `Content-Type`."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from apiguard.errors import ConfigError

__all__ = ["ALLOWED", "ALLOWED_JSON", "REFUSED", "ContentTypes", "is_json_type"]

# RFC 9110 §5.6.2: token = 1*tchar.
_TCHARS: Final = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE: Final = re.compile(rf"({_TCHARS})/({_TCHARS})")
_ENTRY: Final = re.compile(rf"(\*|{_TCHARS})/(\*|\*\+{_TCHARS}|{_TCHARS})")
_UTF8: Final = frozenset({"utf-8", "utf8"})

#: Verdicts on a request's content type.
REFUSED: Final = 0
ALLOWED: Final = 1
ALLOWED_JSON: Final = 2

#: A bound on the verdict memo: clients send few distinct values; junk past
#: the bound is parsed each time, never stored.
_MEMO_SIZE: Final = 64


def is_json_type(type_: str, subtype: str) -> bool:
    """`application/json` or a `+json` structured suffix (RFC 6839)."""
    return (type_ == "application" and subtype == "json") or subtype.endswith("+json")


class ContentTypes:
    """The media types a route accepts, compiled for matching.

    Entries are `type/subtype`, `type/*`, `type/*+suffix` (structured
    suffixes: `application/*+json` accepts `application/merge-patch+json`)
    or `*/*` (anything, a missing `Content-Type` included). Matching ignores
    case and parameters, except that a JSON type must be UTF-8: a `charset`
    other than `utf-8` is refused (RFC 8259 §8.1).

    Args:
        option: The option's name, for error messages.
        entries: The accepted media types.

    Raises:
        ConfigError: an entry is not a media type or range, or the list is empty.
    """

    __slots__ = ("_exact", "_memo", "_suffixes", "_types", "any", "entries", "json_only")

    def __init__(self, option: str, entries: Iterable[str]) -> None:
        given: object = entries
        if isinstance(given, str | bytes) or not isinstance(given, Iterable):
            msg = (
                f"{option}: expected a list of media types like ['application/json'], got {given!r}"
            )
            raise ConfigError(msg)
        normalized: list[str] = []
        for entry in given:
            if not isinstance(entry, str) or not _ENTRY.fullmatch(entry.strip()):
                msg = (
                    f"{option}: {entry!r} is not a media type like 'application/json' "
                    "or 'application/*+json'"
                )
                raise ConfigError(msg)
            text = entry.strip().lower()
            type_, _, subtype = text.partition("/")
            if type_ == "*" and subtype != "*":
                msg = f"{option}: {entry!r} is not a media range (only '*/*' starts with '*')"
                raise ConfigError(msg)
            normalized.append(text)
        if not normalized:
            msg = f"{option}: the list of media types is empty; list at least one, or '*/*'"
            raise ConfigError(msg)
        self.entries: tuple[str, ...] = tuple(dict.fromkeys(normalized))
        self.any = "*/*" in self.entries
        self._exact = frozenset(e for e in self.entries if "*" not in e)
        self._types = frozenset(e[:-2] for e in self.entries if e.endswith("/*") and e != "*/*")
        self._suffixes = frozenset(
            (e.partition("/")[0], e.partition("+")[2]) for e in self.entries if "/*+" in e
        )
        #: Whether every accepted type is JSON (required where a body model applies).
        self.json_only = all(_entry_is_json(e) for e in self.entries)
        self._memo: dict[bytes, int] = {}

    def verdict(self, raw: bytes | None) -> int:
        """`REFUSED`, `ALLOWED` or `ALLOWED_JSON` for a raw `Content-Type` value."""
        if raw is None:
            return ALLOWED if self.any else REFUSED
        verdict = self._memo.get(raw)
        if verdict is None:
            verdict = self._judge(raw)
            if len(self._memo) < _MEMO_SIZE:
                self._memo[raw] = verdict
        return verdict

    def _judge(self, raw: bytes) -> int:
        text = raw.decode("latin-1")
        media_type, _, parameters = text.partition(";")
        found = _MEDIA_TYPE.fullmatch(media_type.strip(" \t"))
        if found is None:
            return REFUSED
        type_, subtype = found[1].lower(), found[2].lower()
        json = is_json_type(type_, subtype)
        if json and _charset(parameters) not in _UTF8:
            return REFUSED
        allowed = (
            self.any
            or f"{type_}/{subtype}" in self._exact
            or type_ in self._types
            or ("+" in subtype and (type_, subtype.rpartition("+")[2]) in self._suffixes)
        )
        if not allowed:
            return REFUSED
        return ALLOWED_JSON if json else ALLOWED


def _entry_is_json(entry: str) -> bool:
    type_, _, subtype = entry.partition("/")
    return is_json_type(type_, subtype.replace("*", "x"))


def _charset(parameters: str) -> str:
    """The lowercased `charset` parameter, `"utf-8"` when there is none."""
    if not parameters:
        return "utf-8"
    charset = "utf-8"
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip(" \t").lower() == "charset":
            charset = value.strip(" \t").strip('"').lower()
    return charset
