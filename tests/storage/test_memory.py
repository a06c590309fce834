"""apiguard's memory store: the strategies, bounded memory, and limits' API on it."""

from __future__ import annotations

import math

import pytest
from limits import parse
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)
from limits.storage import storage_from_string

from apiguard import ConfigError
from apiguard.storage import MemoryStorage, Quota, open_store
from apiguard.storage._base import sliding_wait
from apiguard.testing import FrozenClock

pytestmark = pytest.mark.anyio

MINUTE = (Quota("m", 3, 60),)
START = 1_700_000_040.0  # the start of a minute


def test_memory_uri_opens_a_fresh_store_and_a_given_one_is_shared() -> None:
    shared = MemoryStorage()
    assert open_store(shared) is shared
    assert isinstance(open_store("memory://"), MemoryStorage)
    assert open_store("memory://") is not open_store("memory://")


@pytest.mark.parametrize("method", ["fixed_window", "moving_window", "sliding_window_counter"])
def test_each_strategy_admits_exactly_the_amount(method: str) -> None:
    store = MemoryStorage()
    hit = getattr(store, method)
    verdicts = [hit("k", MINUTE, 1, START + i) for i in range(5)]
    assert [v.admitted for v in verdicts] == [True, True, True, False, False]
    assert [v.used[0] for v in verdicts] == [1, 2, 3, 3, 3]
    assert verdicts[3].violated == (0,)


def test_fixed_window_resets_on_the_clock_aligned_boundary() -> None:
    store = MemoryStorage()
    for _ in range(3):
        store.fixed_window("k", MINUTE, 1, START + 59)
    refused = store.fixed_window("k", MINUTE, 1, START + 59.5)
    assert (refused.admitted, refused.retry_after) == (False, 0.5)
    fresh = store.fixed_window("k", MINUTE, 1, START + 60)
    assert (fresh.admitted, fresh.used, fresh.reset) == (True, (1,), (60.0,))


def test_moving_window_retry_after_frees_enough_units_for_the_cost() -> None:
    store = MemoryStorage()
    quota = (Quota("m", 4, 60),)
    store.moving_window("k", quota, 1, START)
    store.moving_window("k", quota, 2, START + 10)
    store.moving_window("k", quota, 1, START + 20)
    refused = store.moving_window("k", quota, 3, START + 30)
    # 4 used; 3 more need 3 freed: the hits at +0 (1) and +10 (2), free at +70.
    assert (refused.admitted, refused.retry_after) == (False, 40.0)
    assert store.moving_window("k", quota, 3, START + 70).admitted


def test_sliding_window_matches_limits_weighting() -> None:
    store = MemoryStorage()
    quota = (Quota("m", 10, 60),)
    for _ in range(10):
        store.sliding_window_counter("k", quota, 1, START + 30)
    # 45 s into the next window: 10 * 15/60 = 2.5 -> floor 2 used, room for 8.
    admitted = [store.sliding_window_counter("k", quota, 1, START + 105).admitted for _ in range(9)]
    assert admitted == [True] * 8 + [False]


@pytest.mark.parametrize(
    ("previous", "current", "until_end", "target", "expected"),
    [
        (0, 3, 10.0, 3, 10.001),  # waits for the window to end, then just past it
        (6, 0, 40.0, 3, 10.001),  # 6 * (40 - x)/60 < 3 -> x > 10
        (4, 2, 60.0, 10, 0.0),  # already below
        (2, 3, 20.0, 0, math.inf),  # a target of zero is never reached
    ],
)
def test_sliding_wait(
    previous: int, current: int, until_end: float, target: int, expected: float
) -> None:
    assert sliding_wait(previous, current, 60, until_end, target) == pytest.approx(expected)


@pytest.mark.parametrize("method", ["fixed_window", "moving_window", "sliding_window_counter"])
def test_memory_is_bounded_by_live_keys(method: str) -> None:
    """100,000 one-off clients leave nothing behind once their windows are over."""
    store = MemoryStorage()
    hit = getattr(store, method)
    for i in range(100_000):
        hit(f"client-{i}", MINUTE, 1, START + i / 10_000)
    assert len(store) == 100_000
    # Two windows later, steady traffic from 100 clients sweeps the rest away.
    later = START + 200
    for i in range(20_000):
        hit(f"steady-{i % 100}", MINUTE, 1, later + i / 1000)
    assert len(store) <= 100 + 8


def test_no_single_operation_pays_for_a_mass_expiry() -> None:
    store = MemoryStorage()
    for i in range(50_000):
        store.fixed_window(f"c{i}", MINUTE, 1, START)
    store.fixed_window("late", MINUTE, 1, START + 120)
    assert len(store) >= 50_000 - 512  # a bounded share swept, not all at once


@pytest.mark.parametrize("method", ["fixed_window", "moving_window", "sliding_window_counter"])
def test_a_trickle_after_a_flood_reclaims_the_expired_entries(method: str) -> None:
    """Review finding 8: 8 entries per request left most of a flood behind for hours."""
    store = MemoryStorage(max_keys=1_000_000)
    hit = getattr(store, method)
    hour_and_day = (Quota("h", 100, 3600), Quota("d", 1000, 86_400))
    for i in range(100_000):
        hit(f"client-{i}", hour_and_day, 1, START)
    assert len(store) == 200_000
    later = START + 3 * 3600  # the hour windows are over, the day windows are not
    for i in range(1000):
        hit("steady", hour_and_day, 1, later + i)
    assert len(store) <= 100_000 + 2  # every expired hour entry is gone


@pytest.mark.parametrize("method", ["fixed_window", "moving_window", "sliding_window_counter"])
def test_max_keys_caps_the_store_by_evicting_the_oldest(method: str) -> None:
    store = MemoryStorage(max_keys=1000)
    hit = getattr(store, method)
    for i in range(5000):
        hit(f"client-{i}", MINUTE, 1, START + i / 1000)
    assert len(store) == 1000
    assert hit("client-4999", MINUTE, 1, START + 5).used == (2,)  # the newest are kept
    assert hit("client-0", MINUTE, 1, START + 5).used == (1,)  # the oldest were evicted


@pytest.mark.parametrize(
    ("uri", "match"),
    [
        ("memory://?max_keys=0", "max_keys 0 "),
        ("memory://?max_keys=lots", "max_keys 'lots'"),
        ("memory://?maxkeys=10", "'maxkeys'"),
    ],
)
def test_bad_memory_options_are_config_errors(uri: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        open_store(uri)


def test_max_keys_from_the_uri_and_the_default() -> None:
    assert open_store("memory://?max_keys=5000").max_keys == 5000  # type: ignore[union-attr]
    assert MemoryStorage().max_keys == 100_000


# --- limits' own strategies on this store (async+apiguard-memory://) ---------------------


def test_registered_under_its_own_scheme_beside_limits_memory() -> None:
    from limits.aio.storage import MemoryStorage as LimitsMemoryStorage

    assert isinstance(storage_from_string("async+apiguard-memory://"), MemoryStorage)
    assert isinstance(storage_from_string("async+memory://"), LimitsMemoryStorage)


@pytest.mark.parametrize(
    "strategy",
    [FixedWindowRateLimiter, MovingWindowRateLimiter, SlidingWindowCounterRateLimiter],
)
async def test_limits_strategies_run_on_the_store(strategy: type) -> None:
    item = parse("3/minute")
    with FrozenClock(wall=START) as clock:
        limiter = strategy(storage_from_string("async+apiguard-memory://"))
        assert [await limiter.hit(item, "k") for _ in range(4)] == [True, True, True, False]
        assert await limiter.test(item, "other")
        stats = await limiter.get_window_stats(item, "k")
        assert stats.remaining == 0
        clock.advance(121)
        assert await limiter.hit(item, "k")
        await limiter.clear(item, "k")
        assert (await limiter.get_window_stats(item, "k")).remaining == 3


async def test_limits_counter_api() -> None:
    store = MemoryStorage()
    with FrozenClock(wall=START) as clock:
        assert await store.incr("k", 10) == 1
        assert await store.incr("k", 10, amount=4) == 5
        assert await store.get("k") == 5
        assert await store.get_expiry("k") == START + 10
        assert await store.decr("k", 2) == 3
        assert await store.check()
        clock.advance(10)
        assert await store.get("k") == 0
        await store.incr("j", 5)
        assert await store.reset() == 1
        assert await store.get("j") == 0
