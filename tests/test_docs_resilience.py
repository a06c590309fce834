"""The resilience guides' examples: timeouts, retries, fallbacks, the breaker, shedding, health."""

from __future__ import annotations

import asyncio

import pytest

from tests._docs import _client

pytestmark = pytest.mark.anyio


async def test_timeouts_example_bounds_the_endpoints_own_call() -> None:
    async with await _client("timeouts") as client:
        fast = await client.get("/quotes/ACME")
        degraded = await client.get("/quotes/SLOW")  # its upstream would take 10 s
    assert fast.json() == {"symbol": "ACME", "price": 101.5}
    assert degraded.json() == {"symbol": "SLOW", "price": None, "stale": True}
    from examples.timeouts import app

    layer = app.build_middleware_stack()
    while type(layer).__name__ != "TimeoutMiddleware":
        layer = layer.app
    assert layer.describe("GET", "/reports/{year}").summary == {"timeout": 30.0}
    assert not layer.describe("GET", "/export").applies


async def test_retries_example_retries_reads_and_the_listed_post() -> None:
    from examples import retries

    async with await _client("retries") as client:
        first = await client.get("/inventory/A-1")  # call 1 fails, call 2 answers
        searched = await client.post("/search", json={"q": "chairs"})
    assert (first.status_code, first.json()) == (200, {"sku": "A-1", "stock": 7})
    assert next(retries.calls) == 3
    assert searched.json() == {"query": {"q": "chairs"}, "hits": []}


async def test_fallbacks_example_serves_stale_per_caller_then_its_own() -> None:
    from examples.fallbacks import app

    alice, bob = {"x-api-key": "k-alice-7f3a9c2e"}, {"x-api-key": "k-bob-4b8d1e6f"}
    app.state.slow = False
    try:
        async with await _client("fallbacks") as client:
            menu = await client.get("/menu")
            mine = await client.get("/me/orders", headers=alice)
            app.state.slow = True
            stale_menu = await client.get("/menu")
            stale_mine = await client.get("/me/orders", headers=alice)
            not_bobs = await client.get("/me/orders", headers=bob)
            degraded = await client.get("/search", headers=alice)
    finally:
        app.state.slow = False
    assert stale_menu.json() == menu.json()
    assert stale_menu.headers["cache-status"].startswith("apiguard; fwd=stale; ttl=")
    assert stale_mine.json() == mine.json() == {"owner": "alice", "orders": [1, 2]}
    assert not_bobs.status_code == 504
    assert degraded.json() == {"hits": [], "degraded": True}


async def test_circuit_breaker_example_serves_the_last_good_answer_then_recovers() -> None:
    from examples.circuit_breaker import Inventory

    from apiguard.testing import FrozenClock

    Inventory.down = False
    with FrozenClock() as frozen:
        try:
            async with await _client("circuit_breaker") as client:
                good = await client.get("/stock/A-1")
                Inventory.down = True
                # 20 calls in the window (the good one counts), 19 of them failed: open.
                failed = [await client.get("/stock/A-1") for _ in range(19)]
                kept = await client.get("/stock/A-1")  # open: the last good answer
                never_seen = await client.get("/stock/B-2")  # open, and nothing kept
                Inventory.down = False
                frozen.advance(5)
                probes = [await client.get("/stock/A-1") for _ in range(3)]
                closed = await client.get("/stock/B-2")
        finally:
            Inventory.down = False
    assert {r.status_code for r in failed} == {502}
    assert (kept.status_code, kept.json()) == (200, good.json())
    assert kept.headers["cache-status"].startswith("apiguard; hit;")
    assert never_seen.status_code == 503
    assert never_seen.headers["retry-after"] == "5"
    assert {r.status_code for r in probes} == {200}
    assert closed.json() == {"sku": "B-2", "stock": 7}


async def test_load_shedding_example_keeps_a_bulkhead_for_reports() -> None:
    from examples.load_shedding import Load

    Load.gate.clear()
    try:
        async with await _client("load_shedding") as client:
            reports = [asyncio.ensure_future(client.post("/reports")) for _ in range(30)]
            await asyncio.sleep(0.3)  # 4 run, 20 wait their 100 ms at most, the rest are shed
            live = await client.get("/health/live")
            shed = [r.result() for r in reports if r.done()]
            Load.gate.set()
            answered = await asyncio.gather(*reports)
    finally:
        Load.gate.set()
    assert live.status_code == 200
    assert shed
    assert {r.status_code for r in shed} == {503}
    assert shed[0].headers["retry-after"] == "2"
    assert shed[0].json()["violated-policies"] == ["concurrency:/reports"]
    assert sorted(r.status_code for r in answered).count(201) == 4


async def test_health_example_shows_its_checks_and_needs_no_key() -> None:
    from examples.health import Database

    async with await _client("health") as client:
        assert (await client.get("/orders")).status_code == 401
        ready = await client.get("/health/ready")
        Database.up = False
        try:
            down = await client.get("/health/ready")
        finally:
            Database.up = True
    body = ready.json()
    assert (ready.status_code, body["status"], body["version"]) == (200, "pass", "2.3.0")
    assert set(body["checks"]) == {"app:started", "store:responseTime", "database:responseTime"}
    assert body["checks"]["store:responseTime"][0]["componentId"] == "memory://"
    assert ready.headers["content-type"] == "application/health+json"
    # The result is kept a second (cache_seconds): the database going down shows after it.
    assert down.json()["status"] == "pass"
