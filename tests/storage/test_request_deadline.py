"""A request's deadline bounds a store call; running out of it is not the store's failure."""

from __future__ import annotations

import asyncio

import pytest

from apiguard import StorageError
from apiguard.storage import RemoteStore, open_store
from tests._servers import RedisServer

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("client", ["resp", "redis-py"])
async def test_a_deadline_already_past_is_refused_without_a_call(
    own_redis: RedisServer, client: str
) -> None:
    uri = own_redis.url + ("?health_check_interval=30" if client == "redis-py" else "")
    store = open_store(uri, timeout=2.0)
    assert isinstance(store, RemoteStore)
    await store.open()
    try:
        assert store.kv is not None
        with pytest.raises(StorageError, match="deadline"):
            await store.kv.claim("order-1", 30, timeout=0.0)
        assert store.breaker.failures == 0
    finally:
        await store.aclose()


@pytest.mark.parametrize("client", ["resp", "redis-py"])
async def test_a_frozen_store_cut_short_by_the_deadline_is_not_counted_against_it(
    own_redis: RedisServer, client: str
) -> None:
    """Five calls cut at a 0.2 s deadline (the store allows 5 s): the breaker stays closed."""
    uri = own_redis.url + ("?health_check_interval=30" if client == "redis-py" else "")
    store = open_store(uri, timeout=5.0)
    assert isinstance(store, RemoteStore)
    await store.open()
    kv = store.kv
    assert kv is not None
    assert await kv.put("k", b"v", 30)
    own_redis.freeze()
    try:
        for _ in range(5):
            with pytest.raises(StorageError, match="deadline"):
                async with asyncio.timeout(10):  # never the store's 5 s, let alone a hang
                    await kv.get("k", timeout=0.2)
        assert (store.breaker.failures, store.breaker.state) == (0, "closed")
    finally:
        own_redis.thaw()
        await store.aclose()
