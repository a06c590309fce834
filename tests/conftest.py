from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from apiguard._clock import clock
from apiguard.storage import RemoteStore
from apiguard.testing import reset_state
from tests._clock import MID_WINDOW
from tests._cluster import RedisCluster
from tests._sentinel import RedisSentinel
from tests._servers import RedisServer, redis_server_binary

# Property tests hold on a loaded machine: no per-example deadline, and no
# failure because generating examples was slow (HealthCheck.too_slow).
settings.register_profile("apiguard", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("apiguard")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _fresh_state() -> Iterator[None]:
    reset_state()
    yield
    reset_state()


@pytest.fixture
def mid_window_wall_clock() -> Iterator[float]:
    """The wall clock pinned mid-window for every layer; monotonic time keeps running.

    Fixed windows and sliding window counters are aligned on the wall clock,
    so a test sending four requests against `3/minute` fails when a minute
    starts between two of them: once in a few hundred runs, more on a loaded
    machine. Pinned, no window edge falls inside a test, while store
    timeouts, breakers and real waits keep real (monotonic) time. A test
    that moves time itself uses `FrozenClock`, which restores the pin.
    """
    clock.time = lambda: MID_WINDOW
    yield MID_WINDOW
    clock.reset()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the session; fails (never skips) when there is none."""
    server = RedisServer(redis_server_binary())
    server.start()
    yield server
    server.kill()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A running, empty redis-server."""
    redis_server.start()
    redis_server.thaw()
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, to kill, freeze and restart."""
    server = RedisServer(redis_server_binary())
    server.start()
    yield server
    server.thaw()
    server.kill()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """One Redis Cluster (3 primaries, a replica each) for the session; fails, never skips."""
    cluster = RedisCluster(node_timeout_ms=2000)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster: RedisCluster) -> str:
    """The session's cluster, every primary flushed: `redis+cluster://` with every node."""
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[RedisSentinel]:
    """One Sentinel set-up (a primary, 2 replicas, 3 sentinels) for the session."""
    sentinel = RedisSentinel()
    sentinel.start()
    yield sentinel
    sentinel.stop()


@pytest.fixture
def sentinel_url(redis_sentinel: RedisSentinel) -> str:
    """The session's sentinel set-up, primary flushed: `redis+sentinel://.../mymaster`."""
    redis_sentinel.flush()
    return redis_sentinel.url


#: The Redis engines: apiguard's client, redis-py on one node, Cluster, Sentinel.
ENGINES = ("resp", "redis-py", "cluster", "sentinel")


@pytest.fixture
def engine_url(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """`engine_url(kind)`: the session's server of that engine, emptied: its URI.

    `"redis-py"` is the single node reached through an option only redis-py reads.
    """

    def url(kind: str) -> str:
        if kind == "resp":
            return str(request.getfixturevalue("redis_url"))
        if kind == "redis-py":
            return f"{request.getfixturevalue('redis_url')}?health_check_interval=30"
        if kind in ("cluster", "sentinel"):
            return str(request.getfixturevalue(f"{kind}_url"))
        raise LookupError(f"no engine {kind!r}: one of {ENGINES}")

    return url


@pytest.fixture
def make_cluster() -> Iterator[Callable[..., RedisCluster]]:
    """Start a cluster of the test's own (to kill and freeze nodes); stopped after the test.

    `make_cluster(**options)` takes `RedisCluster`'s options (`node_timeout_ms`, ...).
    """
    made: list[RedisCluster] = []

    def make(**options: Any) -> RedisCluster:
        cluster = RedisCluster(**options)
        made.append(cluster)
        cluster.start()
        return cluster

    yield make
    for cluster in made:
        cluster.stop()


@pytest.fixture
def make_sentinel() -> Iterator[Callable[..., RedisSentinel]]:
    """Start a Sentinel set-up of the test's own (to fail over); stopped after the test.

    `make_sentinel(**options)` takes `RedisSentinel`'s options (`down_after_ms`, ...).
    """
    made: list[RedisSentinel] = []

    def make(**options: Any) -> RedisSentinel:
        sentinel = RedisSentinel(**options)
        made.append(sentinel)
        sentinel.start()
        return sentinel

    yield make
    for sentinel in made:
        sentinel.stop()


@pytest.fixture
async def close_stores(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[RemoteStore]]:
    """Every network store a test opens, closed in the test's event loop at its end."""
    opened: list[RemoteStore] = []
    original = RemoteStore.__init__

    def tracking(self: RemoteStore, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        opened.append(self)

    monkeypatch.setattr(RemoteStore, "__init__", tracking)
    yield opened
    for store in opened:
        await store.aclose()
