"""The rate-limiting guides' examples: routes, plans, shadow mode, Redis, Cluster, Sentinel."""

from __future__ import annotations

import pytest
import redis

from tests._docs import _client

pytestmark = pytest.mark.anyio


@pytest.mark.usefixtures("mid_window_wall_clock")  # counts within one window
async def test_ratelimit_basic_limits_routes_and_exempts_health() -> None:
    async with await _client("ratelimit_basic") as client:
        assert (await client.get("/health")).status_code == 200
        assert "ratelimit" not in (await client.get("/health")).headers
        report = await client.get("/reports")
        assert report.headers["ratelimit"].startswith('"ip-0";r=90;')
        for _ in range(10):
            assert (await client.post("/orders")).status_code == 200
        refused = await client.post("/orders")
    assert refused.status_code == 429
    assert refused.json()["violated-policies"] == ["ip-1"]


async def test_ratelimit_plans_gives_each_plan_its_quota() -> None:
    async with await _client("ratelimit_plans") as client:
        free = await client.get("/orders", headers={"x-api-key": "k-free"})
        pro = await client.get("/orders", headers={"x-api-key": "k-pro"})
        anonymous = await client.get("/orders")
    assert free.headers["ratelimit-policy"].count('"plan-') == 2  # 10/minute; 1000/day
    assert '"plan-4";q=5000;w=60' in pro.headers["ratelimit-policy"]  # the override
    assert '"plan-0";q=5;w=60' in anonymous.headers["ratelimit-policy"]


@pytest.mark.usefixtures("mid_window_wall_clock")  # counts within one window
async def test_ratelimit_shadow_reports_without_refusing() -> None:
    async with await _client("ratelimit_shadow") as client:
        answers = [(await client.get("/orders")) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.json()["would_refuse"] for a in answers] == [False, False, True]


async def test_ratelimit_redis_example_uses_the_redis_it_is_given(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, close_stores: list[object]
) -> None:
    import sys

    monkeypatch.setenv("RATELIMIT_REDIS", redis_url)
    sys.modules.pop("examples.ratelimit_redis", None)
    async with await _client("ratelimit_redis") as client:
        # The first request connects (within the store's connect timeout, not
        # the 0.25 s store timeout) and is counted like any other.
        response = await client.get("/orders")
    sys.modules.pop("examples.ratelimit_redis", None)
    assert response.status_code == 200
    assert response.headers["ratelimit-policy"] == '"ip-0";q=10;w=1, "ip-1";q=1000;w=3600'
    assert response.headers["ratelimit"].startswith('"ip-0";r=9')
    keys = redis.Redis.from_url(redis_url)
    try:
        assert keys.dbsize() > 0  # the counters are in the Redis it was given
    finally:
        keys.close()


@pytest.mark.parametrize(
    ("example", "variable"), [("cluster", "CLUSTER"), ("sentinel", "SENTINEL")]
)
async def test_cluster_and_sentinel_examples_count_on_the_store_they_are_given(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    close_stores: list[object],
    example: str,
    variable: str,
) -> None:
    """examples.ratelimit_cluster and examples.ratelimit_sentinel, on the session's servers."""
    import sys

    url = request.getfixturevalue(f"{example}_url")
    module = f"ratelimit_{example}"
    monkeypatch.setenv(f"RATELIMIT_{variable}", url)
    sys.modules.pop(f"examples.{module}", None)
    from apiguard.testing import FrozenClock

    async with await _client(module) as client:
        with FrozenClock():  # one 1-second window throughout
            statuses = [(await client.get("/orders")).status_code for _ in range(12)]
    sys.modules.pop(f"examples.{module}", None)
    assert statuses == [200] * 10 + [429] * 2  # 10/second, counted from the first request
