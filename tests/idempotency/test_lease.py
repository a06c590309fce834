"""Time: stored responses and claims expire; a running request's lease is renewed.

The memory store reads the core clock, so `FrozenClock` moves its expiries;
Redis keeps real time, so the Redis tests use real, short TTLs and poll for
the expiry with a generous bound.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import anyio
import httpx
import pytest
import redis
from starlette.middleware import Middleware

from apiguard.idempotency._key import store_key
from apiguard.storage import open_store
from apiguard.testing import FrozenClock
from tests._servers import Uvicorn
from tests.idempotency._apps import CLIENT, DecisionLog, client, keyed, new_key, orders_app
from tests.idempotency.test_concurrency import both_workers_up, wait_for

pytestmark = pytest.mark.anyio


async def _until_it_runs(http: httpx.AsyncClient, key: str, bound: float) -> list[int]:
    """POST with `key` until the app runs (not 409, not a replay); the statuses on the way."""
    statuses: list[int] = []
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        answer = await http.post("/orders", headers=keyed(key))
        statuses.append(answer.status_code)
        if answer.status_code == 201 and "idempotent-replayed" not in answer.headers:
            return statuses
        await anyio.sleep(0.05)
    raise AssertionError(f"the key never ran again within {bound} s: {statuses[-10:]}")


# --- memory, on a frozen clock --------------------------------------------------------


async def test_a_stored_response_expires_after_ttl() -> None:
    app, _ = orders_app(ttl=3600)
    key = new_key()
    with FrozenClock() as clock:
        async with client(app) as http:
            await http.post("/orders", headers=keyed(key))
            clock.advance(3599)
            kept = await http.post("/orders", headers=keyed(key))
            clock.advance(2)
            expired = await http.post("/orders", headers=keyed(key))
    assert kept.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in expired.headers
    assert expired.json()["run"] == 2


async def test_a_route_keeps_its_own_ttl() -> None:
    from apiguard.idempotency import RoutePolicy

    app, _ = orders_app(ttl=3600, routes={"POST /orders": RoutePolicy(ttl=60)})
    key = new_key()
    with FrozenClock() as clock:
        async with client(app) as http:
            await http.post("/orders", headers=keyed(key))
            clock.advance(61)
            again = await http.post("/orders", headers=keyed(key))
    assert again.json()["run"] == 2


async def test_a_claim_nobody_renews_expires_and_its_late_response_is_not_stored() -> None:
    """A holder that stops renewing (a stalled loop, a dead worker) loses the key after `lease`."""
    log: list[tuple[str | None, dict[str, Any]]] = []
    app, orders = orders_app(Middleware(DecisionLog, log=log), lease=30)
    orders.hold()
    key = new_key()
    with FrozenClock() as clock:
        async with client(app) as http, anyio.create_task_group() as tasks:
            answers: dict[str, httpx.Response] = {}

            async def post(name: str) -> None:
                answers[name] = await http.post("/orders", headers=keyed(key))

            tasks.start_soon(post, "stalled")
            with anyio.fail_after(10):
                await orders.entered.wait()
            clock.advance(29)  # the lease still holds
            blocked = await http.post("/orders", headers=keyed(key))
            orders.entered = anyio.Event()
            clock.advance(2)  # past the lease, no renewal in between: the claim is gone
            tasks.start_soon(post, "second")
            with anyio.fail_after(10):
                await orders.entered.wait()
            orders.release()
        async with client(app) as http:
            replay = await http.post("/orders", headers=keyed(key))
    assert blocked.status_code == 409
    assert orders.runs["orders"] == 2
    assert answers["stalled"].json()["run"] == 1  # its caller still gets its answer ...
    assert replay.json()["run"] == 2  # ... but the key now holds the second run's
    outcomes = [entry for entry in log if entry[0] in ("stored", "not-stored")]
    assert ("not-stored", {"idempotency.not_stored": "lease-lost"}) in outcomes
    assert ("stored", {}) in outcomes


# --- real time: a running request's lease is renewed ----------------------------------

#: A short real lease: renewed every LEASE / 3 s; the request below outlives it twice.
LEASE = 1.5


async def _slow_request_keeps_its_claim(app: Any, orders: Any) -> None:
    orders.hold(runs=1)
    key = new_key()
    async with client(app) as http, anyio.create_task_group() as tasks:
        answers: list[httpx.Response] = []

        async def post() -> None:
            answers.append(await http.post("/orders", headers=keyed(key)))

        tasks.start_soon(post)
        with anyio.fail_after(10):
            await orders.entered.wait()
        started = time.monotonic()
        duplicates = []
        while time.monotonic() - started < 2 * LEASE + 0.5:  # well past an unrenewed lease
            duplicates.append((await http.post("/orders", headers=keyed(key))).status_code)
            await anyio.sleep(0.1)
        orders.release()
    assert orders.runs["orders"] == 1
    assert set(duplicates) == {409}
    assert answers[0].status_code == 201


@pytest.mark.slow
async def test_memory_renews_the_lease_of_a_slow_request() -> None:
    app, orders = orders_app(lease=LEASE)
    await _slow_request_keeps_its_claim(app, orders)


@pytest.mark.slow
@pytest.mark.usefixtures("close_stores")
async def test_redis_renews_the_lease_of_a_slow_request(redis_url: str) -> None:
    app, orders = orders_app(lease=LEASE, storage=redis_url, store_timeout=1.0)
    await _slow_request_keeps_its_claim(app, orders)


# --- Redis, real short TTLs -----------------------------------------------------------


@pytest.mark.usefixtures("close_stores")
async def test_redis_forgets_a_stored_response_after_ttl(redis_url: str) -> None:
    app, orders = orders_app(ttl=0.5, storage=redis_url, store_timeout=2.0)
    key = new_key()
    async with client(app) as http:
        first = await http.post("/orders", headers=keyed(key))
        statuses = await _until_it_runs(http, key, bound=20)
    assert first.status_code == 201
    assert orders.runs["orders"] == 2
    assert set(statuses) == {201}


@pytest.mark.usefixtures("close_stores")
async def test_redis_claim_left_by_a_dead_holder_expires(redis_url: str) -> None:
    """A claim nobody renews (its worker died) blocks the key for `lease`, then lets it run."""
    app, orders = orders_app(storage=redis_url, store_timeout=2.0)
    key = new_key()
    store = open_store(redis_url, timeout=2.0)
    kv = store.kv
    assert kv is not None
    try:
        # What a worker killed mid-request leaves behind: its claim, for a 3 s lease.
        dead = await kv.claim(store_key("idempotency", f"a:{CLIENT[0]}", key), 3.0)
        assert dead.token is not None
        async with client(app) as http:
            statuses = await _until_it_runs(http, key, bound=20)
    finally:
        await store.aclose()
    assert statuses[0] == 409
    assert orders.runs["orders"] == 1


@pytest.mark.slow
async def test_a_killed_workers_claim_expires(redis_url: str) -> None:
    """A uvicorn worker killed mid-request: 409 while its lease lasts, then the retry runs."""
    server = Uvicorn(
        "tests.idempotency._worker_app:app",
        "--workers",
        "2",
        "--log-level",
        "warning",
        env={"APIGUARD_TEST_REDIS": redis_url, "APIGUARD_TEST_LEASE": "5"},
    )
    store = redis.Redis.from_url(redis_url)
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            await both_workers_up(http)
            key = new_key()
            close = {"connection": "close"}
            held = asyncio.create_task(
                http.post("/orders", content=b"{}", headers={**keyed(key), "x-hold": "1", **close})
            )
            worker = int(await wait_for(store, f'pid:"{key}"'))
            os.kill(worker, signal.SIGKILL)
            with pytest.raises(httpx.TransportError):
                await held
            blocked = await http.post("/orders", content=b"{}", headers={**keyed(key), **close})
            statuses = [blocked.status_code]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                retry = await http.post("/orders", content=b"{}", headers={**keyed(key), **close})
                statuses.append(retry.status_code)
                if retry.status_code != 409:
                    break
                await asyncio.sleep(0.1)
    finally:
        server.stop()
        runs = store.get("runs")
        store.close()
    assert blocked.status_code == 409  # the claim outlived its worker ...
    assert retry.status_code == 201  # ... until its lease ran out
    assert retry.json()["pid"] != worker
    assert runs == b"2"  # the killed run, and the retry
