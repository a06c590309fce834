"""Redis Cluster and Sentinel through redis-py: connections, pools, breakers, start-up checks."""

from __future__ import annotations

import asyncio

import pytest

from apiguard.storage import Quota, RemoteStore, open_store
from tests._sentinel import RedisSentinel
from tests._servers import RedisServer

pytestmark = pytest.mark.anyio

ONE = (Quota("q", 1_000_000, 3600),)


def _clients(server: RedisServer) -> int:
    """Connections the server holds, not counting the one that asks."""
    return len(server.query("CLIENT", "LIST").splitlines()) - 1


async def test_aclose_closes_the_connections_to_the_sentinels_too(
    redis_sentinel: RedisSentinel, sentinel_url: str
) -> None:
    """The sentinels are asked for the primary: their connections are the store's too."""
    before = {s.port: _clients(s) for s in redis_sentinel.sentinels}
    store = open_store(sentinel_url, timeout=2.0)
    assert isinstance(store, RemoteStore)
    await store.open()
    acquire = store.limiter("fixed-window")
    await asyncio.gather(*(acquire(f"k{n}", ONE, 1) for n in range(20)))  # type: ignore[misc]
    assert store.kv is not None
    await store.kv.claim("x", 30)
    during = {s.port: _clients(s) for s in redis_sentinel.sentinels}
    assert sum(during.values()) > sum(before.values())  # the store asked a sentinel
    await store.aclose()
    after = {}
    for _ in range(100):  # the server sees a close a moment later; bounded
        after = {s.port: _clients(s) for s in redis_sentinel.sentinels}
        if after == before:
            break
        await asyncio.sleep(0.02)
    assert after == before
