"""Every benchmark case still does what its name claims (status, no error)."""

from __future__ import annotations

import importlib

import pytest

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("suite", ["core", "routing", "auth", "idempotency", "stack"])
async def test_benchmark_cases_answer_as_named(suite: str) -> None:
    module = importlib.import_module(f"benchmarks.{suite}")
    cases = module.cases()
    assert cases
    for case in cases:
        await case.check()  # raises on a wrong status
        assert await case.batch(3) > 0


async def test_ratelimit_cases_answer_as_named(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The layer, Redis and slowapi rows, against the test session's redis-server.

    (The store rows fill a million keys; `make bench` runs those.)
    """
    monkeypatch.setenv("APIGUARD_BENCH_PARTS", "layer,redis,slowapi")
    monkeypatch.setenv("APIGUARD_BENCH_REDIS", redis_url)
    module = importlib.import_module("benchmarks.ratelimit")
    module._redis_url.cache_clear()
    cases = module.cases()
    names = [case.name for case in cases]
    assert any("redis" in name.lower() for name in names), names
    assert any("slowapi" in name for name in names), names
    try:
        for case in cases:
            await case.check()
            assert await case.batch(3) > 0
    finally:
        await module.aclose()
