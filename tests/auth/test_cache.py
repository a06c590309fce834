"""The bounded cache of verified results shared by `JWTAuth` and `APIKeyAuth`."""

from __future__ import annotations

import pytest

from apiguard import APIKeyAuth, JWTAuth, Principal
from apiguard.auth._cache import ExpiringCache
from apiguard.testing import FrozenClock, SigningKey
from tests.auth._helpers import AUDIENCE, ISSUER, bearer, call, claims, make_app

pytestmark = pytest.mark.anyio


def _key(n: int) -> bytes:
    return n.to_bytes(32, "big")


def test_it_keeps_at_most_size_entries_dropping_the_oldest() -> None:
    with FrozenClock(wall=1000.0):
        cache: ExpiringCache[str] = ExpiringCache(3, wall=True)
        for n in range(5):
            cache.put(_key(n), f"v{n}", 2000.0)
        assert len(cache) == 3
        assert cache.keys() == [_key(2), _key(3), _key(4)]
        assert [cache.get(_key(n)) for n in range(5)] == [None, None, "v2", "v3", "v4"]


def test_putting_a_key_again_evicts_nothing() -> None:
    with FrozenClock(wall=1000.0):
        cache: ExpiringCache[str] = ExpiringCache(2, wall=True)
        cache.put(_key(0), "a", 2000.0)
        cache.put(_key(1), "b", 2000.0)
        cache.put(_key(1), "b again", 2000.0)  # two concurrent verifications of one token
        assert cache.keys() == [_key(0), _key(1)]
        assert cache.get(_key(1)) == "b again"


def test_size_zero_keeps_nothing() -> None:
    cache: ExpiringCache[str] = ExpiringCache(0, wall=True)
    cache.put(_key(0), "a", float("inf"))
    assert len(cache) == 0
    assert cache.get(_key(0)) is None


@pytest.mark.parametrize("wall", [True, False], ids=["wall", "monotonic"])
def test_an_entry_expires_at_its_own_time_on_its_clock(wall: bool) -> None:
    """Exclusive expiry, read from the core clock (frozen here); the other clock is ignored."""
    # The two clocks far apart, so that reading the wrong one would fail the test.
    with FrozenClock(
        wall=1000.0 if wall else 9000.0, monotonic=9000.0 if wall else 1000.0
    ) as frozen:
        cache: ExpiringCache[str] = ExpiringCache(10, wall=wall)
        cache.put(_key(0), "short", 1010.0)
        cache.put(_key(1), "long", 1060.0)
        frozen.advance(9.5)
        assert (cache.get(_key(0)), cache.get(_key(1))) == ("short", "long")
        frozen.advance(0.5)
        assert (cache.get(_key(0)), cache.get(_key(1))) == (None, "long")
        assert cache.keys() == [_key(1)]  # the expired entry was dropped on lookup


def test_clear_and_discard_forget() -> None:
    with FrozenClock(wall=1000.0):
        cache: ExpiringCache[str] = ExpiringCache(10, wall=True)
        for n in range(3):
            cache.put(_key(n), "v", 2000.0)
        cache.discard(_key(1))
        cache.discard(_key(9))  # absent: nothing happens
        assert cache.keys() == [_key(0), _key(2)]
        assert _key(0) in cache
        cache.clear()
        assert len(cache) == 0


# --- the same cache behind both authenticators -----------------------------------------


async def test_jwt_tokens_are_cached_until_exp_and_bounded(rs256: SigningKey) -> None:
    auth = JWTAuth(
        key=rs256.verification_key,
        algorithms=["RS256"],
        audience=AUDIENCE,
        issuer=ISSUER,
        leeway=0,
        cache_size=2,
    )
    app = make_app(auth)
    with FrozenClock(wall=1_700_000_000.0) as frozen:
        tokens = [rs256.token(claims(sub=f"u{n}"), expires_in=60 + n) for n in range(3)]
        for token in tokens:
            assert (await call(app, headers=bearer(token))).status_code == 200
        assert len(auth._cache) == 2  # the first token went first
        frozen.advance(61)  # past the second token's exp, not the third's
        assert (await call(app, headers=bearer(tokens[1]))).status_code == 401
        assert (await call(app, headers=bearer(tokens[2]))).status_code == 200
        assert len(auth._cache) == 1


async def test_api_keys_found_by_lookup_are_cached_for_the_ttl_and_bounded() -> None:
    queries: list[str] = []

    def lookup(key: str) -> Principal:
        queries.append(key)
        return Principal(id=key)

    auth = APIKeyAuth(lookup=lookup, cache_ttl=30, cache_size=2)
    app = make_app(auth)
    keys = [f"k-partner-{n:04d}" for n in range(3)]
    with FrozenClock() as frozen:
        for key in keys:
            assert (await call(app, headers={"x-api-key": key})).status_code == 200
        assert len(auth._cache) == 2
        assert (await call(app, headers={"x-api-key": keys[2]})).json()["name"] == keys[2]
        assert queries == keys  # the newest was served from the cache
        frozen.advance(30)
        assert (await call(app, headers={"x-api-key": keys[2]})).status_code == 200
        assert queries == [*keys, keys[2]]  # expired: looked up again


async def test_cache_ttl_zero_keeps_no_looked_up_key() -> None:
    queries: list[str] = []

    def lookup(key: str) -> Principal:
        queries.append(key)
        return Principal(id="partner")

    auth = APIKeyAuth(lookup=lookup, cache_ttl=0)
    app = make_app(auth)
    for _ in range(2):
        assert (await call(app, headers={"x-api-key": "k-partner-0000"})).status_code == 200
    assert len(queries) == 2
    assert len(auth._cache) == 0
