"""Load through real apps while a store fails over: who asked what, when, and what came back."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from apiguard.ratelimit import RateLimitMiddleware, by_header
from tests.ratelimit._helpers import client, limited_app, ratelimit

#: A limit no key reaches under load: every counted request is admitted.
LOAD_LIMIT = 1_000_000
#: Keys counted exactly after the failover, with a limit of their own.
EXACT_LIMIT = 10
#: The apps' store timeout, in seconds.
STORE_TIMEOUT = 0.25


@dataclass(frozen=True, slots=True)
class Record:
    """One request: which app (fail mode) and key, when, how long, and the answer."""

    mode: str
    key: str
    start: float
    elapsed: float
    status: int
    #: The rate limiter's reason on a 200 (`None`: counted; `"store-unavailable"`: not).
    reason: str | None
    retry_after: str | None
    content_type: str | None
    remaining: int | None = None


def failover_app(storage: str, mode: str, exact_keys: Iterable[str]) -> Any:
    """An app limited per `X-Client`, on `storage`, failing `mode` (open or closed)."""
    return limited_app(
        name=mode.removeprefix("fail-"),
        limit=f"{LOAD_LIMIT}/hour",
        key=by_header("x-client"),
        storage=storage,
        store_timeout=STORE_TIMEOUT,
        on_store_error=mode,
        overrides=dict.fromkeys(exact_keys, f"{EXACT_LIMIT}/hour"),
    )


async def one(http: httpx.AsyncClient, mode: str, key: str, origin: float) -> Record:
    start = time.perf_counter()
    response = await http.get("/orders", headers={"x-client": key})
    elapsed = time.perf_counter() - start
    reason = None
    left = None
    if response.status_code == 200:
        (decision,) = response.json()["decisions"]
        reason = decision["reason"]
        if reason is None:
            ((left, _),) = ratelimit(response).values()
    return Record(
        mode,
        key,
        start - origin,
        elapsed,
        response.status_code,
        reason,
        response.headers.get("retry-after"),
        response.headers.get("content-type"),
        left,
    )


class Load:
    """Workers sending requests for `keys` to every app, until stopped."""

    def __init__(self, apps: dict[str, Any], keys: Sequence[str], workers: int = 6) -> None:
        self.apps = apps
        self.clients = {mode: client(app) for mode, app in apps.items()}
        self.keys = keys
        self.workers = workers
        self.records: list[Record] = []
        self.origin = time.perf_counter()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def now(self) -> float:
        return time.perf_counter() - self.origin

    async def __aenter__(self) -> Load:
        for http in self.clients.values():
            await http.__aenter__()
        self._tasks = [asyncio.create_task(self._worker(n)) for n in range(self.workers)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        for http in self.clients.values():
            await http.__aexit__(None, None, None)
        for app in self.apps.values():  # no lifespan ran: close what the requests opened
            layer = app.middleware_stack
            while layer is not None:
                if isinstance(layer, RateLimitMiddleware):
                    await layer.aclose()
                layer = getattr(layer, "app", None)

    async def stop(self) -> None:
        """Stop the workers (the clients stay open for more requests)."""
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _worker(self, number: int) -> None:
        keys = itertools.cycle(self.keys[number :: self.workers] or self.keys)
        while not self._stop.is_set():
            key = next(keys)
            for mode, http in self.clients.items():
                self.records.append(await one(http, mode, key, self.origin))
            await asyncio.sleep(0.005)

    async def until_counted(self, keys: Sequence[str], within: float = 30.0) -> float:
        """Poll until a request for each of `keys` is counted by every app; the time it took."""
        start = self.now()
        pending = {(mode, key) for mode in self.clients for key in keys}
        while pending:
            if self.now() - start > within:
                raise AssertionError(f"not counted again after {within} s: {sorted(pending)}")
            for mode, key in sorted(pending):
                record = await one(self.clients[mode], mode, key, self.origin)
                self.records.append(record)
                if record.status == 200 and record.reason is None:
                    pending.discard((mode, key))
            await asyncio.sleep(0.05)
        return self.now() - start

    async def exact(self, key: str, requests: int = 3 * EXACT_LIMIT) -> dict[str, list[int]]:
        """`requests` requests at once for `key`, per app: the statuses, in order."""
        out = {}
        for mode, http in self.clients.items():
            responses = await asyncio.gather(
                *(http.get("/orders", headers={"x-client": key}) for _ in range(requests))
            )
            out[mode] = sorted(r.status_code for r in responses)
        return out

    async def remaining(self, mode: str, key: str) -> int:
        """What the app's limiter says is left for `key`, after one more request."""
        response = await self.clients[mode].get("/orders", headers={"x-client": key})
        ((left, _),) = ratelimit(response).values()
        return left
