"""Strict JSON parsing with an exact nesting bound that costs nothing beyond the parse.

The body is parsed once, by pydantic-core's Rust parser (jiter), which refuses
`NaN`/`Infinity`, invalid UTF-8, lone surrogate escapes, a byte order mark and
trailing data, and refuses by itself any value nested inside more than its
recursion limit (200) of arrays and objects, as soon as it meets one: so a
million `[` fails in microseconds, never with a `RecursionError`.

The layer's bound (`max_json_depth`, at most 128) is enforced by the same
parse: the body is wrapped in `200 - bound` one-element arrays, so that the
parser's own limit falls exactly at the bound, and the wrappers are checked
and stripped afterwards (a body that is not one JSON value cannot leave them
as nested one-element arrays). No second pass over the body or the value, no
per-character Python scan. That costs ~17 µs whatever the body, so bodies
with few brackets are checked otherwise: with no more opening brackets than
the bound, they cannot nest deeper and are parsed as they are; with up to
`WALK_BELOW`, the parsed value is walked level by level, at C speed.

Numbers too large for a float (`1e400`) parse to infinity, which the layer
refuses as it refuses a literal `Infinity`; the check costs two byte scans of
the body, and a walk of the parsed value only when those find a number
shaped like one (an exponent of three digits or more, or a very long
integer part).

The parser's limit is measured when this module is imported; should a future
pydantic-core count differently, the bound is instead checked on the parsed
value, level by level ([`json_depth_exceeds`][apiguard.validation._json.json_depth_exceeds]).
"""

from __future__ import annotations

import gc
from itertools import chain
from typing import Any, Final

from pydantic_core import from_json

__all__ = [
    "MAX_SUPPORTED_DEPTH",
    "PARSER_LIMIT",
    "WALK_BELOW",
    "JSONRejected",
    "holds_infinity",
    "json_depth_exceeds",
    "parse_json",
]

#: The largest `max_json_depth` accepted: well inside the parser's own limit.
MAX_SUPPORTED_DEPTH: Final = 128

_BOM: Final = b"\xef\xbb\xbf"
_values = dict.values
_CONTAINERS: Final = frozenset((list, dict))

#: Bodies with at most this many opening brackets have their depth checked by
#: walking the parsed value; more, by wrapping (the walk grows with the
#: containers, the wrapping costs ~17 µs whatever the body), and are parsed
#: with the cyclic garbage collector paused.
WALK_BELOW: Final = 96

#: How much of a large body is counted before choosing.
_PREFIX: Final = 16_384

# Digits to "0", "E" to "e", "+" deleted: a number that may overflow a float
# then shows as "0e000" (an exponent of three digits or more) or as a run of
# over 209 digits (an integer part that overflows with an exponent below 100).
_NUMBER_SHAPES: Final = bytes.maketrans(b"0123456789E", b"0000000000e")
_BIG_EXPONENT: Final = b"0e000"
_LONG_INTEGER: Final = b"0" * 209
_INFINITY: Final = float("inf")
_MINUS_INFINITY: Final = -_INFINITY


def _from_json(text: bytes, *, pause_gc: bool) -> Any:
    """`from_json`, strict; with `pause_gc`, with the cyclic GC paused meanwhile.

    Every array and object the parser builds is a new tracked container, and
    CPython's collector runs (and scans older generations, the app's whole
    heap among them) as they pile up: 1 MiB of bare nesting (500,000 lists)
    takes ~265 ms to parse beside a heap of 600,000 containers, ~105 ms with
    the collector paused. The parser holds the GIL throughout, so no other
    thread runs while the collector is off; it is switched back on at once,
    and only if it was on (an app that disabled it keeps it disabled).
    """
    if pause_gc and gc.isenabled():
        gc.disable()
        try:
            return from_json(text, allow_inf_nan=False)
        finally:
            gc.enable()
    return from_json(text, allow_inf_nan=False)


def _parses(text: bytes) -> bool:
    try:
        from_json(text)
    except ValueError:
        return False
    return True


def _measure_parser_limit() -> int | None:
    """How many arrays and objects the parser lets a value sit inside, if it is consistent.

    `None` when the parser does not behave as the wrapping relies on: the
    same limit for arrays and objects, an empty container counting as a
    value, and a limit above `MAX_SUPPORTED_DEPTH`.
    """
    low, high = 1, 4096
    if _parses(b"[" * high + b"0" + b"]" * high):
        return None  # no limit found: wrapping would enforce nothing
    while low < high:  # the largest n with a value inside n arrays
        middle = (low + high + 1) // 2
        if _parses(b"[" * middle + b"0" + b"]" * middle):
            low = middle
        else:
            high = middle - 1
    n = low
    consistent = (
        n > MAX_SUPPORTED_DEPTH
        and _parses(b'{"":' * n + b"0" + b"}" * n)
        and not _parses(b'{"":' * (n + 1) + b"0" + b"}" * (n + 1))
        and _parses(b"[" * (n + 1) + b"]" * (n + 1))
        and not _parses(b"[" * (n + 2) + b"]" * (n + 2))
        and _parses(b'{"":' * n + b"{}" + b"}" * n)
        and not _parses(b'{"":' * (n + 1) + b"{}" + b"}" * (n + 1))
    )
    return n if consistent else None


#: The parser's recursion limit as measured; `None`: check depth by walking.
PARSER_LIMIT: Final = _measure_parser_limit()

_wrappers: dict[int, tuple[bytes, bytes, int]] = {}


class JSONRejected(Exception):
    """The body is not acceptable JSON; `reason` is a decision code."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether some value in `value` sits inside more than `limit` arrays and objects.

    `1` and `[]` are at depth 0, `[1]` and `[[]]` at depth 1, `[[1]]` at 2:
    an empty container is a value like a scalar. Iterative, level by level,
    gathering each level's children with C-level iteration.
    """
    level = [value] if type(value) in _CONTAINERS else []
    for _ in range(limit):
        if not level:
            return False
        children = chain.from_iterable([_values(c) if type(c) is dict else c for c in level])
        level = [v for v in children if type(v) in _CONTAINERS]
    # `level` holds the containers inside `limit` others: one with content is too deep.
    return any(level)


def _opens(body: bytes) -> int:
    """The opening brackets in `body`, or a count past `WALK_BELOW` when there are more.

    Counting costs ~0.7 ms per MiB: a large body with many brackets near its
    start is known to need the wrapping without counting the rest. Every
    path is exact; the count only picks the cheapest.
    """
    if len(body) > _PREFIX:
        head = body.count(b"[", 0, _PREFIX) + body.count(b"{", 0, _PREFIX)
        if head > WALK_BELOW:
            return head
    return body.count(b"[") + body.count(b"{")


def _may_overflow(body: bytes) -> bool:
    """Whether `body` may hold a number beyond a float's range (never a false no)."""
    shapes = body.translate(_NUMBER_SHAPES, b"+")
    return _BIG_EXPONENT in shapes or (len(shapes) > 209 and _LONG_INTEGER in shapes)


def holds_infinity(value: Any) -> bool:
    """Whether `value`, or a value inside it, is a float infinity.

    Level by level, with C-level membership tests (`inf in level` compares
    each item, strings and containers answering no at once).
    """
    level = [value]
    while level:
        if _INFINITY in level or _MINUS_INFINITY in level:
            return True
        level = list(
            chain.from_iterable(
                [_values(c) if type(c) is dict else c for c in level if type(c) in _CONTAINERS]
            )
        )
    return False


def parse_json(body: bytes, max_depth: int) -> Any:
    """Parse `body` as strict JSON (RFC 8259) with no value inside more than `max_depth` containers.

    Duplicate object keys: the last one wins, as in `json.loads` (Starlette's
    `request.json()`) and pydantic, so the layer and the app read one value.

    A number beyond a float's range (`1e400`, which the parser turns into
    infinity) is refused like `Infinity` itself; integers are exact, so only
    numbers with a fraction or an exponent can be out of range.

    Raises:
        JSONRejected: `reason` is `"json-too-deep"`, `"invalid-utf-8"`,
            `"json-bom"`, `"invalid-json"` or `"json-number-out-of-range"`.
    """
    opens = _opens(body)
    many = opens > WALK_BELOW
    # No more opening brackets than the bound: the body cannot nest deeper.
    # Few containers: walking them costs less than the wrapping.
    if opens <= max_depth or not many or PARSER_LIMIT is None:
        try:
            value = _from_json(body, pause_gc=many)
        except ValueError as exc:
            raise JSONRejected(_reason(body, str(exc))) from exc
        if opens > max_depth and json_depth_exceeds(value, max_depth):
            raise JSONRejected("json-too-deep")
        if _may_overflow(body) and holds_infinity(value):
            raise JSONRejected("json-number-out-of-range")
        return value
    wrapper = _wrappers.get(max_depth)
    if wrapper is None:
        count = PARSER_LIMIT - max_depth
        wrapper = _wrappers[max_depth] = (b"[" * count, b"]" * count, count)
    opening, closing, count = wrapper
    try:
        value = _from_json(b"".join((opening, body, closing)), pause_gc=True)
    except ValueError as exc:
        raise JSONRejected(_reason(body, str(exc))) from exc
    # The wrappers must come back as `count` nested one-element arrays: then
    # the body was exactly one JSON value (`1],[2` would leave two elements).
    for _ in range(count):
        if type(value) is not list or len(value) != 1:
            raise JSONRejected("invalid-json")
        value = value[0]
    if _may_overflow(body) and holds_infinity(value):
        raise JSONRejected("json-number-out-of-range")
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
