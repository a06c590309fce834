"""Stores over the network: apiguard's Redis client or `limits`' async storages.

Every kind connects lazily, on the first call in an event loop (a layer's
`__init__` has no side effects), and again in a new loop (a client is bound
to the loop it was made in). Every call has a deadline (`asyncio.timeout`
around `limits`' storages; the RESP client's own deadline timer for
single-node Redis, which includes connecting), goes through the store's
[`StoreBreaker`][apiguard.storage.StoreBreaker], and any failure comes out
as one [`StorageError`][apiguard.StorageError].
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from limits.aio.storage import Storage
from limits.storage import storage_from_string

from apiguard._clock import clock
from apiguard.errors import StorageError
from apiguard.storage._base import (
    FIXED_WINDOW,
    MOVING_WINDOW,
    SLIDING_WINDOW_COUNTER,
    Quota,
    Strategy,
    Verdict,
)
from apiguard.storage._guard import StoreBreaker
from apiguard.storage._resp import Endpoint, RespClient, Script
from apiguard.storage._scripts import (
    _CODES,
    _COSTS,
    _INCRBY,
    _NX,
    _SET,
    _ZERO_PX,
    SCRIPTS,
    _bulk,
    _encode,
    _encode_policy,
    _Encoded,
    _fixed_keys,
    _fixed_tail,
    _fixed_verdict,
    _parse_reply,
    _sliding_args,
    _ttl_ms,
)

__all__ = ["LimitsStore", "RedisStore", "RemoteStore"]

Acquire = Callable[[str, Sequence[Quota], int], Awaitable[Verdict]]


class RemoteStore:
    """A store reached over the network: lazy client, timeouts, breaker.

    Args:
        uri: The `limits` async storage URI (`async+redis://...`).
        display: The URI as given, password redacted, for logs and errors.
        timeout: Seconds a store call may take before it counts as failed.
        options: Keyword options for the `limits` storage.
    """

    def __init__(self, uri: str, display: str, timeout: float, options: dict[str, Any]) -> None:
        self.uri = uri
        self.display = display
        self.timeout = timeout
        self.options = options
        self.breaker = StoreBreaker(display, probe_timeout=max(2 * timeout, 0.5))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._storage: Storage | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.display})"

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
            self._connected(storage)
        return self._storage

    def _options(self) -> dict[str, Any]:
        """Hook: the `limits` storage's options for a new client."""
        return self.options

    def _connected(self, storage: Storage) -> None:
        """Hook: prepare what the store needs on a new client (scripts)."""

    async def aclose(self) -> None:
        """Close the client's connections (at shutdown); the next call reconnects."""
        storage, self._storage, self._loop = self._storage, None, None
        bridge = getattr(storage, "bridge", None)
        if bridge is not None:
            client = bridge.get_connection()
            await client.aclose()
            pool = getattr(client, "connection_pool", None)
            if pool is not None:  # a pool passed in is not closed by the client
                await pool.disconnect()

    def acquirer(self, strategy: Strategy) -> Acquire:
        """The guarded `acquire(key, quotas, cost)` of `strategy`."""
        call = self._call(strategy)
        breaker = self.breaker
        timeout = self.timeout

        async def acquire(key: str, quotas: Sequence[Quota], cost: int) -> Verdict:
            if not breaker.allow():
                raise StorageError(f"{self.display}: breaker open")
            try:
                async with asyncio.timeout(timeout):
                    verdict = await call(key, quotas, cost)
            except asyncio.CancelledError:
                # Our timeout is a TimeoutError; a cancellation is the
                # request's own (client gone): not the store's fault.
                raise
            except Exception as exc:
                breaker.failure(exc)
                raise StorageError(f"{self.display}: {type(exc).__name__}") from exc
            breaker.success()
            return verdict

        return acquire

    def _call(self, strategy: Strategy) -> Acquire:  # pragma: no cover - interface
        raise NotImplementedError


class RedisStore(RemoteStore):
    """Redis: apiguard's own client for one node, redis-py for cluster and sentinel.

    A single node (`redis://`, `rediss://`, `redis+unix://` and their
    `valkey` forms) is served by apiguard's RESP client
    ([`RespClient`][apiguard.storage._resp.RespClient]): one multiplexed,
    pipelined connection per event loop, timeouts without a timer per call:
    a PING costs about what it does on a raw socket (27 µs against 67 µs
    on redis-py, loopback, `python -m benchmarks ratelimit`). Cluster, sentinel, and a
    URI with an option that client does not know go through `limits`'
    storage with the redis-py client, as before. Either way apiguard runs
    its own scripts, so that each request is one round trip that checks and
    counts every quota atomically and returns the figures the headers need
    (`limits`' `hit()` answers only yes or no).

    Args:
        uri: The `limits` async storage URI (`async+redis://...`).
        display: The URI as given, password redacted, for logs and errors.
        timeout: Seconds a store call may take before it counts as failed.
        options: Keyword options for the `limits` storage (redis-py path).
        endpoint: The node for apiguard's client; `None` for redis-py.
    """

    #: Connections per process on the redis-py path. redis-py's default
    #: pool refuses a 101st concurrent command at once (MaxConnectionsError):
    #: under a burst that would read as a store failure and fail open. A
    #: blocking pool makes a request wait for a free connection instead,
    #: within the store timeout.
    MAX_CONNECTIONS: Final = 100

    def __init__(
        self,
        uri: str,
        display: str,
        timeout: float,
        options: dict[str, Any],
        endpoint: Endpoint | None = None,
    ) -> None:
        super().__init__(uri, display, timeout, options)
        self.endpoint = endpoint
        self._client: RespClient | None = None

    def client(self) -> RespClient:
        """The RESP client of the running event loop, made on first use (no I/O)."""
        loop = asyncio.get_running_loop()
        client = self._client
        if client is None or client.loop is not loop:
            if self.endpoint is None:
                msg = f"{self.display} is served by redis-py"
                raise StorageError(msg)
            client = self._client = RespClient(self.endpoint, timeout=self.timeout)
        return client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None and client.loop is asyncio.get_running_loop():
            await client.aclose()
        await super().aclose()

    def acquirer(self, strategy: Strategy) -> Acquire:
        if self.endpoint is None:
            return super().acquirer(strategy)
        return self._fast_acquirer(strategy)

    def _fast_acquirer(self, strategy: Strategy) -> Acquire:
        """`acquire` through apiguard's client: the deadline is the client's own."""
        breaker = self.breaker
        display = self.display
        script = Script(SCRIPTS[strategy])
        code = _CODES[strategy].encode()
        fixed = strategy == FIXED_WINDOW
        sliding = strategy == SLIDING_WINDOW_COUNTER
        # Per policy (its quotas tuple lives as long as the layer): the key
        # suffixes and the encoded arguments, built on first use.
        encoded: dict[int, _Encoded] = {}
        open_error = f"{display}: breaker open"

        async def acquire(key: str, quotas: Sequence[Quota], cost: int) -> Verdict:
            if not breaker.allow():
                raise StorageError(open_error)
            entry = encoded.get(id(quotas))
            if entry is None or entry[0] is not quotas:
                entry = encoded[id(quotas)] = _encode_policy(quotas, code)
            client = self._client
            if client is None or client.loop is not asyncio.get_running_loop():
                client = self.client()
            try:
                # One hash tag for every quota of the request: one cluster
                # slot. Redis keys are bytes: "surrogatepass" encodes any str
                # (an unpaired surrogate from a token's `sub`) and never
                # raises, and is one-to-one, so no two keys meet.
                tagged = b"apiguard:{%b}:" % key.encode("utf-8", "surrogatepass")
                if sliding:
                    keys, arguments = _sliding_args(key, quotas, cost, clock.time())
                    count = len(quotas)
                    reply = await client.evalsha(
                        script, 2 * count, _encode(keys, arguments), 6 * count + 1
                    )
                    verdict = _parse_reply(reply, count)
                elif not fixed:
                    parts = [
                        b"$%d\r\n%b%b\r\n" % (len(tagged) + len(suffix), tagged, suffix)
                        for suffix in entry[1]
                    ]
                    parts.append(_COSTS[cost] if cost < len(_COSTS) else _bulk(cost))
                    parts.append(entry[2])
                    count = len(quotas)
                    reply = await client.evalsha(script, count, b"".join(parts), 3 * count + 1)
                    verdict = _parse_reply(reply, count)
                elif cost == 1 and len(quotas) == 1:
                    # The common case: one quota, one unit: no script. One
                    # write, one round trip: `SET counter 0 PX ttl NX` (makes
                    # the window's counter with its expiry, or does nothing),
                    # then `INCRBY counter 1`, whose reply is the count. The
                    # expiry never depends on reading a reply: were the
                    # replies late (Redis stalled past the deadline) or lost,
                    # Redis still ran both, and no counter lives forever.
                    quota = quotas[0]
                    now = clock.time()
                    index = now // quota.window
                    reset = (index + 1) * quota.window - now
                    name = b"%b%b:%d" % (tagged, entry[1][0], index)
                    size = b"%d" % len(name)
                    ttl = b"%d" % _ttl_ms(reset)
                    payload = b"%b%b\r\n%b\r\n%b$%d\r\n%b\r\n%b%b%b\r\n%b\r\n$1\r\n1\r\n" % (
                        _SET,
                        size,
                        name,
                        _ZERO_PX,
                        len(ttl),
                        ttl,
                        _NX,
                        _INCRBY,
                        size,
                        name,
                    )
                    future = client.submit(payload, 1)
                    count = await (
                        future if future is not None else client.execute(payload, skip=1)
                    )
                    if type(count) is not int:
                        raise count  # an error reply (WRONGTYPE, OOM, ...)
                    if count <= quota.amount:
                        verdict = Verdict(True, (count,), (reset,))
                    else:
                        # Only a full window refuses a one-unit request, so the
                        # unit it added changes no decision: no DECRBY needed.
                        verdict = Verdict(False, (quota.amount,), (reset,), reset, (0,))
                else:
                    tail, resets = _fixed_tail(entry, tagged, cost, clock.time())
                    counts = await client.evalsha(script, len(quotas), tail, 3 * len(quotas) + 1)
                    verdict = _fixed_verdict(counts, quotas, cost, resets)
            except asyncio.CancelledError:
                raise  # the request's own cancellation (client gone): not the store's fault
            except Exception as exc:
                breaker.failure(exc)
                raise StorageError(f"{display}: {type(exc).__name__}") from exc
            if breaker.failures:  # the first success after failures closes the breaker
                breaker.success()
            return verdict

        return acquire

    # --- the redis-py path ----------------------------------------------------------

    def _options(self) -> dict[str, Any]:
        if "+cluster" in self.uri or "+sentinel" in self.uri:
            return self.options
        from redis.asyncio import BlockingConnectionPool

        options = dict(self.options)
        url = self.uri.removeprefix("async+").replace("redis+unix", "unix")
        options["connection_pool"] = BlockingConnectionPool.from_url(
            url.replace("valkey+unix", "unix"),
            max_connections=self.MAX_CONNECTIONS,
            timeout=self.timeout,
            socket_timeout=options.pop("socket_timeout", None),
            socket_connect_timeout=options.pop("socket_connect_timeout", None),
            retry=options.pop("retry", None),
        )
        return options

    def _connected(self, storage: Storage) -> None:
        bridge: Any = storage.bridge  # type: ignore[attr-defined]
        client = bridge.get_connection()  # the primary: rate decisions never read replicas
        self._scripts = {name: client.register_script(text) for name, text in SCRIPTS.items()}

    def _call(self, strategy: Strategy) -> Acquire:
        # Each strategy keeps its own keys and data types (strings, sorted
        # sets): the strategy is in the key, so that changing it never meets
        # WRONGTYPE.
        code = _CODES[strategy]

        async def call(key: str, quotas: Sequence[Quota], cost: int) -> Verdict:
            self.storage()
            script = self._scripts[strategy]
            args: list[int] = [cost]
            if strategy == FIXED_WINDOW:
                keys, resets = _fixed_keys(key, quotas, clock.time())
                for quota, reset in zip(quotas, resets, strict=True):
                    args += (quota.amount, _ttl_ms(reset))
                counts = await script(keys=_raw(keys), args=args)
                return _fixed_verdict([int(c) for c in counts], quotas, cost, resets)
            if strategy == SLIDING_WINDOW_COUNTER:
                keys, args = _sliding_args(key, quotas, cost, clock.time())
                return _parse_reply(await script(keys=_raw(keys), args=args), len(quotas))
            # One hash tag for every quota of the request: one cluster slot.
            keys = [f"apiguard:{{{key}}}:{code}:{quota.uid}" for quota in quotas]
            for quota in quotas:
                args += (quota.amount, quota.window * 1000)
            reply = await script(keys=_raw(keys), args=args)
            return _parse_reply(reply, len(quotas))

        return call


def _raw(keys: list[str]) -> list[bytes]:
    """Keys as bytes for redis-py, which would encode them strictly (and raise)."""
    return [name.encode("utf-8", "surrogatepass") for name in keys]


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
    """

    def _call(self, strategy: Strategy) -> Acquire:
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
            name = f"apiguard/{quota.uid}/{key}/{int(start)}"
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
            name = f"apiguard/{quota.uid}/{key}"
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
        from apiguard.storage._base import sliding_wait

        storage: Any = self.storage()
        used: list[int] = []
        reset: list[float] = []
        admitted = True
        violated: tuple[int, ...] = ()
        retry = 0.0
        for index, quota in enumerate(quotas):
            name = f"apiguard/{quota.uid}/{key}"
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
