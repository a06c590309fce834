"""Redis Cluster and Sentinel through redis-py: connections, pools, breakers, start-up checks."""

from __future__ import annotations

import asyncio
import collections

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


def _ours(server: RedisServer, name: str) -> int:
    """Connections the server holds for clients named `name`."""
    return sum(f" name={name} " in line for line in server.query("CLIENT", "LIST").splitlines())


@pytest.mark.parametrize("kind", ["cluster", "sentinel"])
async def test_calls_beyond_the_pool_wait_for_a_connection(
    request: pytest.FixtureRequest, kind: str
) -> None:
    """redis-py's pool refuses a command beyond its size at once; a call waits instead.

    300 calls in flight on a pool of 4 connections: every one is counted,
    and no node ever holds more than 4 of the store's connections for commands.
    """
    url = request.getfixturevalue(f"{kind}_url")
    name = f"pool-{kind}"
    store = open_store(f"{url}?max_connections=4&client_name={name}", timeout=5.0)
    await store.open()
    acquire = store.limiter("fixed-window")
    quota = (Quota("q", 50, 3600),)
    verdicts = await asyncio.gather(*(acquire("burst", quota, 1) for _ in range(300)))  # type: ignore[misc]
    assert collections.Counter(v.admitted for v in verdicts) == {True: 50, False: 250}
    keys = [f"spread-{n}" for n in range(300)]  # every shard at once
    await asyncio.gather(*(acquire(key, quota, 1) for key in keys))  # type: ignore[misc]
    servers = (
        request.getfixturevalue("redis_cluster").primaries()
        if kind == "cluster"
        else [request.getfixturevalue("redis_sentinel").primary()]
    )
    held = {server.port: _ours(server, name) for server in servers}
    # Cluster: one more on a seed, the connection redis-py reads the slots' map on.
    assert all(count <= 4 + (kind == "cluster") for count in held.values()), held
    assert sum(_ours(server, name) for server in servers) >= 1
    await store.aclose()
