"""The Redis plumbing the rate-limit, stack and engine suites share.

The redis-server of the run (`APIGUARD_BENCH_REDIS`, else one started from
PATH on a free port), the connections the cases open and `aclose()` that
closes them, the raw-socket PING, the pass-through layer that awaits one
PING (the floor of any layer making one round trip), the case that counts
a request's Redis round trips, and the store of a guarded app's rate limit.
`benchmarks.ratelimit` imports these back, under the same names.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from apiguard import RateLimitMiddleware
from benchmarks.driver import ASGICase, FuncCase

#: What the Redis rows opened, closed by `aclose()` (a run in a longer-lived loop: the tests).
_OPENED: list[Callable[[], Awaitable[Any]]] = []


async def aclose() -> None:
    """Close every Redis connection the cases opened."""
    while _OPENED:
        await _OPENED.pop()()


@functools.cache
def _redis_url() -> str:
    url = os.environ.get("APIGUARD_BENCH_REDIS")
    if url:
        return url
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("ratelimit benchmark: no redis-server on PATH; set APIGUARD_BENCH_REDIS")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    atexit.register(proc.kill)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.02)
    return f"redis://127.0.0.1:{port}/0"


class _RawPing(asyncio.Protocol):
    """The floor: `PING` on a bare asyncio socket, no parser, no timeout, nothing else."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.waiter is not None
        assert data == b"+PONG\r\n", data
        self.waiter.set_result(data)

    async def ping(self) -> bytes:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(b"PING\r\n")
        return await self.waiter


class RawPingCase(FuncCase):
    """A raw-socket PING, connected on first use in the benchmark's event loop."""

    def __init__(self, name: str, url: str) -> None:
        super().__init__(name, self._ping, is_async=True)
        self.url = url
        self.protocol: _RawPing | None = None

    async def _ping(self, i: int) -> bytes:
        if self.protocol is None:
            from urllib.parse import urlsplit

            parts = urlsplit(self.url)
            protocol = _RawPing()
            await asyncio.get_running_loop().create_connection(
                lambda: protocol, parts.hostname, parts.port
            )
            self.protocol = protocol
            _OPENED.append(self._close)
        return await self.protocol.ping()

    async def _close(self) -> None:
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.close()
            await asyncio.sleep(0)  # let the transport finish closing
        self.protocol = None


class CountingCase(ASGICase):
    """An ASGICase that counts the Redis round trips of its requests first.

    On apiguard's client, the commands it wrote (and the server's EVALSHA
    count); on redis-py, the commands sent through `execute_command`.
    """

    def __init__(self, *args: Any, url: str, **options: Any) -> None:
        super().__init__(*args, **options)
        self.url = url
        self.round_trips = 0.0

    async def check(self) -> None:
        await super().check()
        import redis.asyncio

        store = _store_of(self.app)
        sent: list[Any] = []
        original = redis.asyncio.Redis.execute_command

        async def counting(client: Any, *args: Any, **options: Any) -> Any:
            sent.append(args[0])
            return await original(client, *args, **options)

        before = _server_calls(self.url)
        written = store._client.sent if store._client is not None else 0
        redis.asyncio.Redis.execute_command = counting  # type: ignore[method-assign]
        try:
            for template, body in self.templates * 20:
                await self._one(template, body)
        finally:
            redis.asyncio.Redis.execute_command = original  # type: ignore[method-assign]
        if store._client is not None:
            commands = store._client.sent - written
            what = "apiguard client"
        else:
            commands = len(sent)
            what = f"redis-py {set(sent)}"
        self.round_trips = commands / 20
        server = (_server_calls(self.url) - before) / 20
        print(
            f"  {self.name}: {self.round_trips:.2f} Redis round trips per request ({what}); "
            f"server counted {server:.2f} EVALSHA/EVAL",
            file=sys.stderr,
        )


def _store_of(app: Any) -> Any:
    """The RedisStore of the (built) rate-limit layer in a guarded app."""
    layer = app.middleware_stack
    while not isinstance(layer, RateLimitMiddleware):
        layer = layer.app
    return layer.store


def _server_calls(url: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return sum(int(stats.get(f"cmdstat_{c}", {"calls": 0})["calls"]) for c in ("evalsha", "eval"))


class _PingFirst:
    """A pure-ASGI pass-through layer that awaits one PING on apiguard's client first."""

    def __init__(self, app: Any, store: Any) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.store.client().execute(b"*1\r\n$4\r\nPING\r\n")
        await self.app(scope, receive, send)
