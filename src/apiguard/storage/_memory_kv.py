"""The key-value part of the memory store: claims and values in process memory, bounded.

Bounded in entries and in bytes (keys and values counted). When full, values
nearest their expiry are evicted first; a live claim is never evicted (it
stands for a request running now): when only claims are left, a new claim
fails with [`StorageError`][apiguard.StorageError], and the layer follows
its fail mode. Expired entries are dropped when read, and the oldest expiries
are swept a few at a time as entries are written, so memory holds only what
is live or recently expired.

Time is the core clock's monotonic time, so `FrozenClock` moves expiries.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
from typing import Final

from apiguard._clock import clock
from apiguard.errors import StorageError
from apiguard.storage._base import Claim

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_ENTRIES", "MemoryKeyValue"]

#: Entries held at most, by default.
DEFAULT_MAX_ENTRIES: Final = 10_000
#: Bytes of keys and values held at most, by default (64 MiB).
DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024
#: Heap entries looked at per write to drop what has expired.
_SWEEP: Final = 8
_CLAIM, _VALUE = 0, 1


class MemoryKeyValue:
    """Claims with owner tokens and byte values, in this process, bounded.

    Args:
        max_entries: Entries held at most.
        max_bytes: Bytes of keys and values held at most.

    Every method is `async` to keep the one protocol, and none of them
    waits: no `await` between a check and the write it decides, so
    concurrent requests in one process see each claim atomically.
    """

    def __init__(
        self, *, max_entries: int = DEFAULT_MAX_ENTRIES, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        # key -> [expires, kind, (token, note) or value, version]
        self._entries: dict[str, list[object]] = {}
        # (expires, version, key): a lazy heap; stale rows are skipped.
        self._heap: list[tuple[float, int, str]] = []
        self._versions = itertools.count()

    def __len__(self) -> int:
        return len(self._entries)

    # --- internals -------------------------------------------------------------------

    def _live(self, key: str, now: float) -> list[object] | None:
        entry = self._entries.get(key)
        if entry is not None and entry[0] <= now:  # type: ignore[operator]
            self._drop(key, entry)
            return None
        return entry

    def _drop(self, key: str, entry: list[object]) -> None:
        del self._entries[key]
        self.bytes -= _size(key, entry)

    def _store(self, key: str, expires: float, kind: int, data: object) -> None:
        old = self._entries.get(key)
        if old is not None:
            self._drop(key, old)
        version = next(self._versions)
        entry: list[object] = [expires, kind, data, version]
        self._entries[key] = entry
        self.bytes += _size(key, entry)
        heap = self._heap
        heapq.heappush(heap, (expires, version, key))
        if len(heap) > 2 * len(self._entries) + 64:
            # Renewals leave stale rows behind: rebuild from the live entries.
            heap[:] = [(e[0], e[3], k) for k, e in self._entries.items()]  # type: ignore[misc]
            heapq.heapify(heap)

    def _make_room(self, key: str, size: int, now: float, *, for_claim: bool) -> None:
        """Sweep what expired; evict values nearest their expiry until `size` more bytes fit."""
        self._sweep(now, _SWEEP)
        if size > self.max_bytes:
            msg = f"memory store: an entry of {size} bytes exceeds max_bytes={self.max_bytes}"
            raise StorageError(msg)
        entries = self._entries
        held = entries.get(key)
        freed = _size(key, held) if held is not None else 0
        while (
            len(entries) - (held is not None) >= self.max_entries
            or self.bytes - freed + size > self.max_bytes
        ):
            if not self._evict_one(now, protect=key):
                kind = "claim" if for_claim else "value"
                msg = (
                    f"memory store: full of live claims (max_entries={self.max_entries}, "
                    f"max_bytes={self.max_bytes}); the {kind} is refused"
                )
                raise StorageError(msg)

    def _sweep(self, now: float, budget: int) -> None:
        heap = self._heap
        entries = self._entries
        while heap and budget:
            expires, version, key = heap[0]
            entry = entries.get(key)
            if entry is not None and entry[3] == version and expires > now:
                return
            heapq.heappop(heap)
            budget -= 1
            if entry is not None and entry[3] == version:
                self._drop(key, entry)

    def _evict_one(self, now: float, protect: str) -> bool:
        """Drop the value nearest its expiry (claims are kept). `False` when there is none."""
        heap = self._heap
        entries = self._entries
        kept: list[tuple[float, int, str]] = []
        evicted = False
        while heap:
            row = heapq.heappop(heap)
            expires, version, key = row
            entry = entries.get(key)
            if entry is None or entry[3] != version:
                continue  # stale row
            if (entry[1] == _CLAIM and expires > now) or key == protect:
                kept.append(row)
                continue
            self._drop(key, entry)
            evicted = True
            break
        for row in kept:
            heapq.heappush(heap, row)
        return evicted

    # --- the protocol ----------------------------------------------------------------

    async def claim(
        self, key: str, ttl: float, *, note: bytes = b"", timeout: float | None = None
    ) -> Claim:
        """Claim `key` for `ttl` seconds if nobody holds it; or say what holds it."""
        now = clock.monotonic()
        entry = self._live(key, now)
        if entry is not None:
            if entry[1] == _VALUE:
                return Claim(None, entry[2])  # type: ignore[arg-type]
            return Claim(None, None, entry[2][1])  # type: ignore[index]
        token = secrets.token_hex(16)
        note = bytes(note)
        self._make_room(key, _CLAIM_BYTES + len(note) + len(key), now, for_claim=True)
        self._store(key, now + ttl, _CLAIM, (token, note))
        return Claim(token)

    async def renew(
        self, key: str, token: str, ttl: float, *, timeout: float | None = None
    ) -> bool:
        """Extend the claim `token` holds to `ttl` seconds from now."""
        now = clock.monotonic()
        entry = self._live(key, now)
        if entry is None or entry[1] != _CLAIM or entry[2][0] != token:  # type: ignore[index]
            return False
        self._store(key, now + ttl, _CLAIM, entry[2])
        return True

    async def release(self, key: str, token: str, *, timeout: float | None = None) -> bool:
        """Drop the claim `token` holds."""
        entry = self._live(key, clock.monotonic())
        if entry is None or entry[1] != _CLAIM or entry[2][0] != token:  # type: ignore[index]
            return False
        self._drop(key, entry)
        return True

    async def put(
        self,
        key: str,
        value: bytes,
        ttl: float,
        *,
        token: str | None = None,
        timeout: float | None = None,
    ) -> bool:
        """Store `value`: over the claim `token` holds, or where no claim is live."""
        now = clock.monotonic()
        entry = self._live(key, now)
        if token is not None:
            if entry is None or entry[1] != _CLAIM or entry[2][0] != token:  # type: ignore[index]
                return False
        elif entry is not None and entry[1] == _CLAIM:
            return False
        self._make_room(key, len(key) + len(value), now, for_claim=False)
        self._store(key, now + ttl, _VALUE, bytes(value))
        return True

    async def get(self, key: str, *, timeout: float | None = None) -> bytes | None:
        """The value under `key`, or `None`."""
        entry = self._live(key, clock.monotonic())
        if entry is None or entry[1] != _VALUE:
            return None
        return entry[2]  # type: ignore[return-value]

    async def delete(self, key: str, *, timeout: float | None = None) -> None:
        """Forget `key`."""
        entry = self._entries.get(key)
        if entry is not None:
            self._drop(key, entry)


#: What a claim's token counts for, in bytes.
_CLAIM_BYTES: Final = 32


def _size(key: str, entry: list[object]) -> int:
    data = entry[2]
    if entry[1] == _VALUE:
        return len(key) + len(data)  # type: ignore[arg-type]
    return len(key) + _CLAIM_BYTES + len(data[1])  # type: ignore[index]
