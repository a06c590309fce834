"""Stores over the network: what they share, and `limits`' own storages.

Every remote store connects at lifespan start-up ([`open`][apiguard.storage.Store.open]),
or on first use where no lifespan runs, and again in a new event loop (a
client is bound to the loop it was made in). Every call has a deadline (the
store's timeout, or less when the caller has less time left), goes through
the store's [`StoreBreaker`][apiguard.storage.StoreBreaker], and any failure
comes out as one [`StorageError`][apiguard.StorageError] that says how long
until the store is tried again.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from limits.aio.storage import Storage
from limits.storage import storage_from_string

from apiguard._clock import clock
from apiguard.errors import StorageError
from apiguard.storage._base import (
    FIXED_WINDOW,
    MOVING_WINDOW,
    Acquire,
    KeyValueStore,
    Quota,
    Strategy,
    Verdict,
    sliding_wait,
)
from apiguard.storage._guard import StoreBreaker, reason
from apiguard.storage._keys import limits_key
from apiguard.storage._redis_options import CONNECT_TIMEOUT

__all__ = ["LimitsStore", "RemoteStore"]

logger = logging.getLogger("apiguard.storage")

T = TypeVar("T")


class RemoteStore:
    """A store reached over the network: lazy client, timeouts, breaker.

    The client of each event loop is built and connected once, on first use
    ([`open`][apiguard.storage.Store.open] at lifespan start-up, else the
    first call): the build (importing and constructing redis-py's client,
    synchronous) before any timeout starts, the connection within
    `connect_timeout`, shared by every caller that arrives meanwhile. Calls
    after that are bounded by the store timeout, reconnections included.

    Args:
        uri: The `limits` async storage URI (`async+redis://...`).
        display: The URI as given, password redacted, for logs and errors.
        timeout: Seconds a store call may take before it counts as failed.
        options: Keyword options for the `limits` storage.
        connect_timeout: Seconds the first connection of an event loop may take.
        max_connections: Calls in flight per event loop, when bounded (the
            redis-py pools of Cluster and Sentinel refuse a command beyond
            their size at once; a call waits for a slot instead, within its
            timeout); `None`: unbounded.
    """

    #: The key-value part; `None` where the store cannot claim atomically.
    kv: KeyValueStore | None = None

    def __init__(
        self,
        uri: str,
        display: str,
        timeout: float,
        options: dict[str, Any],
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        max_connections: int | None = None,
    ) -> None:
        self.uri = uri
        self.display = display
        self.timeout = timeout
        self.options = options
        self.connect_timeout = max(connect_timeout, timeout)
        self.max_connections = max_connections
        self.breaker = StoreBreaker(display, probe_timeout=max(2 * timeout, 0.5))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._storage: Storage | None = None
        self._bound: asyncio.Semaphore | None = None
        #: The event loop whose first connection was tried (made or failed).
        self._warm: asyncio.AbstractEventLoop | None = None
        self._warming: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.display})"

    # --- connections -----------------------------------------------------------------

    def storage(self) -> Storage:
        """The `limits` storage of the running event loop, made on first use."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._storage is None:
            storage = storage_from_string(self.uri, wrap_exceptions=True, **self._options())
            if not isinstance(storage, Storage):  # pragma: no cover - URIs are async+ ones
                msg = f"{self.display} is not an async storage"
                raise StorageError(msg)
            self._storage = storage
            self._loop = loop
            if self.max_connections is not None:
                self._bound = asyncio.Semaphore(self.max_connections)
            self._connected(storage)
        return self._storage

    def _options(self) -> dict[str, Any]:
        """Hook: the `limits` storage's options for a new client."""
        return self.options

    def _connected(self, storage: Storage) -> None:
        """Hook: prepare what the store needs on a new client (scripts)."""

    def _build(self) -> None:
        """Hook: build the client of the running loop (synchronous, no I/O)."""
        self.storage()

    async def _connect(self) -> None:
        """Hook: reach the store once; raise what went wrong."""
        if not await self.storage().check():
            msg = "the store did not answer its health check"
            raise StorageError(msg)

    async def warm_up(self) -> None:
        """Build and connect this event loop's client, once; shared by concurrent callers.

        The build runs before any timeout (it cannot be interrupted), the
        connection within `connect_timeout`. Raises what the connection
        raised; either way, later calls are bounded by the store timeout.
        """
        loop = asyncio.get_running_loop()
        task = self._warming
        if task is None or task.get_loop() is not loop or task.done():
            self._build()
            task = self._warming = loop.create_task(self._warm_up(loop))
            task.add_done_callback(_retrieve)
        await asyncio.shield(task)

    async def _warm_up(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self._connect()
        except TimeoutError:
            msg = f"not connected within connect_timeout ({self.connect_timeout:g} s)"
            raise TimeoutError(msg) from None
        finally:
            self._warm = loop

    async def open(self) -> None:
        """Build the client and reach the store now, at start-up; log (never raise) a failure."""
        try:
            await self.warm_up()
        except Exception as exc:
            logger.warning(
                "apiguard: store %s is not reachable at start-up (%s)%s; requests follow "
                "their layer's fail mode until it is",
                self.display,
                reason(exc),
                self._advice(exc),
            )

    def _advice(self, exc: BaseException) -> str:
        """Hook: what to check, after a failure at start-up."""
        return ""

    async def aclose(self) -> None:
        """Close the client's connections (at shutdown); the next call reconnects."""
        task, self._warming = self._warming, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])
        self._warm = None  # the next call connects as a first one
        storage, self._storage, self._loop = self._storage, None, None
        bridge = getattr(storage, "bridge", None)
        if bridge is None:
            return
        clients = [bridge.get_connection()]
        # Sentinel: the replica's client, and one client per sentinel process
        # (asked for the primary's address), each with connections of its own.
        replica = getattr(bridge, "storage_replica", None)
        if replica is not None:
            clients.append(replica)
        sentinel = getattr(bridge, "sentinel", None)
        if sentinel is not None:
            clients += sentinel.sentinels
        for client in clients:
            await client.aclose()
            pool = getattr(client, "connection_pool", None)
            if pool is not None:  # a pool passed in is not closed by the client
                await pool.disconnect()

    # --- guarded calls ---------------------------------------------------------------

    def _deadline(self, breaker: StoreBreaker) -> StorageError:
        return StorageError(
            f"{self.display}: the request's deadline ran out",
            retry_after=breaker.retry_after(),
            state=breaker.state,
            failures=breaker.failures,
        )

    def breaker_for(self, key: bytes) -> StoreBreaker:
        """The breaker that guards calls on `key` (one for the whole store by default)."""
        return self.breaker

    def refused(self, breaker: StoreBreaker | None = None) -> StorageError:
        """The error of a call the open breaker refused."""
        breaker = breaker or self.breaker
        return StorageError(
            f"{breaker.store}: breaker open",
            retry_after=breaker.retry_after(),
            state=breaker.state,
            failures=breaker.failures,
        )

    def failed(self, exc: BaseException, breaker: StoreBreaker | None = None) -> StorageError:
        """Count a failure with the breaker; the `StorageError` that says so."""
        breaker = breaker or self.breaker
        breaker.failure(exc)
        return StorageError(
            f"{breaker.store}: {reason(exc)}",
            retry_after=breaker.retry_after(),
            state=breaker.state,
            failures=breaker.failures,
        )

    async def guarded(
        self,
        call: Callable[[], Awaitable[T]],
        timeout: float | None = None,
        breaker: StoreBreaker | None = None,
    ) -> T:
        """Run `call` within the store's timeout (or `timeout` if less), the breaker first.

        The first call of an event loop connects first (`warm_up`), within
        the connect timeout rather than the call's. A `timeout` shorter than
        the store's is the request's deadline: when it runs out (or has
        already), the `StorageError` says so, and the breaker does not count
        it against the store, which did nothing wrong.
        """
        breaker = breaker or self.breaker
        shortened = timeout is not None and timeout < self.timeout
        if shortened and timeout <= 0:  # type: ignore[operator]
            raise self._deadline(breaker)
        if not breaker.allow():
            raise self.refused(breaker)
        if self._warm is not asyncio.get_running_loop():
            try:
                await self.warm_up()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise self.failed(exc, breaker) from exc
        limit = timeout if shortened else self.timeout
        bound = self._bound
        try:
            async with asyncio.timeout(limit) as window:
                if bound is None:
                    result = await call()
                else:
                    # A slot per connection: wait for one within the call's
                    # timeout, rather than fail at once on a full pool.
                    async with bound:
                        result = await call()
        except asyncio.CancelledError:
            # Our timeout is a TimeoutError; a cancellation is the request's
            # own (client gone): not the store's fault.
            raise
        except TimeoutError as exc:
            if shortened and window.expired():
                # Not the store's fault. (A half-open probe cut short proves
                # nothing either way: the breaker's probe timeout frees it.)
                raise self._deadline(breaker) from exc
            raise self.failed(exc, breaker) from exc
        except Exception as exc:
            raise self.failed(exc, breaker) from exc
        if breaker.failures:  # the first success after failures closes the breaker
            breaker.success()
        return result

    async def ping(self, timeout: float | None = None) -> None:
        """Reach the store once, within its timeout (or `timeout` if less) and through its breaker.

        Raises:
            StorageError: the store failed, timed out, or its breaker is open.
        """
        await self.guarded(self._ping, timeout)

    async def _ping(self) -> None:
        """Hook: one round trip to the store."""
        if not await self.storage().check():
            msg = "the store did not answer its health check"
            raise StorageError(msg)

    def limiter(self, strategy: Strategy) -> Acquire:
        """The guarded `acquire(key, quotas, cost)` of `strategy`."""
        call = self._call(strategy)
        guarded = self.guarded

        async def acquire(key: str, quotas: Sequence[Quota], cost: int) -> Verdict:
            return await guarded(lambda: call(key, quotas, cost))

        return acquire

    def _call(
        self, strategy: Strategy
    ) -> Callable[[str, Sequence[Quota], int], Awaitable[Verdict]]:  # pragma: no cover
        raise NotImplementedError


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark a warm-up's failure as seen: each waiting caller got it already."""
    if not task.cancelled():
        task.exception()


class LimitsStore(RemoteStore):
    """Any other `limits` async storage (memcached, MongoDB, ...), through its API.

    Round trips per quota: one `incr` for the fixed window (two when a
    refusal is rolled back), the strategy's `acquire` plus its window read
    for the moving window and the sliding window counter. Fixed windows are
    aligned on apiguard's clock, as with the other stores. Several quotas are
    counted one after the other: a refusal takes back the fixed-window
    counts already made; a moving or sliding window cannot be taken back
    through `limits`' API, so with those strategies an earlier quota of a
    multi-quota policy keeps a hit a later quota refused.

    No key-value part (`kv` is `None`): `limits`' API has no atomic
    compare-and-set, so a claim could be won twice.
    """

    def _call(
        self, strategy: Strategy
    ) -> Callable[[str, Sequence[Quota], int], Awaitable[Verdict]]:
        if strategy == FIXED_WINDOW:
            return self._fixed
        if strategy == MOVING_WINDOW:
            return self._moving
        return self._sliding

    async def _fixed(self, key: str, quotas: Sequence[Quota], cost: int) -> Verdict:
        storage = self.storage()
        now = clock.time()
        done: list[tuple[str, int]] = []
        used: list[int] = []
        reset: list[float] = []
        for index, quota in enumerate(quotas):
            window = quota.window
            start = now // window
            name = f"{limits_key(quota.uid, key)}/{int(start)}"
            count = await storage.incr(name, window, amount=cost)
            done.append((name, window))
            used.append(count)
            reset.append((start + 1) * window - now)
            if count > quota.amount:
                for undo, expiry in done:
                    await storage.incr(undo, expiry, amount=-cost)
                used = [u - cost for u in used]
                return Verdict(False, tuple(used), tuple(reset), reset[-1], (index,))
        return Verdict(True, tuple(used), tuple(reset))

    async def _moving(self, key: str, quotas: Sequence[Quota], cost: int) -> Verdict:
        storage: Any = self.storage()
        used: list[int] = []
        reset: list[float] = []
        admitted = True
        violated: tuple[int, ...] = ()
        retry = 0.0
        for index, quota in enumerate(quotas):
            name = limits_key(quota.uid, key)
            if admitted and not await storage.acquire_entry(name, quota.amount, quota.window, cost):
                admitted = False
                violated = (index,)
            oldest, count = await storage.get_moving_window(name, quota.amount, quota.window)
            now = clock.time()
            used.append(count)
            reset.append(max(oldest + quota.window - now, 0.0) if count else 0.0)
            if violated == (index,):
                retry = reset[-1]
        return Verdict(admitted, tuple(used), tuple(reset), retry, violated)

    async def _sliding(self, key: str, quotas: Sequence[Quota], cost: int) -> Verdict:
        storage: Any = self.storage()
        used: list[int] = []
        reset: list[float] = []
        admitted = True
        violated: tuple[int, ...] = ()
        retry = 0.0
        for index, quota in enumerate(quotas):
            name = limits_key(quota.uid, key)
            window = quota.window
            if admitted and not await storage.acquire_sliding_window_entry(
                name, quota.amount, window, cost
            ):
                admitted = False
                violated = (index,)
            previous, _, current, current_ttl = await storage.get_sliding_window(name, window)
            until_end = max(current_ttl - window, 0.0) if current_ttl else 0.0
            count = math.floor(previous * until_end / window + current)
            used.append(count)
            reset.append(sliding_wait(previous, current, window, until_end, count) if count else 0)
            if violated == (index,):
                retry = sliding_wait(previous, current, window, until_end, quota.amount - cost + 1)
        return Verdict(admitted, tuple(used), tuple(reset), retry, violated)
