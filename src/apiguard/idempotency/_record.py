"""A stored response: which of its headers are kept, its bytes in the store, its replay.

A stored response is one byte string: a version byte, the request's
fingerprint, the status, the kept headers (length-prefixed) and the body.
No pickle and no JSON: a store is shared, and what is read back from it is
only ever bytes to copy into a response.

Not kept, and so never replayed:

- hop-by-hop fields (RFC 9110 §7.6.1): `Connection` and the fields it
  names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`,
  `Transfer-Encoding`, `Upgrade`: they describe one connection;
- `Content-Length`: computed again from the stored body;
- `Date` (RFC 9110 §6.6.1): the time a message was generated; the server
  dates the replay itself;
- `Set-Cookie`: a session cookie is a credential, kept out of a shared
  store; and a replay must not set again a session that may since have been
  rotated or logged out.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final, NamedTuple

from apiguard._types import RawHeaders, Send

__all__ = ["NOT_KEPT", "REPLAYED", "StoredResponse", "decode", "encode", "kept_headers", "replay"]

#: The header that marks a replayed response (the name Stripe's clients read).
REPLAYED: Final = b"idempotent-replayed"
_REPLAYED_TRUE: Final = (REPLAYED, b"true")

#: RFC 9110 §7.6.1: fields about one connection, never about the response.
_HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
#: Header names never stored (see the module's docstring for why).
NOT_KEPT: Final = _HOP_BY_HOP | {b"content-length", b"date", b"set-cookie", REPLAYED}

#: Statuses whose responses carry no Content-Length of their body (RFC 9110 §8.6).
_NO_LENGTH: Final = frozenset({204, 304})

_VERSION: Final = 1
_HEAD: Final = struct.Struct(">B32sHH")  # version, fingerprint, status, header count
_PAIR: Final = struct.Struct(">HI")  # name length, value length


class StoredResponse(NamedTuple):
    """A response read back from the store."""

    fingerprint: bytes
    status: int
    headers: RawHeaders
    body: bytes


def kept_headers(headers: Iterable[tuple[bytes, bytes]]) -> RawHeaders:
    """The headers of a response that are stored (see the module's docstring)."""
    kept: RawHeaders = []
    listed: set[bytes] | None = None
    for name, value in headers:
        lowered = name.lower()
        if lowered in NOT_KEPT:
            if lowered == b"connection":  # RFC 9110 §7.6.1: the fields it names are hop-by-hop
                listed = (listed or set()) | {t.strip().lower() for t in value.split(b",")}
            continue
        kept.append((name, value))
    if listed:
        kept = [(name, value) for name, value in kept if name.lower() not in listed]
    return kept


def encode(fingerprint: bytes, status: int, headers: RawHeaders, body: bytes) -> bytes:
    """The bytes stored for a response, its headers already filtered by `kept_headers`."""
    parts = [_HEAD.pack(_VERSION, fingerprint, status, len(headers))]
    for name, value in headers:
        parts.append(_PAIR.pack(len(name), len(value)))
        parts.append(name)
        parts.append(value)
    parts.append(body)
    return b"".join(parts)


def decode(value: bytes) -> StoredResponse:
    """A stored response from its bytes.

    Raises:
        ValueError: the bytes are not a stored response of this version.
    """
    try:
        version, fingerprint, status, count = _HEAD.unpack_from(value)
        if version != _VERSION:
            msg = f"stored response of version {version}, not {_VERSION}"
            raise ValueError(msg)
        offset = _HEAD.size
        headers: RawHeaders = []
        for _ in range(count):
            name_length, value_length = _PAIR.unpack_from(value, offset)
            offset += _PAIR.size
            end = offset + name_length + value_length
            if end > len(value):
                raise ValueError("stored response cut short")
            headers.append(
                (value[offset : offset + name_length], value[offset + name_length : end])
            )
            offset = end
    except struct.error as exc:
        raise ValueError("stored response cut short") from exc
    return StoredResponse(fingerprint, status, headers, value[offset:])


async def replay(stored: StoredResponse, send: Send) -> None:
    """Send a stored response again, marked `Idempotent-Replayed: true`."""
    body = stored.body
    status = stored.status
    headers = [*stored.headers, _REPLAYED_TRUE]
    # RFC 9110 §8.6: never a Content-Length in a 1xx or 204; in a 304 it
    # would describe the selected representation, which is not stored.
    if status >= 200 and status not in _NO_LENGTH:
        headers.append((b"content-length", b"%d" % len(body)))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
