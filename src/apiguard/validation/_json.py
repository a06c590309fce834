"""Strict JSON parsing with a nesting bound that costs no more than the parse.

The body is parsed once, by pydantic-core's Rust parser (jiter), which refuses
`NaN`/`Infinity`, invalid UTF-8, lone surrogate escapes, a byte order mark and
trailing data, and stops by itself past ~200 levels of nesting (so a million
`[` fails fast, never with a `RecursionError`). The exact depth bound is then
checked on the parsed value, level by level, with C-level iteration: its cost
grows with the number of values, as the parse's does, and is below the parse's
(measured in `benchmarks/validation.py`). Bodies with no more opening brackets
than the bound cannot nest deeper than it, so most bodies skip the walk.
"""

from __future__ import annotations

from itertools import chain
from typing import Any, Final

from pydantic_core import from_json

__all__ = ["MAX_SUPPORTED_DEPTH", "JSONRejected", "json_depth_exceeds", "parse_json"]

#: The parser refuses by itself past ~200 levels; a configured bound must stay
#: well below, so that every body within the bound parses.
MAX_SUPPORTED_DEPTH: Final = 128

_BOM: Final = b"\xef\xbb\xbf"
_values = dict.values


class JSONRejected(Exception):
    """The body is not acceptable JSON; `reason` is a decision code."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether `value` nests arrays and objects more than `limit` levels deep.

    A scalar is depth 0, `[]` and `{}` depth 1, `[[1]]` depth 2. Iterative,
    level by level: a level's children are gathered by C-level iteration
    (`chain.from_iterable`), and only containers go on to the next level.
    """
    level = [value] if type(value) is list or type(value) is dict else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        children = chain.from_iterable([_values(c) if type(c) is dict else c for c in level])
        level = [v for v in children if type(v) is list or type(v) is dict]
    return False


def parse_json(body: bytes, max_depth: int) -> Any:
    """Parse `body` as strict JSON (RFC 8259) nested at most `max_depth` levels.

    Duplicate object keys: the last one wins, as in `json.loads` (Starlette's
    `request.json()`) and pydantic, so the layer and the app read one value.

    Raises:
        JSONRejected: `reason` is `"json-too-deep"`, `"invalid-utf-8"`,
            `"json-bom"` or `"invalid-json"`.
    """
    try:
        value = from_json(body, allow_inf_nan=False)
    except ValueError as exc:
        raise JSONRejected(_reason(body, str(exc))) from exc
    # Only a body with more opening brackets than the bound can be too deep.
    if body.count(b"[") + body.count(b"{") > max_depth and json_depth_exceeds(value, max_depth):
        raise JSONRejected("json-too-deep")
    return value


def _reason(body: bytes, message: str) -> str:
    # Only on the refusal path: name the cause where it is cheap to be sure.
    # The parser's messages are not an API; an unrecognised one is
    # "invalid-json", the right answer (400) anyway, only less specific.
    if body.startswith(_BOM):
        return "json-bom"
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid-utf-8"
    if message.startswith("recursion limit exceeded"):
        return "json-too-deep"
    return "invalid-json"
