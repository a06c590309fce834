"""One conformance suite for the store protocol, run on every store.

The rate-limit part (the atomic hit of every quota of a policy) and the
key-value part (claims with owner tokens, values as bytes) behave the same
on the memory store, on apiguard's RESP client and on redis-py, each against
a real redis-server, and through redis-py on a real Redis Cluster and a real
Sentinel set-up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from apiguard import StorageError
from apiguard.storage import Claim, KeyValueStore, Quota, Store, Verdict, open_store
from apiguard.testing import FrozenClock
from tests._servers import RedisServer
from tests.conftest import ENGINES

pytestmark = pytest.mark.anyio

STRATEGIES = ["fixed-window", "moving-window", "sliding-window-counter"]
#: Keys a client chooses: braces and percent signs (hash tags on Cluster),
#: separators, non-ASCII, an unpaired surrogate, an empty key.
HOSTILE_KEYS = ["}abc", "{x}", "a{b}c", "%7B", "a:b/c", "über", "\ud800", "", "k" * 300]


@pytest.fixture(params=["memory", *ENGINES])
async def store(
    request: pytest.FixtureRequest, engine_url: Callable[[str], str]
) -> AsyncIterator[Store]:
    """Each store kind, each Redis engine against a real server of its own kind."""
    uri = "memory://" if request.param == "memory" else engine_url(request.param)
    opened = open_store(uri, timeout=2.0)
    await opened.open()
    yield opened
    await opened.aclose()


def kv_of(store: Store) -> KeyValueStore:
    kv = store.kv
    assert kv is not None
    return kv


async def hit(store: Store, strategy: str, key: str, quotas: tuple[Quota, ...]) -> Verdict:
    result = store.limiter(strategy)(key, quotas, 1)  # type: ignore[arg-type]
    if isinstance(result, Verdict):
        return result
    return await result  # type: ignore[misc]


# --- the rate-limit part --------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_each_strategy_admits_exactly_the_amount(store: Store, strategy: str) -> None:
    quota = (Quota("q", 3, 3600),)
    verdicts = [await hit(store, strategy, "client", quota) for _ in range(5)]
    assert [v.admitted for v in verdicts] == [True, True, True, False, False]
    assert verdicts[-1].violated == (0,)
    assert 0 < verdicts[-1].retry_after <= 3600


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_a_refusal_by_one_quota_is_counted_by_none(store: Store, strategy: str) -> None:
    quotas = (Quota("burst", 2, 3600), Quota("day", 5, 86400))
    for _ in range(2):
        assert (await hit(store, strategy, "client", quotas)).admitted
    refused = await hit(store, strategy, "client", quotas)
    assert (refused.admitted, refused.used, refused.violated) == (False, (2, 2), (0,))


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_hostile_keys_are_counted_apart_and_exactly(store: Store, strategy: str) -> None:
    """No key a client sends moves its counters, or reaches another key's."""
    quotas = (Quota("burst", 2, 3600), Quota("day", 9, 86400))
    for key in HOSTILE_KEYS:
        verdicts = [await hit(store, strategy, key, quotas) for _ in range(3)]
        assert [v.admitted for v in verdicts] == [True, True, False], key


# --- the key-value part ---------------------------------------------------------------


async def test_a_claim_is_won_once(store: Store) -> None:
    kv = kv_of(store)
    first = await kv.claim("order-1", 30)
    assert first.token is not None
    assert first.value is None
    assert await kv.claim("order-1", 30) == Claim(None, None, b"")
    assert await kv.get("order-1") is None  # claimed, no value yet


async def test_a_claim_carries_a_note_its_rivals_read(store: Store) -> None:
    """The idempotency layer's fingerprint: a rival tells 409 (same) from 422 (another)."""
    kv = kv_of(store)
    fingerprint = bytes(range(256)) * 2
    token = (await kv.claim("order-2", 30, note=fingerprint)).token
    assert token is not None
    assert await kv.claim("order-2", 30, note=b"other") == Claim(None, None, fingerprint)
    assert await kv.renew("order-2", token, 30)  # the note changes nothing for the owner
    assert await kv.put("order-2", b"done", 30, token=token)
    assert await kv.claim("order-2", 30) == Claim(None, b"done", None)
    assert (await kv.claim("bare", 30)).token is not None
    assert await kv.claim("bare", 30) == Claim(None, None, b"")  # a claim without a note


async def test_concurrent_claims_have_one_winner(store: Store) -> None:
    kv = kv_of(store)
    claims = await asyncio.gather(*(kv.claim("race", 30) for _ in range(50)))
    assert sum(claim.token is not None for claim in claims) == 1


async def test_the_owner_puts_a_value_over_its_claim(store: Store) -> None:
    kv = kv_of(store)
    token = (await kv.claim("k", 30)).token
    assert token is not None
    assert not await kv.put("k", b"stolen", 30, token="not-the-token")
    assert not await kv.put("k", b"free", 30)  # a live claim is only its owner's
    assert await kv.put("k", b"response", 30, token=token)
    assert await kv.get("k") == b"response"
    assert await kv.claim("k", 30) == Claim(None, b"response")
    assert not await kv.put("k", b"again", 30, token=token)  # the claim is gone


async def test_only_the_owner_renews_or_releases(store: Store) -> None:
    kv = kv_of(store)
    token = (await kv.claim("k", 30)).token
    assert token is not None
    assert not await kv.renew("k", "other", 30)
    assert not await kv.release("k", "other")
    assert await kv.renew("k", token, 60)
    assert await kv.release("k", token)
    assert not await kv.release("k", token)
    assert (await kv.claim("k", 30)).token is not None


async def test_values_without_claims_are_put_replaced_and_deleted(store: Store) -> None:
    kv = kv_of(store)
    payload = bytes(range(256))
    assert await kv.put("stale:/orders", payload, 30)
    assert await kv.get("stale:/orders") == payload
    assert await kv.put("stale:/orders", b"", 30)
    assert await kv.get("stale:/orders") == b""
    await kv.delete("stale:/orders")
    assert await kv.get("stale:/orders") is None
    await kv.delete("never-there")


async def test_hostile_keys_never_meet(store: Store) -> None:
    kv = kv_of(store)
    for index, key in enumerate(HOSTILE_KEYS):
        assert await kv.put(key, b"%d" % index, 30)
    assert [await kv.get(key) for key in HOSTILE_KEYS] == [
        b"%d" % index for index in range(len(HOSTILE_KEYS))
    ]


async def test_claims_and_values_expire(store: Store) -> None:
    kv = kv_of(store)
    if store.display.startswith("memory"):
        with FrozenClock() as frozen:
            assert (await kv.claim("k", 5)).token is not None
            frozen.advance(5.001)
            assert (await kv.claim("k", 5)).token is not None
            assert await kv.put("v", b"x", 1)
            frozen.advance(1.001)
            assert await kv.get("v") is None
        return
    # A real server keeps real time: a short expiry, then wait (bounded) for it.
    assert (await kv.claim("k", 0.05)).token is not None
    assert await kv.put("v", b"x", 0.05)
    assert await _eventually(lambda: _claimable(kv, "k"))
    assert await _eventually(lambda: _absent(kv, "v"))


async def _claimable(kv: KeyValueStore, key: str) -> bool:
    return (await kv.claim(key, 30)).token is not None


async def _absent(kv: KeyValueStore, key: str) -> bool:
    return await kv.get(key) is None


async def _eventually(check: Any, within: float = 10.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        outcome: Awaitable[bool] = check()
        if await outcome:
            return True
        await asyncio.sleep(0.02)
    return False


# --- failures -------------------------------------------------------------------------


@pytest.mark.parametrize("client", ["resp", "redis-py"])
async def test_a_dead_server_is_a_storage_error_for_every_call(
    own_redis: RedisServer, client: str
) -> None:
    uri = own_redis.url + ("?health_check_interval=30" if client == "redis-py" else "")
    store = open_store(uri, timeout=0.5)
    await store.open()
    kv = kv_of(store)
    assert (await kv.claim("k", 30)).token is not None
    own_redis.kill()
    try:
        for call in (
            lambda: kv.claim("k2", 30),
            lambda: kv.get("k"),
            lambda: kv.put("k", b"x", 30),
            lambda: hit(store, "fixed-window", "c", (Quota("q", 1, 60),)),
        ):
            with pytest.raises(StorageError):
                async with asyncio.timeout(10):  # never a hang, whatever the error
                    await call()
    finally:
        await store.aclose()


async def test_the_memory_store_never_evicts_a_live_claim() -> None:
    """Full of claims, a new claim fails (the layer's fail mode decides); values give way."""
    store = open_store("memory://?max_kv_entries=3")
    kv = kv_of(store)
    with FrozenClock():
        assert await kv.put("value", b"old", 60)
        tokens = [(await kv.claim(f"c{n}", 60)).token for n in range(3)]
        assert all(tokens)  # the third claim evicted the value, not a claim
        assert await kv.get("value") is None
        with pytest.raises(StorageError, match="full of live claims"):
            await kv.claim("c3", 60)
        assert all([await kv.release(f"c{n}", t) for n, t in enumerate(tokens)])  # type: ignore[arg-type]
        assert (await kv.claim("c3", 60)).token is not None


async def test_the_memory_store_bounds_its_bytes() -> None:
    store = open_store("memory://?max_kv_bytes=1000")
    kv = kv_of(store)
    with FrozenClock():
        for n in range(20):
            assert await kv.put(f"k{n}", b"x" * 100, 60)
        assert kv.bytes <= 1000  # type: ignore[attr-defined]
        with pytest.raises(StorageError, match="exceeds max_bytes"):
            await kv.put("big", b"x" * 2000, 60)


# --- the readiness ping ---------------------------------------------------------------


async def test_ping_reaches_the_store(store: Store) -> None:
    """One round trip on every store (the memory store has nothing to reach)."""
    await store.ping()
    await store.ping(timeout=0.5)


async def test_ping_of_a_stopped_store_fails_then_meets_the_open_breaker(
    own_redis: RedisServer,
) -> None:
    store = open_store(own_redis.url, timeout=0.5)
    await store.open()
    own_redis.kill()
    try:
        failures = []
        for _ in range(4):
            with pytest.raises(StorageError) as failed:
                await store.ping()
            failures.append(failed.value.state)
        assert failures[-1] == "open"  # three failures opened it: no wait at all
    finally:
        await store.aclose()
