"""Concurrent duplicates run the app once: in memory, on Redis, on Cluster, across workers."""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

import anyio
import httpx
import pytest
import redis

from tests._servers import Uvicorn
from tests.idempotency._apps import client, keyed, new_key, orders_app

pytestmark = pytest.mark.anyio

#: Duplicates sent while the first request runs.
N = 20


async def _held_duplicates(app: Any, orders: Any) -> list[httpx.Response]:
    """N+1 concurrent requests with one key; the one that runs is held until the rest answered."""
    orders.hold()
    key = new_key()
    answers: list[httpx.Response] = []
    refused = anyio.Event()  # every duplicate has its answer
    async with client(app) as http:

        async def post() -> None:
            answers.append(await http.post("/orders", content=b'{"sku":"A-1"}', headers=keyed(key)))
            if len(answers) == N:
                refused.set()

        async with anyio.create_task_group() as tasks:
            for _ in range(N + 1):
                tasks.start_soon(post)
            with anyio.fail_after(20):
                await refused.wait()
            orders.release()
        replay = await http.post("/orders", content=b'{"sku":"A-1"}', headers=keyed(key))
    assert collections.Counter(a.status_code for a in answers) == {201: 1, 409: N}
    assert orders.runs["orders"] == 1
    conflict = next(a for a in answers if a.status_code == 409)
    assert conflict.headers["content-type"] == "application/problem+json"
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["run"] == 1
    return answers


async def _two_at_once(app: Any, orders: Any) -> None:
    """Two duplicates at once, unheld: one runs; the other is 409 or the stored response."""
    key = new_key()
    async with client(app) as http:
        one, two = await asyncio.gather(
            *(http.post("/orders", content=b"{}", headers=keyed(key)) for _ in range(2))
        )
    assert orders.runs["orders"] == 1
    assert sorted([one.status_code, two.status_code]) in ([201, 201], [201, 409])
    if one.status_code == two.status_code:
        assert {one.headers.get("idempotent-replayed"), two.headers.get("idempotent-replayed")} == {
            None,
            "true",
        }


async def test_memory_runs_concurrent_duplicates_once() -> None:
    app, orders = orders_app()
    await _held_duplicates(app, orders)
    app, orders = orders_app()
    await _two_at_once(app, orders)


@pytest.mark.usefixtures("close_stores")
async def test_redis_runs_concurrent_duplicates_once(redis_url: str) -> None:
    app, orders = orders_app(storage=redis_url, store_timeout=5.0)
    await _held_duplicates(app, orders)
    app, orders = orders_app(storage=redis_url, store_timeout=5.0)
    await _two_at_once(app, orders)
    keys = redis.Redis.from_url(redis_url)
    try:
        stored = keys.keys("apiguard:kv:*")
    finally:
        keys.close()
    assert len(stored) == 2  # both responses are in the Redis the layer was given


@pytest.mark.usefixtures("close_stores")
async def test_redis_cluster_runs_concurrent_duplicates_once(cluster_url: str) -> None:
    app, orders = orders_app(storage=cluster_url, store_timeout=5.0)
    await _held_duplicates(app, orders)
    app, orders = orders_app(storage=cluster_url, store_timeout=5.0)
    await _two_at_once(app, orders)


async def test_redis_sentinel_runs_concurrent_duplicates_once(
    sentinel_url: str, close_stores: list[Any]
) -> None:
    app, orders = orders_app(storage=sentinel_url, store_timeout=5.0)
    await _held_duplicates(app, orders)  # close_stores closes them, sentinels included


async def both_workers_up(http: httpx.AsyncClient) -> None:
    """Wait until both workers answer (a new connection per probe, bounded by time)."""
    close = {"connection": "close"}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        health = await asyncio.gather(*(http.get("/health", headers=close) for _ in range(20)))
        if len({r.headers["x-worker-pid"] for r in health}) == 2:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the second worker never answered")


async def wait_for(store: redis.Redis, name: str) -> bytes:
    """The value of `name` in Redis once the app has set it (bounded)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        value = store.get(name)
        if value is not None:
            return value  # type: ignore[no-any-return]
        await asyncio.sleep(0.02)
    raise AssertionError(f"the app never set {name!r}")


@pytest.mark.slow
async def test_two_uvicorn_workers_sharing_redis_run_a_key_once(redis_url: str) -> None:
    server = Uvicorn(
        "tests.idempotency._worker_app:app",
        "--workers",
        "2",
        "--log-level",
        "warning",
        env={"APIGUARD_TEST_REDIS": redis_url},
    )
    store = redis.Redis.from_url(redis_url)
    server.start()
    try:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as http:
            await both_workers_up(http)
            key = new_key()
            close = {"connection": "close"}
            held = asyncio.create_task(
                http.post("/orders", content=b"{}", headers={**keyed(key), "x-hold": "1", **close})
            )
            runner = await wait_for(store, f'pid:"{key}"')  # the first runs, held
            duplicates: list[httpx.Response] = []
            # New connections until both workers have answered duplicates (bounded).
            while len(duplicates) < 200:
                duplicates += await asyncio.gather(
                    *(
                        http.post("/orders", content=b"{}", headers={**keyed(key), **close})
                        for _ in range(10)
                    )
                )
                if len({r.headers["x-worker-pid"] for r in duplicates}) == 2:
                    break
            store.set("release", 1)
            first = await held
            replay = await http.post("/orders", content=b"{}", headers=keyed(key))
    finally:
        output = server.stop()
        runs = store.get("runs")
        store.close()
    assert "Traceback" not in output
    assert {r.status_code for r in duplicates} == {409}
    assert len({r.headers["x-worker-pid"] for r in duplicates}) == 2, "both workers refused"
    assert first.status_code == 201
    assert first.json()["pid"] == int(runner)
    assert runs == b"1"  # the app ran once, in one of the two processes
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == first.json()


@pytest.mark.parametrize("where", ["memory", "redis"])
@pytest.mark.usefixtures("close_stores")
async def test_another_payload_while_the_first_runs_is_422_not_409(
    where: str, redis_url: str
) -> None:
    """The claim carries the first request's fingerprint: another body is told apart at once."""
    storage = {"memory": "memory://", "redis": redis_url}[where]
    app, orders = orders_app(storage=storage, store_timeout=5.0)
    orders.hold()
    key = new_key()
    async with client(app) as http, anyio.create_task_group() as tasks:
        first: list[httpx.Response] = []

        async def run_first() -> None:
            first.append(await http.post("/orders", content=b'{"sku":"A-1"}', headers=keyed(key)))

        tasks.start_soon(run_first)
        with anyio.fail_after(20):
            await orders.entered.wait()  # the first request runs, and holds
        other = await http.post("/orders", content=b'{"sku":"B-2"}', headers=keyed(key))
        same = await http.post("/orders", content=b'{"sku":"A-1"}', headers=keyed(key))
        orders.release()
    assert (other.status_code, same.status_code, first[0].status_code) == (422, 409, 201)
    assert orders.runs["orders"] == 1
