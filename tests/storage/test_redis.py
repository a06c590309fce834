"""The Redis store against a real redis-server: strategies, round trips, keys, breaker."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest
import redis

from apiguard import StorageError
from apiguard.ratelimit import by_api_key, by_header
from apiguard.storage import (
    LimitsStore,
    Quota,
    RedisStore,
    RemoteStore,
    StoreBreaker,
    open_store,
)
from apiguard.testing import FrozenClock
from tests.ratelimit._helpers import client, limited_app, ratelimit

pytestmark = pytest.mark.anyio

STRATEGIES = ["fixed-window", "moving-window", "sliding-window-counter"]
#: Seconds a store call may take here: a real server on a machine that may be
#: loaded (a first call connects and loads scripts), so far above the 0.25 s
#: default that only a hang reaches it. Tests of timeouts set their own.
TIMEOUT = 5.0


def _evalsha_calls(url: str) -> int:
    stats = redis.Redis.from_url(url).info("commandstats")
    return int(stats.get("cmdstat_evalsha", {"calls": 0})["calls"])


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.usefixtures("close_stores")
async def test_each_strategy_admits_exactly_the_amount(redis_url: str, strategy: str) -> None:
    store = open_store(redis_url, timeout=TIMEOUT)
    assert isinstance(store, RedisStore)
    acquire = store.limiter(strategy)  # type: ignore[arg-type]
    verdicts = [await acquire("k", (Quota("q", 3, 60),), 1) for _ in range(5)]
    assert [v.admitted for v in verdicts] == [True, True, True, False, False]
    assert [v.used[0] for v in verdicts] == [1, 2, 3, 3, 3]
    assert all(0 < v.reset[0] <= 60 for v in verdicts)
    assert 0 < verdicts[-1].retry_after <= 60


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.usefixtures("close_stores")
async def test_a_refusal_by_one_quota_is_counted_by_none(redis_url: str, strategy: str) -> None:
    acquire = open_store(redis_url, timeout=TIMEOUT).limiter(strategy)  # type: ignore[union-attr, arg-type]
    quotas = (Quota("burst", 2, 60), Quota("hour", 5, 3600))
    for _ in range(2):
        assert (await acquire("k", quotas, 1)).admitted
    refused = await acquire("k", quotas, 1)
    assert (refused.admitted, refused.used, refused.violated) == (False, (2, 2), (0,))


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_one_round_trip_per_request_whatever_the_strategy(
    redis_url: str, strategy: str, close_stores: list[RemoteStore]
) -> None:
    """One EVALSHA a request, several quotas included, and nothing else on the wire."""
    app = limited_app(
        limit="50/second; 1000/hour", strategy=strategy, storage=redis_url, store_timeout=TIMEOUT
    )
    async with client(app) as http:
        await http.get("/orders")  # a new server has no script yet (NOSCRIPT, then EVAL)
        # guard() builds each layer once to validate it, the app once more: the one used.
        (store,) = [s for s in close_stores if isinstance(s, RedisStore) and s._client]
        sent = store.client().sent
        before = _evalsha_calls(redis_url)
        for _ in range(20):
            assert (await http.get("/orders")).status_code == 200
    assert store.client().sent - sent == 20  # the commands the client wrote
    assert _evalsha_calls(redis_url) - before == 20  # as the server counted them


async def test_one_quota_fixed_window_is_one_incrby_and_no_script(
    redis_url: str, close_stores: list[RemoteStore]
) -> None:
    """The common case: one round trip, `SET ... PX ... NX` and `INCRBY` in one write."""
    app = limited_app(limit="1000/hour", storage=redis_url, store_timeout=TIMEOUT)
    sync = redis.Redis.from_url(redis_url)
    sync.config_resetstat()
    with FrozenClock():  # one window throughout
        async with client(app) as http:
            for _ in range(20):
                assert (await http.get("/orders")).status_code == 200
    async with client(app) as http:
        (store,) = [s for s in close_stores if isinstance(s, RedisStore) and s._client]
        sent = store.client().sent
    stats = sync.info("commandstats")
    assert sent == 20  # round trips: one a request
    assert stats["cmdstat_incrby"]["calls"] == 20
    assert stats["cmdstat_set"]["calls"] == 20  # the expiry never waits on a reply
    assert "cmdstat_pexpire" not in stats
    assert "cmdstat_evalsha" not in stats
    assert "cmdstat_eval" not in stats


@pytest.mark.parametrize("strategy", ["fixed-window", "sliding-window-counter"])
@pytest.mark.usefixtures("close_stores")
async def test_short_windows_on_apiguards_clock(redis_url: str, strategy: str) -> None:
    """A 1-second window on apiguard's clock: refused within it, admitted after."""
    acquire = open_store(redis_url, timeout=TIMEOUT).limiter(strategy)  # type: ignore[union-attr, arg-type]
    quota = (Quota("s", 2, 1),)
    with FrozenClock(wall=1_700_000_000.25) as clock:
        assert (await acquire("k", quota, 1)).admitted
        assert (await acquire("k", quota, 1)).admitted
        refused = await acquire("k", quota, 1)
        assert not refused.admitted
        assert 0.7 < refused.retry_after <= 1.0  # the window ends 0.75 s on
        # Just past it: the script rounds the window's end to whole milliseconds.
        clock.advance(refused.retry_after + 0.01)
        assert (await acquire("k", quota, 1)).admitted


@pytest.mark.slow
@pytest.mark.usefixtures("close_stores")
async def test_short_moving_window_on_the_servers_clock(redis_url: str) -> None:
    """A moving window is stamped by the server (`TIME`): real time must pass."""
    acquire = open_store(redis_url, timeout=TIMEOUT).limiter("moving-window")  # type: ignore[union-attr]
    # 2 s: three calls to a local server fit in it on any machine that runs the suite.
    quota = (Quota("s", 2, 2),)
    assert (await acquire("k", quota, 1)).admitted
    assert (await acquire("k", quota, 1)).admitted
    refused = await acquire("k", quota, 1)
    assert not refused.admitted
    assert 0 < refused.retry_after <= 2.0
    await anyio.sleep(refused.retry_after + 0.05)  # real time: the server's clock must move
    assert (await acquire("k", quota, 1)).admitted


@pytest.mark.usefixtures("close_stores")
async def test_headers_from_redis_follow_the_draft(redis_url: str) -> None:
    app = limited_app(limit="2/minute", storage=redis_url, store_timeout=TIMEOUT)
    async with client(app) as http:
        first = ratelimit(await http.get("/orders"))
        second = ratelimit(await http.get("/orders"))
        refused = await http.get("/orders")
    assert first["default-0"][0] == 1
    assert 0 < first["default-0"][1] <= 60
    assert second["default-0"][0] == 0
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60


@pytest.mark.usefixtures("close_stores")
async def test_keys_share_a_hash_tag_and_never_hold_an_api_key(redis_url: str) -> None:
    app = limited_app(
        limit="5/second; 10/hour", key=by_api_key(), storage=redis_url, store_timeout=TIMEOUT
    )
    async with client(app) as http:
        await http.get("/orders", headers={"x-api-key": "sk-live-secret"})
    keys = sorted(k.decode() for k in redis.Redis.from_url(redis_url).keys("*"))
    assert len(keys) == 2
    tags = {key[key.index("{") : key.index("}") + 1] for key in keys}
    assert len(tags) == 1
    assert not any("sk-live-secret" in key for key in keys)


@pytest.mark.usefixtures("close_stores")
async def test_script_cache_flush_is_survived(redis_url: str) -> None:
    acquire = open_store(redis_url, timeout=TIMEOUT).limiter("fixed-window")  # type: ignore[union-attr]
    assert (await acquire("k", (Quota("q", 5, 60),), 1)).admitted
    redis.Redis.from_url(redis_url).script_flush()
    assert (await acquire("k", (Quota("q", 5, 60),), 1)).used == (2,)


@pytest.mark.usefixtures("close_stores")
async def test_a_refused_connection_is_one_storage_error() -> None:
    store = open_store("redis://127.0.0.1:1/0", timeout=TIMEOUT)  # refused at once
    acquire = store.limiter("fixed-window")  # type: ignore[union-attr]
    with pytest.raises(StorageError, match="ConnectionError"):
        await acquire("k", (Quota("q", 5, 60),), 1)


@pytest.mark.parametrize(
    ("uri", "kind"),
    [
        ("redis://localhost:6379/0", RedisStore),
        ("rediss://localhost:6380", RedisStore),
        ("redis+cluster://a:7000,b:7001", RedisStore),
        ("redis+sentinel://a:26379/mymaster", RedisStore),
        ("async+redis://localhost:6379", RedisStore),
        ("async+memory://", LimitsStore),
    ],
)
def test_uris_map_to_limits_async_storages(uri: str, kind: type) -> None:
    store = open_store(uri)
    assert isinstance(store, kind)
    assert store.uri.startswith("async+")  # type: ignore[union-attr]


def test_sentinel_reads_rate_decisions_from_the_primary() -> None:
    store = open_store("redis+sentinel://a:26379/mymaster")
    assert store.options["use_replicas"] is False  # type: ignore[union-attr]


def test_clients_in_other_packages_are_required_by_name() -> None:
    with pytest.raises(Exception, match="needs the 'memcachio' package"):
        open_store("memcached://localhost:11211")


# --- the breaker ---------------------------------------------------------------------


def test_breaker_opens_after_three_failures_and_grows_its_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "apiguard.storage")
    with FrozenClock() as clock:
        breaker = StoreBreaker("redis://cache")
        for _ in range(3):
            assert breaker.allow()
            breaker.failure(TimeoutError())
        assert breaker.state == "open"
        assert not breaker.allow()
        assert breaker.retry_after() == 0.5
        clock.advance(0.5)
        assert breaker.allow()  # the probe
        assert not breaker.allow()  # only one at a time
        breaker.failure(TimeoutError())
        assert breaker.retry_after() == 1.0  # doubled
        clock.advance(1.0)
        assert breaker.allow()
        breaker.success()
        assert breaker.state == "closed"
        assert breaker.allow()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2  # once when the outage starts, once when it ends
    assert "failed (TimeoutError)" in messages[0]
    assert "back after 4 failed calls" in messages[1]


def test_breaker_interval_is_capped() -> None:
    with FrozenClock() as clock:
        breaker = StoreBreaker("s", cap=4.0)
        for _ in range(3):
            breaker.failure(OSError())
        for _ in range(10):
            clock.advance(breaker.retry_after())
            assert breaker.allow()
            breaker.failure(OSError())
        assert breaker.retry_after() == 4.0


def test_a_probe_that_never_reports_does_not_hold_the_breaker() -> None:
    with FrozenClock() as clock:
        breaker = StoreBreaker("s", probe_timeout=1.0)
        for _ in range(3):
            breaker.failure(OSError())
        clock.advance(0.5)
        assert breaker.allow()  # a probe whose request is then cancelled
        clock.advance(1.0)
        assert breaker.allow()


@pytest.mark.usefixtures("close_stores")
async def test_changing_the_strategy_of_a_limiter_never_meets_old_keys(redis_url: str) -> None:
    """Each strategy has its own keys: a redeploy with another strategy keeps working."""
    for strategy in STRATEGIES:
        acquire = open_store(redis_url, timeout=TIMEOUT).limiter(strategy)  # type: ignore[union-attr, arg-type]
        assert (await acquire("k", (Quota("same", 5, 60),), 1)).used == (1,)


# --- the fixed window on apiguard's clock ----------------------------------------


@pytest.mark.usefixtures("close_stores")
async def test_fixed_window_counters_are_named_by_window_and_expire_with_it(
    redis_url: str,
) -> None:
    """One counter per window index; it is made with its expiry: window end + 1 s grace."""
    store = open_store(redis_url, timeout=TIMEOUT)
    assert isinstance(store, RedisStore)
    acquire = store.limiter("fixed-window")
    sync = redis.Redis.from_url(redis_url)
    with FrozenClock(wall=1_700_000_000.0) as clock:  # 20 s into a minute
        verdict = await acquire("k", (Quota("q", 5, 60),), 1)
        assert verdict.reset == (40.0,)
        await acquire("k", (Quota("q", 5, 60),), 1)
        clock.advance(40)  # the next minute: a new counter
        assert (await acquire("k", (Quota("q", 5, 60),), 1)).used == (1,)
    keys = sorted(k.decode() for k in sync.keys("*"))
    assert keys == [
        "apiguard:{k}:fw:q:28333333",
        "apiguard:{k}:fw:q:28333334",
    ]
    assert sync.get(keys[0]) == b"2"
    # Expiries are relative (set from apiguard's clock, run on the server's).
    assert 40_000 < sync.pttl(keys[0]) <= 41_000
    assert 60_000 < sync.pttl(keys[1]) <= 61_000


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("store", ["memory", "redis"])
@pytest.mark.usefixtures("close_stores")
async def test_mixed_costs_stay_exact_under_concurrency(
    store: str, strategy: str, request: pytest.FixtureRequest
) -> None:
    """Requests of 1 and 7 units at once never take more than the quota, and fill it exactly.

    A refused 7-unit request must not make a 1-unit request that fits look
    refused: the script takes its units back atomically.
    """
    import asyncio
    import random

    storage = "memory://"
    if store == "redis":
        storage = request.getfixturevalue("redis_url")
    app = limited_app(
        limit="50/hour",
        strategy=strategy,
        storage=storage,
        store_timeout=TIMEOUT,
        cost={"POST /orders": 7},
    )
    methods = ["GET"] * 120 + ["POST"] * 30
    random.Random(5).shuffle(methods)
    async with client(app) as http:
        responses = await asyncio.gather(*(http.request(m, "/orders") for m in methods))
        units = sum(
            (7 if m == "POST" else 1)
            for m, r in zip(methods, responses, strict=True)
            if r.status_code == 200
        )
        assert units <= 50
        while (await http.get("/orders")).status_code == 200:  # fill what is left, unit by unit
            units += 1
    assert units == 50


# --- keys that are not valid UTF-8 -----------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("client_kind", ["resp", "redis-py"])
@pytest.mark.parametrize("limit", ["3/minute", "3/minute; 100/hour"])
async def test_a_key_with_an_unpaired_surrogate_is_counted_not_a_500(
    redis_url: str,
    strategy: str,
    client_kind: str,
    limit: str,
    close_stores: list[RemoteStore],
) -> None:
    """Review finding 9: a key holding an unpaired surrogate (a token `sub`) used to 500.

    It must be counted like any key, as its own bucket, and never count as
    a store failure (which would let a client open the breaker).
    """
    storage = redis_url if client_kind == "resp" else redis_url + "?socket_timeout=5"

    def hostile(scope: dict[str, Any]) -> str:
        lone = 0xD800 if dict(scope["headers"]).get(b"x-who") else 0xDFFF
        return chr(lone) + "evil"

    app = limited_app(
        limit=limit, strategy=strategy, storage=storage, key=hostile, store_timeout=TIMEOUT
    )
    async with client(app) as http:
        codes = [(await http.get("/orders", headers={"x-who": "1"})).status_code for _ in range(4)]
        other = await http.get("/orders")  # another surrogate: another bucket
    assert codes == [200, 200, 200, 429]
    assert other.status_code == 200
    used = [s for s in close_stores if isinstance(s, RedisStore) and (s._client or s._storage)]
    assert used
    assert all(s.breaker.failures == 0 for s in used)


# --- expiries never depend on a reply --------------------------------------------


@pytest.mark.slow
async def test_counters_get_their_expiry_even_when_replies_come_after_the_deadline(
    own_redis: Any, close_stores: list[RemoteStore]
) -> None:
    """Review finding 7: the expiry was sent only after SEEING count == 1.

    Redis stalls (a fork, CLIENT PAUSE) past the store timeout: it still
    runs every command it was sent, but nobody reads the replies in time.
    Every counter it made must carry an expiry all the same.
    """
    import asyncio

    app = limited_app(limit="100/hour", storage=own_redis.url, key=by_header("x-client"))
    sync = redis.Redis.from_url(own_redis.url)
    async with client(app) as http:
        assert (await http.get("/orders", headers={"x-client": "warmup"})).status_code == 200
        sync.execute_command("CLIENT", "PAUSE", "600", "WRITE")  # longer than the 0.25 s timeout
        stalled = await asyncio.gather(
            *(http.get("/orders", headers={"x-client": f"c{i}"}) for i in range(50))
        )
        assert {r.status_code for r in stalled} == {200}  # fail-open through the stall
        # Redis runs what it was sent once the pause ends; wait for it, boundedly.
        for _ in range(200):
            if len(sync.keys("apiguard:*")) >= 51:
                break
            await asyncio.sleep(0.05)
    keys = sync.keys("apiguard:*")
    assert len(keys) == 51  # Redis did run the increments
    assert [k for k in keys if sync.pttl(k) < 0] == []
