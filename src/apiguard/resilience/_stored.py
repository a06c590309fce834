"""Stored responses for stale-if-error: `Cache-Control` rules, keys and the record format.

What may be kept follows RFC 9111 for a shared cache and RFC 5861 for how
long: never a response marked `private` or `no-store` (§5.2.2.3, §5.2.2.5),
nor one that sets a cookie (a shared copy would hand one caller's cookie to
another), nor one with `Vary: *` (§4.1: it never matches a later request).
Responses that ask to be validated before any reuse (`no-cache`,
`must-revalidate`, `proxy-revalidate`: §5.2.2.2, §5.2.2.4, §5.2.2.8) are not
kept either: serving them stale would defy what they say.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Iterable, Sequence
from typing import Final, NamedTuple

__all__ = [
    "HOP_BY_HOP",
    "VARY_MARK",
    "Stored",
    "cache_control",
    "decode",
    "encode",
    "encode_vary",
    "freshness",
    "primary_key",
    "variant_key",
]

# RFC 9111 §5.2: `#cache-directive`, a comma-separated list whose values may
# be quoted strings (RFC 9110 §5.6.4) holding commas.
_PART: Final = re.compile(rb'(?:[^,"]|"(?:[^"\\]|\\.)*"?)+')
#: Connection-specific fields a stored response must not carry (RFC 9110 §7.6.1),
#: and its length, which is recomputed.
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"content-length",
    }
)
_RESPONSE: Final = b"AGS1"
VARY_MARK: Final = b"AGV1"
_LENGTH: Final = struct.Struct(">I")


def cache_control(values: Iterable[bytes]) -> dict[str, str | None]:
    """The directives of `Cache-Control` field values, lowercase names to values.

    A directive given twice keeps its first value. A malformed part is read
    leniently, every word of it a directive, so that garbage around
    `private` or `no-store` never hides it (RFC 9111 §4.2.1: invalid freshness counts as
    stale, which for us only shortens what is kept).

    Examples:
        >>> cache_control([b'max-age=60, stale-if-error="300"', b"PUBLIC"])
        {'max-age': '60', 'stale-if-error': '300', 'public': None}
    """
    found: dict[str, str | None] = {}
    for value in values:
        for part in _PART.findall(value):
            name, sep, raw = part.partition(b"=")
            words = name.split()
            if not words:
                continue
            for word in words[:-1]:  # garbage: every word counts, without a value
                found.setdefault(word.decode("latin-1").lower(), None)
            text = raw.strip().strip(b'"').decode("latin-1") if sep else None
            found.setdefault(words[-1].decode("latin-1").lower(), text)
    return found


def _seconds(value: str | None) -> int | None:
    """A delta-seconds value (RFC 9111 §1.2.2), or `None` when it is not one."""
    if value is None or not value.isdigit():
        return None
    return min(int(value), 2**31)


def freshness(directives: dict[str, str | None]) -> tuple[int, int | None]:
    """`(freshness lifetime, stale-if-error)` in seconds, from a response's directives.

    A shared cache takes `s-maxage` over `max-age` (RFC 9111 §4.2.1); no
    heuristic freshness is assumed (0). `stale-if-error` (RFC 5861 §4) is
    `None` when the response does not give it.
    """
    lifetime = _seconds(directives.get("s-maxage"))
    if lifetime is None:
        lifetime = _seconds(directives.get("max-age")) or 0
    return lifetime, _seconds(directives.get("stale-if-error"))


def _digest(parts: Sequence[bytes]) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(_LENGTH.pack(len(part)))
        hasher.update(part)
    return hasher.hexdigest()


def primary_key(name: str, host: bytes, target: bytes, query: bytes, principal: bytes) -> str:
    """The store key of a URL's copy for one caller: a digest, so no client input shapes it.

    Each part is length-prefixed, so that no split of the same bytes into
    other parts gives the same key.
    """
    return f"stale:{name}:{_digest((host, target, query, principal))}"


def variant_key(
    primary: str, names: Sequence[bytes], headers: Iterable[tuple[bytes, bytes]]
) -> str:
    """The key of the copy for the values of the request headers `Vary` names (RFC 9111 §4.1).

    A header sent several times is joined in order; a missing one is
    absent, which differs from an empty one.
    """
    values: dict[bytes, list[bytes]] = {name: [] for name in names}
    for key, value in headers:
        found = values.get(key)
        if found is not None:
            found.append(value)
    parts = [primary.encode("ascii")]
    for name in names:
        sent = values[name]
        parts += (name, b"\x01" + b"\x00".join(sent) if sent else b"\x00")
    return f"{primary}:{_digest(parts)}"


class Stored(NamedTuple):
    """A kept response.

    Attributes:
        status: Its status.
        headers: Its header fields (hop-by-hop ones and the length left out).
        body: Its body.
        generated: When it was generated, wall time (its `Age` taken off).
        lifetime: Its freshness lifetime in seconds.
        until: Wall time after which it is no longer served.
    """

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    generated: float
    lifetime: int
    until: float


def encode(stored: Stored) -> bytes:
    """The bytes a store keeps: a magic, the length of a JSON head, the head, the body.

    JSON of latin-1 text, never pickle: a shared store may hold anything,
    and what is read back must not run code.
    """
    head = json.dumps(
        [
            stored.status,
            [[name.decode("latin-1"), value.decode("latin-1")] for name, value in stored.headers],
            stored.generated,
            stored.lifetime,
            stored.until,
        ],
        separators=(",", ":"),
    ).encode("latin-1")
    return _RESPONSE + _LENGTH.pack(len(head)) + head + stored.body


def encode_vary(names: Sequence[bytes]) -> bytes:
    """The record that says a URL's copies vary on the request headers `names`."""
    return VARY_MARK + b",".join(names)


def decode(data: bytes) -> Stored | None:
    """A stored response, or `None` when the bytes are not one (never an exception)."""
    if data[:4] != _RESPONSE or len(data) < 8:
        return None
    (size,) = _LENGTH.unpack_from(data, 4)
    try:
        status, headers, generated, lifetime, until = json.loads(data[8 : 8 + size])
        pairs = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    except (ValueError, TypeError, UnicodeError):
        return None
    if not (
        isinstance(status, int)
        and 100 <= status <= 599
        and isinstance(generated, int | float)
        and isinstance(lifetime, int)
        and isinstance(until, int | float)
    ):
        return None
    return Stored(status, pairs, data[8 + size :], float(generated), lifetime, float(until))
