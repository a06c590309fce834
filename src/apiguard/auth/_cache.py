"""The bounded cache of verified results that the authenticators share.

Both caches of `auth/` keep what a costly check established, by the SHA-256
of the credential: `JWTAuth` its verified tokens (until `exp`, on the wall
clock), `APIKeyAuth` the keys its `lookup` found (for `cache_ttl` seconds,
on the monotonic clock). Both read the core clock, so `FrozenClock` applies.
"""

from __future__ import annotations

import contextlib
from typing import Generic, TypeVar

from apiguard._clock import clock

__all__ = ["ExpiringCache"]

V = TypeVar("V")


class ExpiringCache(Generic[V]):
    """At most `size` values, each kept until its own expiry; the oldest goes first.

    A lookup is one dictionary lookup and one clock read. An expired entry is
    dropped when it is next looked up; a full cache drops its oldest entry
    (by insertion) to make room, so a flood of new credentials cannot grow it
    and costs O(1) per entry.

    Args:
        size: The most entries kept; 0 keeps none.
        wall: Whether expiries are wall-clock times (`clock.time()`, such as
            a token's `exp`) rather than monotonic ones (`clock.monotonic()`,
            for a time to live that a clock step must not stretch).
    """

    __slots__ = ("_entries", "_wall", "size")

    def __init__(self, size: int, *, wall: bool) -> None:
        self.size = size
        self._wall = wall
        self._entries: dict[bytes, tuple[V, float]] = {}

    def get(self, key: bytes) -> V | None:
        """The value under `key` if it has not expired; an expired one is dropped."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if (clock.time() if self._wall else clock.monotonic()) < entry[1]:
            return entry[0]
        self._entries.pop(key, None)
        return None

    def put(self, key: bytes, value: V, expires: float) -> None:
        """Keep `value` under `key` until `expires` (on this cache's clock)."""
        if not self.size:
            return
        entries = self._entries
        if len(entries) >= self.size and key not in entries:
            # Several threads may share an authenticator: another may have
            # emptied or changed the dictionary since `len` was read.
            with contextlib.suppress(StopIteration, KeyError, RuntimeError):
                del entries[next(iter(entries))]  # the oldest entry goes
        entries[key] = (value, expires)

    def discard(self, key: bytes) -> None:
        """Forget `key`, if it is there."""
        self._entries.pop(key, None)

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def keys(self) -> list[bytes]:
        """The keys held, oldest first (expired ones included until looked up)."""
        return list(self._entries)

    def __repr__(self) -> str:
        return f"ExpiringCache(size={self.size}, entries={len(self._entries)})"
