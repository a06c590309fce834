"""apiguard's in-process store: O(1) a hit whatever the number of keys.

`limits`' async `MemoryStorage` schedules, on every hit, a task that walks
every key to expire old ones: with 10,000 live keys and the event loop busy a
hit costs ~1 ms, exactly when a service is under load or attack. This store
expires lazily instead. Each entry carries its own expiry and is checked when
it is read; and so that keys nobody reads again do not pile up, every entry
has one place in a FIFO queue per window length, and an operation that finds
queue heads due pops a share of them proportional to the store's size (1/1024
of its entries, 8 at least, 512 at most): a trickle of requests after a flood
reclaims it within about a thousand requests, and no single request pays for
a mass expiry. Entries of one window length enter their queue in (nearly) the
order they expire, so a pop is O(1), and each entry is popped once per window
it is used in: O(1) a hit, amortised. Memory is bounded by the keys used
within about two windows, and by `max_keys` whatever the traffic: when full,
a new entry evicts the one nearest its expiry (the oldest first).

Time comes from [`apiguard._clock.clock`][apiguard._clock.Clock], so that
[`FrozenClock`][apiguard.testing.FrozenClock] freezes windows in tests.

The class is also a `limits` async storage, registered under the scheme
`async+apiguard-memory://` (limits' own `async+memory://` stays as it is), so
it serves `limits`' strategies directly::

    from limits import parse
    from limits.aio.strategies import FixedWindowRateLimiter
    from limits.storage import storage_from_string

    limiter = FixedWindowRateLimiter(storage_from_string("async+apiguard-memory://"))
    await limiter.hit(parse("10/minute"), "client-1")
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Hashable, Sequence
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from limits.aio.storage import MovingWindowSupport, SlidingWindowCounterSupport, Storage

from apiguard._clock import clock
from apiguard.errors import ConfigError
from apiguard.storage._base import Quota, Verdict, sliding_wait

__all__ = ["DEFAULT_MAX_KEYS", "MemoryStorage"]

logger = logging.getLogger("apiguard.storage")

#: Queue heads an operation pops when some are due: 1/2**_SWEEP_SHIFT of the
#: entries held, within these bounds. At least more than the one entry an
#: operation may add, so that the sweep keeps pace; at most few enough that
#: no single request pays for a mass expiry (512 pops: ~0.1 ms).
_SWEEP_MIN: Final = 8
_SWEEP_MAX: Final = 512
_SWEEP_SHIFT: Final = 10
#: Entries held at most, by default: about 30 MB (one entry is ~300 bytes).
DEFAULT_MAX_KEYS: Final = 100_000
#: Renewed queue heads given a second chance per eviction, at most.
_EVICT_TRIES: Final = 16

_Table = dict[Hashable, list[Any]]


class MemoryStorage(Storage, MovingWindowSupport, SlidingWindowCounterSupport):
    """Rate-limit counters in process memory, O(1) per hit.

    Every entry is a list whose first item is the time it expires at, so that
    one sweep serves every table. The rate limiter calls the synchronous
    `fixed_window`, `moving_window` and `sliding_window_counter` methods,
    which check and count every quota of a policy at once (no `await` between
    the check and the count, so concurrent requests in one process see an
    exact count); `limits`' async API is implemented on the same tables.

    Security: `max_keys` bounds the memory a flood of new clients can take
    (each client takes one entry per quota). When the store is full, a new
    entry evicts the one nearest its expiry, the oldest first: that
    client's count starts again. Keep `max_keys` above the number of
    clients you expect within your longest window, and group IPv6 clients
    by a short enough prefix (`by_ip(ipv6_prefix=...)`) that one holder of
    many addresses cannot cycle through more keys than that.

    Args:
        uri: `memory://` or `async+apiguard-memory://`, optionally with
            `?max_keys=N`.
        wrap_exceptions: As for every `limits` storage; this one raises none.
        max_keys: Entries held at most (one per client and quota); the
            URI's `max_keys` wins when given.

    Raises:
        ConfigError: `max_keys` is not a whole number >= 1, or the URI has
            another option.
    """

    STORAGE_SCHEME = ["async+apiguard-memory"]  # noqa: RUF012 - limits' registry reads it

    def __init__(
        self,
        uri: str | None = None,
        wrap_exceptions: bool = False,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        **_: Any,
    ) -> None:
        shown = uri or "memory://"
        given: object = max_keys
        if uri:
            query = parse_qs(urlsplit(uri).query, keep_blank_values=True)
            for option in query:
                if option != "max_keys":
                    msg = f"storage: {shown} has an unknown option {option!r} (known: max_keys)"
                    raise ConfigError(msg)
            if "max_keys" in query:
                text = query["max_keys"][-1]
                given = int(text) if text.isdigit() else text
        if not isinstance(given, int) or isinstance(given, bool) or given < 1:
            msg = f"storage: {shown}: max_keys {given!r} is not a whole number >= 1"
            raise ConfigError(msg)
        super().__init__(uri, wrap_exceptions=wrap_exceptions)
        self.max_keys = given
        self._full_logged = False
        self._fixed: _Table = {}  # (uid, key) -> [end of window, count]
        self._logs: _Table = {}  # moving window: key -> [expires, deque[(t, cost)], total]
        self._windows: _Table = {}  # sliding counter: key -> [expires, index, current, previous]
        self._counters: _Table = {}  # limits' incr(): key -> [expires, count]
        self._queues: dict[float, deque[tuple[float, _Table, Hashable]]] = {}
        self._next_due = math.inf

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        """What `limits` would wrap: this store raises nothing of its own."""
        return ValueError

    def __len__(self) -> int:
        """The number of entries held, live or not yet swept."""
        return len(self._fixed) + len(self._logs) + len(self._windows) + len(self._counters)

    # --- expiry ----------------------------------------------------------------------

    def _track(self, window: float, expires: float, table: _Table, key: Hashable) -> None:
        """Queue a new entry for expiry; evict the oldest one if the store is now over full."""
        queue = self._queues.get(window)
        if queue is None:
            queue = self._queues[window] = deque()
        queue.append((expires, table, key))
        if expires < self._next_due:
            self._next_due = expires
        if (
            len(self._fixed) + len(self._logs) + len(self._windows) + len(self._counters)
            > self.max_keys
        ):
            self._evict()

    def _evict(self) -> None:
        """Drop the entry nearest its expiry (queue order: the oldest first).

        An entry renewed since it was queued (in use in a later window) is
        queued again, a few times at most, before another is dropped.
        """
        if not self._full_logged:
            self._full_logged = True
            logger.warning(
                "apiguard: the memory store is full (max_keys=%d): new clients now evict "
                "the oldest counters. Raise max_keys, or use a shared store (redis://).",
                self.max_keys,
            )
        tries = _EVICT_TRIES
        while True:
            queue = min(
                (q for q in self._queues.values() if q), key=lambda q: q[0][0], default=None
            )
            if queue is None:  # pragma: no cover - a full store has queued entries
                return
            tracked, table, key = queue.popleft()
            entry = table.get(key)
            if entry is None:
                continue  # already gone
            if entry[0] > tracked and tries:
                tries -= 1
                queue.append((entry[0], table, key))
                continue
            del table[key]
            return

    def _sweep(self, now: float) -> None:
        budget = (
            len(self._fixed) + len(self._logs) + len(self._windows) + len(self._counters)
        ) >> _SWEEP_SHIFT
        budget = _SWEEP_MIN if budget < _SWEEP_MIN else min(budget, _SWEEP_MAX)
        next_due = math.inf
        for queue in self._queues.values():
            while queue and budget:
                expires, table, key = queue[0]
                if expires > now:
                    break
                queue.popleft()
                budget -= 1
                entry = table.get(key)
                if entry is None:
                    continue
                if entry[0] <= now:
                    del table[key]
                else:  # renewed since it was queued: queue it again
                    queue.append((entry[0], table, key))
            if queue and queue[0][0] < next_due:
                next_due = queue[0][0]
        self._next_due = next_due

    # --- the rate limiter's path: every quota of a policy at once --------------------

    def fixed_window(self, key: str, quotas: Sequence[Quota], cost: int, now: float) -> Verdict:
        """Fixed windows aligned on the clock (`floor(now / window)`): count `cost`.

        Admitted only if every quota has room for `cost`; a refused request
        is counted by none of them.
        """
        if now >= self._next_due:
            self._sweep(now)
        table = self._fixed
        if len(quotas) == 1:  # the usual policy, without the loops
            quota = quotas[0]
            slot = (quota.uid, key)
            entry = table.get(slot)
            if entry is None:
                window = quota.window
                entry = table[slot] = [(now // window + 1) * window, 0]
                self._track(window, entry[0], table, slot)
            elif now >= entry[0]:
                window = quota.window
                entry[0] = (now // window + 1) * window
                entry[1] = 0
            wait = entry[0] - now
            if entry[1] + cost > quota.amount:
                return Verdict(False, (entry[1],), (wait,), wait, (0,))
            entry[1] += cost
            return Verdict(True, (entry[1],), (wait,))
        entries = []
        violated: list[int] = []
        retry = 0.0
        for index, quota in enumerate(quotas):
            slot = (quota.uid, key)
            entry = table.get(slot)
            if entry is None:
                window = quota.window
                entry = table[slot] = [(now // window + 1) * window, 0]
                self._track(window, entry[0], table, slot)
            elif now >= entry[0]:
                window = quota.window
                entry[0] = (now // window + 1) * window
                entry[1] = 0
            if entry[1] + cost > quota.amount:
                violated.append(index)
                wait = entry[0] - now
                if wait > retry:
                    retry = wait
            entries.append(entry)
        if violated:
            return Verdict(
                False,
                tuple([entry[1] for entry in entries]),
                tuple([entry[0] - now for entry in entries]),
                retry,
                tuple(violated),
            )
        for entry in entries:
            entry[1] += cost
        return Verdict(
            True,
            tuple([entry[1] for entry in entries]),
            tuple([entry[0] - now for entry in entries]),
        )

    def moving_window(self, key: str, quotas: Sequence[Quota], cost: int, now: float) -> Verdict:
        """Moving windows: a log of hits per key, each counted for `window` seconds."""
        if now >= self._next_due:
            self._sweep(now)
        table = self._logs
        entries = []
        violated: list[int] = []
        retry = 0.0
        for index, quota in enumerate(quotas):
            slot = (quota.uid, key)
            entry = table.get(slot)
            window = quota.window
            if entry is None:
                entry = table[slot] = [now + window, deque(), 0]
                self._track(window, entry[0], table, slot)
            else:
                _expire_log(entry, now - window)
            if entry[2] + cost > quota.amount:
                violated.append(index)
                wait = _log_wait(entry[1], entry[2] + cost - quota.amount) + window - now
                if wait > retry:
                    retry = wait
            entries.append(entry)
        if not violated:
            for entry, quota in zip(entries, quotas, strict=True):
                entry[1].append((now, cost))
                entry[2] += cost
                entry[0] = now + quota.window
        return Verdict(
            not violated,
            tuple([entry[2] for entry in entries]),
            tuple(
                [
                    entry[1][0][0] + quota.window - now if entry[1] else 0.0
                    for entry, quota in zip(entries, quotas, strict=True)
                ]
            ),
            retry,
            tuple(violated),
        )

    def sliding_window_counter(
        self, key: str, quotas: Sequence[Quota], cost: int, now: float
    ) -> Verdict:
        """Sliding window counters: this window's count plus the last one's, weighted.

        As `limits` defines it: the weighted count is `previous * (time left
        in this window) / window + current`, and a request is admitted when
        its floor plus `cost` stays within the amount.
        """
        if now >= self._next_due:
            self._sweep(now)
        table = self._windows
        entries = []
        violated: list[int] = []
        retry = 0.0
        for index, quota in enumerate(quotas):
            slot = (quota.uid, key)
            window = quota.window
            entry = _window_entry(table, slot, window, now)
            if entry[0] < 0:  # new
                entry[0] = (entry[1] + 2) * window
                self._track(window, entry[0], table, slot)
            until_end = (entry[1] + 1) * window - now
            weighted = entry[3] * until_end / window + entry[2]
            if math.floor(weighted) + cost > quota.amount:
                violated.append(index)
                wait = sliding_wait(entry[3], entry[2], window, until_end, quota.amount - cost + 1)
                if wait > retry:
                    retry = wait
            entries.append((entry, until_end))
        if not violated:
            for entry, _ in entries:
                entry[2] += cost
        used = []
        reset = []
        for (entry, until_end), quota in zip(entries, quotas, strict=True):
            count = math.floor(entry[3] * until_end / quota.window + entry[2])
            used.append(count)
            reset.append(
                sliding_wait(entry[3], entry[2], quota.window, until_end, count) if count else 0.0
            )
        return Verdict(not violated, tuple(used), tuple(reset), retry, tuple(violated))

    # --- limits' async storage API ---------------------------------------------------

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
        _expire_log(entry, now - expiry)
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
        entry = _window_entry(self._windows, ("", key), expiry, now)
        until_end = (entry[1] + 1) * expiry - now
        previous = int(entry[3])
        return previous, until_end if previous else 0.0, int(entry[2]), until_end + expiry

    async def clear_sliding_window(self, key: str, expiry: int) -> None:
        """Forget the sliding window counters of `key`."""
        self._windows.pop(("", key), None)


def _expire_log(entry: list[Any], horizon: float) -> None:
    log: deque[tuple[float, int]] = entry[1]
    while log and log[0][0] <= horizon:
        entry[2] -= log.popleft()[1]


def _log_wait(log: deque[tuple[float, int]], needed: int) -> float:
    """The time of the hit whose expiry frees `needed` units (oldest first)."""
    freed = 0
    for at, cost in log:
        freed += cost
        if freed >= needed:
            return at
    return math.inf  # pragma: no cover - needed never exceeds the log's total


def _window_entry(table: _Table, slot: Hashable, window: int, now: float) -> list[Any]:
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
