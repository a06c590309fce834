"""Store keys from client input: no key can move to another slot or another client's counter.

A key function returns whatever the client sent (a header's value, a token's
`sub`). On Redis Cluster, the slot of a key is the hash of the text between
its first `{` and the first `}` after it (the hash tag), so that every key of
one request shares a slot and one script can touch them all. A client key
holding `{` or `}` would move that tag (`}abc` empties it: the request's keys
land in different slots and the script fails with CROSSSLOT, which reads as a
store failure). So the client key is escaped before it goes between the
braces: `%` becomes `%25`, `{` `%7B`, `}` `%7D`. The escape is one-to-one (no
two keys meet) and leaves no brace inside the tag.
"""

from __future__ import annotations

import hashlib
from typing import Final

__all__ = ["escape", "kv_key", "limits_key", "tag"]

_EMPTY: Final = b"%"  # never the escape of a non-empty key: `%` always becomes `%25`


def escape(key: str) -> bytes:
    """`key` as bytes holding no `{` or `}`, one-to-one.

    Any `str` encodes: `surrogatepass` takes an unpaired surrogate (from a
    token's `sub`) as it is, so no client input can raise here.

    Examples:
        >>> escape("}abc{")
        b'%7Dabc%7B'
        >>> escape("50%")
        b'50%25'
    """
    raw = key.encode("utf-8", "surrogatepass")
    if not raw:
        return _EMPTY
    if b"%" in raw or b"{" in raw or b"}" in raw:
        raw = raw.replace(b"%", b"%25").replace(b"{", b"%7B").replace(b"}", b"%7D")
    return raw


def tag(key: str) -> bytes:
    """The prefix of every rate-limit counter of `key`: `apiguard:{<escaped key>}:`."""
    return b"apiguard:{%b}:" % escape(key)


def kv_key(key: str) -> bytes:
    """The Redis key of a key-value entry: `apiguard:kv:{<escaped key>}`."""
    return b"apiguard:kv:{%b}" % escape(key)


#: Longest plain client key in a `limits` storage's key: memcached allows 250 bytes in all.
_MAX_PLAIN: Final = 160


def limits_key(uid: str, key: str) -> str:
    """A counter's name for `limits`' own storages (memcached, MongoDB).

    `apiguard/<uid>/k:<key>`, the client key escaped (`/` too, so that it
    cannot reach into the quota's part of the name); or `apiguard/<uid>/h:`
    and its SHA-256 when it is long or not printable ASCII (memcached keys
    hold neither spaces nor control characters).
    """
    raw = escape(key).replace(b"/", b"%2F")
    if len(raw) <= _MAX_PLAIN and raw.isascii():
        text = raw.decode("ascii")
        if text.isprintable() and " " not in text:
            return f"apiguard/{uid}/k:{text}"
    return f"apiguard/{uid}/h:{hashlib.sha256(raw).hexdigest()}"
