"""Redis engines: what the rate-limit layer costs a request on each, in one run.

The layer (one quota, each strategy) over the bare app, on loopback:

- `redis://` served by apiguard's RESP client (one pipelined connection);
- `redis://` served by redis-py (a URI option only redis-py reads sends it
  there), with its blocking connection pool;
- `redis+cluster://`: redis-py's `RedisCluster` on 3 primaries (a replica
  each), the call through the breaker of its key's primary;
- `redis+sentinel://`: redis-py's Sentinel client on a primary with 2
  replicas and 3 sentinels, calls bounded by `max_connections`;

beside a PING on each client. Every case's overhead is against the bare app
in the same round (see `benchmarks.driver`).

Servers: started for the run (redis-server and redis-cli from PATH, with
the test suite's helpers), unless `APIGUARD_BENCH_REDIS`,
`APIGUARD_BENCH_CLUSTER` and `APIGUARD_BENCH_SENTINEL` give their URIs.
"""

from __future__ import annotations

import atexit
import functools
import os
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.middleware import Middleware

from apiguard import RateLimitMiddleware, guard
from apiguard.storage import RedisStore, open_store
from benchmarks._redis_cases import _redis_url, _store_of
from benchmarks.apps import starlette_app
from benchmarks.driver import ASGICase, Case, FuncCase
from benchmarks.ratelimit import GET, HIGH, REDISPY, STRATEGIES

TITLE = "engines: µs per request of the rate-limit layer on each Redis engine"

#: What the cases opened, closed by `aclose()` (a run in a longer-lived loop: the tests).
_OPENED: list[Callable[[], Awaitable[Any]]] = []


@functools.cache
def _cluster_url() -> str:
    url = os.environ.get("APIGUARD_BENCH_CLUSTER")
    if url:
        return url
    from tests._cluster import RedisCluster

    cluster = RedisCluster()
    cluster.start()
    atexit.register(cluster.stop)
    return cluster.url


@functools.cache
def _sentinel_url() -> str:
    url = os.environ.get("APIGUARD_BENCH_SENTINEL")
    if url:
        return url
    from tests._sentinel import RedisSentinel

    sentinel = RedisSentinel()
    sentinel.start()
    atexit.register(sentinel.stop)
    return sentinel.url


async def aclose() -> None:
    """Close every connection the cases opened."""
    while _OPENED:
        await _OPENED.pop()()


def _engines() -> dict[str, str]:
    single = _redis_url()
    return {
        "redis:// (apiguard RESP)": single,
        "redis:// (redis-py)": single + REDISPY,
        "redis+cluster://": _cluster_url(),
        "redis+sentinel://": _sentinel_url(),
    }


async def _ping(store: RedisStore) -> Any:
    """One PING on the client that serves the store (a Cluster's: the key's primary)."""
    if store.topology is not None and store.topology.client is None:
        await store.open()  # the slots' map, the primary's address
    if store.endpoint is not None:
        return await store.client().execute(b"*1\r\n$4\r\nPING\r\n")
    client = store.redis_py()
    if store.cluster:
        node = client.get_node_from_key(b"apiguard:{203.0.113.9}:")
        return await client.execute_command("PING", target_nodes=node)
    return await client.ping()


def cases() -> list[Case]:
    out: list[Case] = [ASGICase("starlette GET", starlette_app(), GET)]
    for engine, url in _engines().items():
        store = open_store(url, timeout=1.0)
        assert isinstance(store, RedisStore)
        _OPENED.append(store.aclose)
        out.append(FuncCase(f"PING: {engine}", lambda i, s=store: _ping(s), is_async=True))
    for engine, url in _engines().items():
        for strategy in STRATEGIES:
            app = guard(
                starlette_app(),
                Middleware(RateLimitMiddleware, limit=HIGH, strategy=strategy, storage=url),
            )
            _OPENED.append(lambda app=app: _store_of(app).aclose())
            out.append(
                ASGICase(f"+ ratelimit {engine} {strategy}", app, GET, baseline="starlette GET")
            )
    return out
