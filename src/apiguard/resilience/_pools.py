"""Bounded pools of in-flight requests, with a bounded wait queue ordered by priority.

A [`Pool`][apiguard.resilience._pools.Pool] admits a request while fewer
than its limit are in flight. Beyond, the request waits in the queue (at
most `max_queue` waiters, each at most `max_wait` seconds), or is refused.
A slot freed goes straight to the first waiter of the highest priority,
never back to the pool first (a newcomer cannot overtake the queue).

Priorities, most protected first:

- `critical` is never limited (health checks): admitted at once, counted apart;
- `high` waits first, and takes the place of the newest waiter of a lower
  priority when the queue is full (who is shed then);
- `normal`;
- `low` is admitted only while a tenth of the limit (one at least) is free,
  so it is shed first as load rises, and waits last.

Everything is O(1) but the removal of a waiter that timed out, which is
lazy (the queue skips it when it reaches it).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Final, Literal, TypeAlias

__all__ = ["CRITICAL", "PRIORITIES", "Pool", "Priority"]

Priority: TypeAlias = Literal["critical", "high", "normal", "low"]
PRIORITIES: Final = ("critical", "high", "normal", "low")
CRITICAL: Final = "critical"
#: Queue index of each waiting priority (critical never waits).
_RANK: Final = {"high": 0, "normal": 1, "low": 2}


class Pool:
    """A bound on requests in flight, and the queue of those waiting for a slot.

    Args:
        limit: Requests in flight at most (a fixed bound; an adaptive limit
            sets `limit` as it moves).
        max_queue: Waiters at most; 0: no queue, refuse at once.
        max_wait: Seconds a waiter waits at most.
    """

    __slots__ = (
        "_waiters",
        "admitted_at",
        "critical",
        "in_flight",
        "limit",
        "max_queue",
        "max_wait",
        "peak",
        "queued",
        "refused_at",
    )

    def __init__(self, limit: int, max_queue: int, max_wait: float) -> None:
        self.limit = limit
        self.max_queue = max_queue
        self.max_wait = max_wait
        self.in_flight = 0
        self.critical = 0
        self.queued = 0
        #: The most requests in flight since an adaptive limit last read it.
        self.peak = 0
        #: When a request was last admitted, and last refused (monotonic).
        self.admitted_at = 0.0
        self.refused_at = 0.0
        self._waiters: tuple[deque[asyncio.Future[bool]], ...] = (deque(), deque(), deque())

    def _room(self, rank: int) -> bool:
        limit = self.limit
        if rank == 2:  # low: only while a tenth of the limit is free
            limit -= max(limit // 10, 1)
        return self.in_flight < limit

    def try_acquire(self, priority: str) -> bool:
        """Take a slot now if one is free and nobody of this priority or higher waits."""
        if priority == CRITICAL:
            self.critical += 1
            return True
        rank = _RANK[priority]
        if self.queued and any(self._waiters[r] for r in range(rank + 1)):
            return False
        if not self._room(rank):
            return False
        in_flight = self.in_flight = self.in_flight + 1
        if in_flight > self.peak:
            self.peak = in_flight
        return True

    def enqueue(self, priority: str) -> asyncio.Future[bool] | None:
        """A place in the queue (its future turns `True` with a slot), or `None`: shed now.

        A full queue makes room for a higher priority by shedding the newest
        waiter of the lowest priority below it (its future turns `False`).
        """
        rank = _RANK[priority]
        if self.max_queue <= 0:
            return None
        if self.queued >= self.max_queue and not self._shed_below(rank):
            return None
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters[rank].append(future)
        self.queued += 1
        return future

    def _shed_below(self, rank: int) -> bool:
        for lower in (2, 1):
            if lower <= rank:
                return False
            waiters = self._waiters[lower]
            while waiters:
                victim = waiters.pop()
                if not victim.done():
                    victim.set_result(False)
                    self.queued -= 1
                    return True
        return False

    def gave_up(self, future: asyncio.Future[bool]) -> None:
        """A waiter stopped waiting (its time is up, or its request is gone)."""
        if future.done() and not future.cancelled():
            if future.result():  # it got a slot meanwhile: give it back
                self.release()
            return
        future.cancel()
        self.queued -= 1

    def release(self, priority: str = "normal") -> None:
        """A request admitted is done: its slot goes to the next waiter, or back to the pool."""
        if priority == CRITICAL:
            self.critical -= 1
            return
        self.in_flight -= 1
        if self.queued:
            self.fill()

    def fill(self) -> None:
        """Hand the free slots to the waiters, highest priority first.

        After a release, or when an adaptive limit rises.
        """
        waiters = self._waiters
        for rank in (0, 1, 2):
            queue = waiters[rank]
            while queue:
                if not self._room(rank):
                    return
                future = queue.popleft()
                if future.done():  # timed out or shed: skipped
                    continue
                self.queued -= 1
                in_flight = self.in_flight = self.in_flight + 1
                if in_flight > self.peak:
                    self.peak = in_flight
                future.set_result(True)

    def saturated(self) -> bool:
        """Whether a normal request arriving now would be refused at once."""
        return not self._room(1) and (self.max_queue <= 0 or self.queued >= self.max_queue)
