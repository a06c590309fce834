"""`limits`' async storage API over the memory store's tables.

So that [`MemoryStorage`][apiguard.storage.MemoryStorage], registered as
`async+apiguard-memory://`, serves `limits`' own strategies too. The rate
limiter does not use this API: it calls the store's own atomic hit of every
quota of a policy.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable, Sequence
from typing import Any

from apiguard._clock import clock
from apiguard.storage._base import Quota, Verdict

__all__ = ["LimitsAPI", "expire_log", "log_wait", "window_entry"]

_Table = dict[Hashable, list[Any]]


class LimitsAPI:
    """The methods of `limits.aio.storage.Storage` and its window supports, as a mixin."""

    # Provided by MemoryStorage.
    _fixed: _Table
    _counters: _Table
    _logs: _Table
    _windows: _Table
    _queues: dict[float, deque[tuple[float, _Table, Hashable]]]
    _next_due: float

    def __len__(self) -> int:  # pragma: no cover - MemoryStorage's
        raise NotImplementedError

    def _sweep(self, now: float) -> None:  # pragma: no cover - MemoryStorage's
        raise NotImplementedError

    def _track(
        self, window: float, expires: float, table: _Table, key: Hashable
    ) -> None:  # pragma: no cover
        raise NotImplementedError

    def moving_window(
        self, key: str, quotas: Sequence[Quota], cost: int, now: float | None = None
    ) -> Verdict:  # pragma: no cover - MemoryStorage's
        raise NotImplementedError

    def sliding_window_counter(
        self, key: str, quotas: Sequence[Quota], cost: int, now: float | None = None
    ) -> Verdict:  # pragma: no cover - MemoryStorage's
        raise NotImplementedError

    def _counter(self, key: str, now: float) -> list[Any] | None:
        entry = self._counters.get(key)
        if entry is not None and entry[0] <= now:
            del self._counters[key]
            return None
        return entry

    async def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        """Add `amount` to the counter of `key`; a new counter expires in `expiry` s."""
        now = clock.time()
        if now >= self._next_due:
            self._sweep(now)
        entry = self._counter(key, now)
        if entry is None:
            entry = self._counters[key] = [now + expiry, 0]
            self._track(expiry, entry[0], self._counters, key)
        entry[1] += amount
        return int(entry[1])

    async def decr(self, key: str, amount: int = 1) -> int:
        """Take `amount` off the counter of `key`, not below zero."""
        entry = self._counter(key, clock.time())
        if entry is None:
            return 0
        entry[1] = max(entry[1] - amount, 0)
        return int(entry[1])

    async def get(self, key: str) -> int:
        """The counter of `key`, 0 when absent or expired."""
        entry = self._counter(key, clock.time())
        return 0 if entry is None else int(entry[1])

    async def get_expiry(self, key: str) -> float:
        """When the counter of `key` expires (epoch seconds); now when absent."""
        now = clock.time()
        entry = self._counter(key, now)
        return now if entry is None else float(entry[0])

    async def check(self) -> bool:
        """Always healthy."""
        return True

    async def reset(self) -> int | None:
        """Forget every counter; return how many entries there were."""
        count = len(self)
        for table in (self._fixed, self._logs, self._windows, self._counters):
            table.clear()
        self._queues.clear()
        self._next_due = math.inf
        return count

    async def clear(self, key: str) -> None:
        """Forget the counter and the moving window of `key`."""
        self._counters.pop(key, None)
        self._logs.pop(("", key), None)

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        """Moving window: take `amount` entries if the last `expiry` s leave room."""
        if amount > limit:
            return False
        return self.moving_window(key, (Quota("", limit, expiry),), amount, clock.time()).admitted

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        """Moving window: `(time of the oldest entry in the window, entries in it)`."""
        now = clock.time()
        entry = self._logs.get(("", key))
        if entry is None:
            return now, 0
        expire_log(entry, now - expiry)
        if not entry[1]:
            return now, 0
        return float(entry[1][0][0]), int(entry[2])

    async def acquire_sliding_window_entry(
        self, key: str, limit: int, expiry: int, amount: int = 1
    ) -> bool:
        """Sliding window counter: count `amount` if the weighted count leaves room."""
        if amount > limit:
            return False
        verdict = self.sliding_window_counter(
            key, (Quota("", limit, expiry),), amount, clock.time()
        )
        return verdict.admitted

    async def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        """`(previous count, previous TTL, current count, current TTL)` as `limits` has them."""
        now = clock.time()
        entry = self._windows.get(("", key))
        if entry is None:
            return 0, 0.0, 0, 0.0
        entry = window_entry(self._windows, ("", key), expiry, now)
        until_end = (entry[1] + 1) * expiry - now
        previous = int(entry[3])
        return previous, until_end if previous else 0.0, int(entry[2]), until_end + expiry

    async def clear_sliding_window(self, key: str, expiry: int) -> None:
        """Forget the sliding window counters of `key`."""
        self._windows.pop(("", key), None)


def expire_log(entry: list[Any], horizon: float) -> None:
    log: deque[tuple[float, int]] = entry[1]
    while log and log[0][0] <= horizon:
        entry[2] -= log.popleft()[1]


def log_wait(log: deque[tuple[float, int]], needed: int) -> float:
    """The time of the hit whose expiry frees `needed` units (oldest first)."""
    freed = 0
    for at, cost in log:
        freed += cost
        if freed >= needed:
            return at
    return math.inf  # pragma: no cover - needed never exceeds the log's total


def window_entry(table: _Table, slot: Hashable, window: int, now: float) -> list[Any]:
    """The sliding-window entry of `slot`, rolled forward to the window of `now`.

    A new entry has an expiry of -1, for the caller to set and track.
    """
    index = int(now // window)
    entry = table.get(slot)
    if entry is None:
        entry = table[slot] = [-1.0, index, 0, 0]
        return entry
    if entry[1] != index:
        entry[3] = entry[2] if entry[1] == index - 1 else 0
        entry[2] = 0
        entry[1] = index
        entry[0] = (index + 2) * window
    return entry
