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
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from limits.aio.storage import MovingWindowSupport, SlidingWindowCounterSupport, Storage

from apiguard._clock import clock
from apiguard.errors import ConfigError
from apiguard.storage._base import Quota, Strategy, Verdict, sliding_wait
from apiguard.storage._memory_kv import DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, MemoryKeyValue
from apiguard.storage._memory_limits import LimitsAPI, expire_log, log_wait, window_entry

#: Builds a `Verdict` from its five fields without the named tuple's Python-level `__new__`.
_new = tuple.__new__

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


class MemoryStorage(LimitsAPI, Storage, MovingWindowSupport, SlidingWindowCounterSupport):
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
            `?max_keys=N`, `max_kv_entries=N`, `max_kv_bytes=N`.
        wrap_exceptions: As for every `limits` storage; this one raises none.
        max_keys: Rate-limit entries held at most (one per client and
            quota); the URI's `max_keys` wins when given.
        max_kv_entries: Entries of the key-value part held at most
            (idempotency keys, stale responses); live claims are never evicted.
        max_kv_bytes: Bytes of keys and values the key-value part holds at most.

    Raises:
        ConfigError: a bound is not a whole number >= 1, or the URI has
            another option.
    """

    STORAGE_SCHEME = ["async+apiguard-memory"]  # noqa: RUF012 - limits' registry reads it

    def __init__(
        self,
        uri: str | None = None,
        wrap_exceptions: bool = False,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        max_kv_entries: int = DEFAULT_MAX_ENTRIES,
        max_kv_bytes: int = DEFAULT_MAX_BYTES,
        **_: Any,
    ) -> None:
        shown = uri or "memory://"
        given: dict[str, object] = {
            "max_keys": max_keys,
            "max_kv_entries": max_kv_entries,
            "max_kv_bytes": max_kv_bytes,
        }
        if uri:
            query = parse_qs(urlsplit(uri).query, keep_blank_values=True)
            for option, values in query.items():
                if option not in given:
                    known = ", ".join(given)
                    msg = f"storage {shown!r} has an unknown option {option!r} (known: {known})"
                    raise ConfigError(msg)
                text = values[-1]
                given[option] = int(text) if text.isdigit() else text
        for option, value in given.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                msg = f"storage {shown!r}: {option} {value!r} is not a whole number >= 1"
                raise ConfigError(msg)
        super().__init__(uri, wrap_exceptions=wrap_exceptions)
        self._display = shown
        self.max_keys: int = given["max_keys"]  # type: ignore[assignment]
        self.max_kv_entries: int = given["max_kv_entries"]  # type: ignore[assignment]
        self.max_kv_bytes: int = given["max_kv_bytes"]  # type: ignore[assignment]
        self._kv: MemoryKeyValue | None = None
        self._full_logged = False
        self._fixed: _Table = {}  # (uid, key) -> [end of window, count]
        self._logs: _Table = {}  # moving window: key -> [expires, deque[(t, cost)], total]
        self._windows: _Table = {}  # sliding counter: key -> [expires, index, current, previous]
        self._counters: _Table = {}  # limits' incr(): key -> [expires, count]
        self._queues: dict[float, deque[tuple[float, _Table, Hashable]]] = {}
        self._next_due = math.inf

    def __repr__(self) -> str:
        return f"MemoryStorage({self._display!r})"

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        """What `limits` would wrap: this store raises nothing of its own."""
        return ValueError

    def __len__(self) -> int:
        """The number of entries held, live or not yet swept."""
        return len(self._fixed) + len(self._logs) + len(self._windows) + len(self._counters)

    # --- the store protocol ----------------------------------------------------------

    @property
    def display(self) -> str:
        """How the store is named in logs and the policy report."""
        return self._display

    @property
    def kv(self) -> MemoryKeyValue:
        """The key-value part: claims and values in this process (made on first use)."""
        kv = self._kv
        if kv is None:
            kv = self._kv = MemoryKeyValue(
                max_entries=self.max_kv_entries, max_bytes=self.max_kv_bytes
            )
        return kv

    def limiter(self, strategy: Strategy) -> Callable[..., Verdict]:
        """The atomic hit of a policy's quotas: answers at once, never awaits."""
        return {
            "fixed-window": self.fixed_window,
            "moving-window": self.moving_window,
            "sliding-window-counter": self.sliding_window_counter,
        }[strategy]

    async def open(self) -> None:
        """Nothing to connect."""

    async def aclose(self) -> None:
        """Nothing to close."""

    async def ping(self, timeout: float | None = None) -> None:
        """Always there: this process's memory."""

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

    def fixed_window(
        self, key: str, quotas: Sequence[Quota], cost: int, now: float | None = None
    ) -> Verdict:
        """Fixed windows aligned on the clock (`floor(now / window)`): count `cost`.

        Admitted only if every quota has room for `cost`; a refused request
        is counted by none of them.
        """
        if now is None:
            now = clock.time()
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
                return _new(Verdict, (False, (entry[1],), (wait,), wait, (0,)))
            entry[1] += cost
            return _new(Verdict, (True, (entry[1],), (wait,), 0.0, ()))
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

    def moving_window(
        self, key: str, quotas: Sequence[Quota], cost: int, now: float | None = None
    ) -> Verdict:
        """Moving windows: a log of hits per key, each counted for `window` seconds."""
        if now is None:
            now = clock.time()
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
                expire_log(entry, now - window)
            if entry[2] + cost > quota.amount:
                violated.append(index)
                wait = log_wait(entry[1], entry[2] + cost - quota.amount) + window - now
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
        self, key: str, quotas: Sequence[Quota], cost: int, now: float | None = None
    ) -> Verdict:
        """Sliding window counters: this window's count plus the last one's, weighted.

        As `limits` defines it: the weighted count is `previous * (time left
        in this window) / window + current`, and a request is admitted when
        its floor plus `cost` stays within the amount.
        """
        if now is None:
            now = clock.time()
        if now >= self._next_due:
            self._sweep(now)
        table = self._windows
        entries = []
        violated: list[int] = []
        retry = 0.0
        for index, quota in enumerate(quotas):
            slot = (quota.uid, key)
            window = quota.window
            entry = window_entry(table, slot, window, now)
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
        return _new(Verdict, (not violated, tuple(used), tuple(reset), retry, tuple(violated)))
