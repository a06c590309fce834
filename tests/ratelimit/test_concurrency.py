"""Exactness under concurrency: N concurrent requests against a limit of L admit exactly L."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from tests._servers import Uvicorn
from tests.conftest import ENGINES
from tests.ratelimit._engine_app import COST, STRATEGIES
from tests.ratelimit._helpers import clear_of_window_edge, client, limited_app, ratelimit

pytestmark = pytest.mark.anyio

N, L = 300, 50
HOUR = 3600


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


@contextlib.asynccontextmanager
async def two_workers(
    app: str, *args: str, env: dict[str, str]
) -> AsyncIterator[httpx.AsyncClient]:
    """`uvicorn --workers 2` serving `app`, both workers up; a client to it."""
    server = Uvicorn(app, "--workers", "2", "--log-level", "warning", *args, env=env)
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
            yield http
    finally:
        output = server.stop()
    assert "Traceback" not in output


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["fixed-window", "sliding-window-counter"])
async def test_two_uvicorn_workers_sharing_redis_admit_exactly_the_limit(
    redis_url: str, strategy: str
) -> None:
    env = {
        "APIGUARD_TEST_REDIS": redis_url,
        "APIGUARD_TEST_LIMIT": f"{L}/hour",
        "APIGUARD_TEST_STRATEGY": strategy,
    }
    async with two_workers("tests.ratelimit._worker_app:app", env=env) as http:
        # The windows are aligned on the clock: a burst across an edge admits more.
        clear_of_window_edge(HOUR, 30)
        responses = await asyncio.gather(*(http.get("/whoami") for _ in range(N)))
    assert collections.Counter(r.status_code for r in responses) == {200: L, 429: N - L}
    assert len({r.headers["x-worker-pid"] for r in responses}) == 2, "both workers answered"


# --- Cluster and Sentinel, through two workers -----------------------------------------

AMOUNT = 10
#: Per burst: (path, X-Client, X-Plan, admitted of 3 x AMOUNT).
BURSTS = [
    ("one", "plain", None, AMOUNT),
    ("two", "two-quotas", None, AMOUNT),  # the hour's quota binds; the day's keeps 3 x AMOUNT
    ("cost", "costly", None, AMOUNT // COST),
    ("one", "on-plan-pro", "pro", 2 * AMOUNT),
    ("one", "}abc", None, AMOUNT),  # hash tags a client could move, if not escaped
    ("one", "a{b}c", None, AMOUNT),
    ("one", "{", None, AMOUNT),
]


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["cluster", "sentinel"])
async def test_two_uvicorn_workers_count_every_strategy_and_policy_exactly(
    engine_url: Callable[[str], str], engine: str
) -> None:
    """Each burst of 3 x L requests from one key, all at once: exactly L (or its share) admitted.

    Every response is counted (its RateLimit field): none failed open.
    """
    env = {
        "APIGUARD_TEST_STORE": engine_url(engine),
        "APIGUARD_TEST_LIMIT": f"{AMOUNT}/hour",
    }
    admitted: collections.Counter[tuple[str, str, str]] = collections.Counter()
    workers = set()
    async with two_workers("tests.ratelimit._engine_app:make", "--factory", env=env) as http:
        clear_of_window_edge(HOUR, 30)
        for strategy in STRATEGIES:
            for path, key, plan, _ in BURSTS:
                # A new connection per request: either worker may answer each.
                headers = {"x-client": key, "connection": "close"}
                if plan:
                    headers["x-plan"] = plan
                responses = await asyncio.gather(
                    *(http.get(f"/{strategy}/{path}", headers=headers) for _ in range(3 * AMOUNT))
                )
                for response in responses:
                    assert response.status_code in (200, 429), response.text
                    assert "ratelimit" in response.headers, "counted, not failed open"
                    admitted[strategy, path, key] += response.status_code == 200
                    workers.add(response.headers["x-worker-pid"])
    expected = {
        (strategy, path, key): count for strategy in STRATEGIES for path, key, _, count in BURSTS
    }
    assert dict(admitted) == expected
    assert len(workers) == 2, "both workers answered"


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
async def test_each_worker_s_first_requests_are_counted_without_a_lifespan(
    engine_url: Callable[[str], str], engine: str
) -> None:
    """No lifespan start-up (`--lifespan off`): each worker connects on its first request.

    Within the connect timeout, not the store timeout (0.25 s, the default):
    importing and building redis-py's client alone takes about that long.
    """
    store = engine_url(engine)
    env = {
        "APIGUARD_TEST_STORE": store,
        "APIGUARD_TEST_LIMIT": f"{AMOUNT}/hour",
        "APIGUARD_TEST_STORE_TIMEOUT": "0.25",
    }
    close = {"connection": "close", "x-client": "first"}  # a new connection: either worker
    responses = []
    async with two_workers(
        "tests.ratelimit._engine_app:make", "--factory", "--lifespan", "off", env=env
    ) as http:
        clear_of_window_edge(HOUR, 30)
        # Waves of concurrent first requests, at least three, and until both
        # workers have answered: the kernel may hand one worker every
        # connection for a while, and the other's first requests come later.
        for wave in range(30):
            responses += await asyncio.gather(
                *(http.get("/fixed-window/one", headers=close) for _ in range(AMOUNT))
            )
            if wave >= 2 and len({r.headers["x-worker-pid"] for r in responses}) == 2:
                break
    statuses = collections.Counter(r.status_code for r in responses)
    assert statuses == {200: AMOUNT, 429: len(responses) - AMOUNT}
    assert all("ratelimit" in r.headers for r in responses), "counted, not failed open"
    assert len({r.headers["x-worker-pid"] for r in responses}) == 2, "both workers answered"
