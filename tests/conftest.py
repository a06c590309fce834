from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from apiguard.storage import RemoteStore
from apiguard.testing import reset_state
from tests._servers import RedisServer, redis_server_binary


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _fresh_state() -> Iterator[None]:
    reset_state()
    yield
    reset_state()


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
