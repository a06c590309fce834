"""Exactness under concurrency: N concurrent requests against a limit of L admit exactly L."""

from __future__ import annotations

import asyncio
import collections
import time

import httpx
import pytest

from tests._clock import MID_WINDOW
from tests._servers import Uvicorn
from tests.ratelimit._helpers import client, limited_app, ratelimit

pytestmark = pytest.mark.anyio

STRATEGIES = ["fixed-window", "moving-window", "sliding-window-counter"]
N, L = 300, 50


async def _burst(app: object, n: int) -> collections.Counter[int]:
    async with client(app) as http:
        responses = await asyncio.gather(*(http.get("/orders") for _ in range(n)))
    return collections.Counter(r.status_code for r in responses)


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_memory_admits_exactly_the_limit(strategy: str) -> None:
    app = limited_app(limit=f"{L}/hour", strategy=strategy)
    assert await _burst(app, N) == {200: L, 429: N - L}


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.usefixtures("close_stores")
async def test_redis_admits_exactly_the_limit(redis_url: str, strategy: str) -> None:
    app = limited_app(limit=f"{L}/hour", strategy=strategy, storage=redis_url, store_timeout=5.0)
    assert await _burst(app, N) == {200: L, 429: N - L}


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.usefixtures("close_stores")
async def test_redis_multi_quota_policy_stays_exact(redis_url: str, strategy: str) -> None:
    """The tighter quota binds; refused requests leave the looser one untouched."""
    app = limited_app(
        limit=f"{L}/hour; 1000/day", strategy=strategy, storage=redis_url, store_timeout=5.0
    )
    assert await _burst(app, N) == {200: L, 429: N - L}
    async with client(app) as http:
        refused = await http.get("/orders")
    remaining = {name: r for name, (r, _) in ratelimit(refused).items()}
    assert remaining == {"default-0": 0, "default-1": 1000 - L}


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["fixed-window", "sliding-window-counter"])
async def test_two_uvicorn_workers_sharing_redis_admit_exactly_the_limit(
    redis_url: str, strategy: str
) -> None:
    server = Uvicorn(
        "tests.ratelimit._worker_app:app",
        "--workers",
        "2",
        "--log-level",
        "warning",
        env={
            "APIGUARD_TEST_REDIS": redis_url,
            "APIGUARD_TEST_LIMIT": f"{L}/hour",
            "APIGUARD_TEST_STRATEGY": strategy,
            "APIGUARD_TEST_WALL": str(MID_WINDOW),
        },
    )
    server.start()
    try:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server.url, timeout=20, limits=limits) as http:
            # Both workers up before the burst (the exempt /health costs no quota).
            # A new connection per probe: pooled ones would all stay with the
            # worker that accepted the first round, and never reach the other.
            # Bounded by time, not by rounds: a worker may take seconds to boot
            # on a loaded machine.
            close = {"connection": "close"}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                health = await asyncio.gather(
                    *(http.get("/health", headers=close) for _ in range(20))
                )
                if len({r.headers["x-worker-pid"] for r in health}) == 2:
                    break
                await asyncio.sleep(0.1)
            responses = await asyncio.gather(*(http.get("/whoami") for _ in range(N)))
    finally:
        output = server.stop()
    assert "Traceback" not in output
    assert collections.Counter(r.status_code for r in responses) == {200: L, 429: N - L}
    assert len({r.headers["x-worker-pid"] for r in responses}) == 2, "both workers answered"
