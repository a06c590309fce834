"""The compiled routing tree: one level per router, a segment trie over its routes."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from starlette.convertors import (
    FloatConvertor,
    IntegerConvertor,
    PathConvertor,
    StringConvertor,
    UUIDConvertor,
)
from starlette.routing import BaseRoute

__all__ = ["HOST", "LEAF", "MOUNT", "OPAQUE", "Entry", "Level", "RouteInfo", "RouteMatch"]


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


@dataclass(frozen=True, slots=True)
class RouteInfo:
    """One route of an app, as [`routes_of`][apiguard.routing.routes_of] lists it.

    Attributes:
        methods: The methods the route accepts (`None`: any); a WebSocket
            route's are `{"WEBSOCKET"}`, the pseudo-method its keys use.
        key: What a per-route option names: `host + template` under a
            `Host`, else `template` (convertor types stripped, mount
            prefixes included).
        kind: `"http"` or `"websocket"`. A mount of an app without routes
            takes both, and is listed once for each.
        template: The full path template.
        host: The `Host` pattern the route sits under, if any.
    """

    methods: frozenset[str] | None
    key: str
    kind: Literal["http", "websocket"]
    template: str
    host: str | None = None


#: What an entry of a level is: a route, a mount, a `Host`, or a route type
#: apiguard does not know (asked through its own `matches()`).
LEAF, MOUNT, HOST, OPAQUE = range(4)
HTTP_ONLY: Final = ("http",)
WEBSOCKET_ONLY: Final = ("websocket",)
BOTH: Final = ("http", "websocket")

#: Convertors whose regex matches one non-empty path segment and nothing else.
_SEGMENT_CONVERTORS: Final = (StringConvertor, IntegerConvertor, FloatConvertor, UUIDConvertor)
_PLACEHOLDER: Final = re.compile(r"^\{([a-zA-Z_][a-zA-Z0-9_]*)\}$")
_PARAM: Final = object()
_TAIL: Final = object()


@dataclass(slots=True)
class Entry:
    """One route of a level, compiled."""

    kind: int
    types: tuple[str, ...]
    regex: re.Pattern[str] | None = None
    methods: frozenset[str] | None = None
    match: RouteMatch | None = None
    child: Level | None = None
    route: BaseRoute | None = None


class _Node:
    __slots__ = ("ends", "literal", "param", "tails")

    def __init__(self) -> None:
        self.literal: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.ends: list[int] = []
        self.tails: list[int] = []


class Level:
    """One router's routes, in dispatch order, with a segment trie over them."""

    __slots__ = ("always", "entries", "host", "low_priority", "prefix", "redirect_slashes", "root")

    def __init__(
        self, redirect_slashes: bool, low_priority: Any, prefix: str = "", host: str | None = None
    ) -> None:
        self.entries: list[Entry] = []
        self.redirect_slashes = redirect_slashes
        #: The router whose low-priority routes (FastAPI's frontends) come last.
        self.low_priority = low_priority
        #: The mount prefix and `Host` of the router: what its routes' keys start with.
        self.prefix = prefix
        self.host = host
        self.root = _Node()
        self.always: list[int] = []

    def add(self, entry: Entry, path_format: str | None, convertors: Mapping[str, Any]) -> None:
        """Append a route; `path_format` places it in the trie (`None`: tried always)."""
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
