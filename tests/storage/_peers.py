"""Peers that misbehave as real ones do: a full redis-server, TCP servers that drop or stall.

- `full_redis`: a real redis-server at `--maxclients 1` whose one slot a
  socket holds: every other client is accepted, told
  `-ERR max number of clients reached`, and closed (what Redis does at its
  limit).
- `closing_server`: accepts and closes at once (a proxy whose backend is gone).
- `silent_server`: accepts, reads, never answers (a black-holed backend).
- `noscript_then_silent`: answers the first `EVALSHA` with `NOSCRIPT` once a
  second command has come in behind it, then never answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import hiredis

from tests._servers import RedisServer, redis_server_binary

T = TypeVar("T")

#: What an outcome is when the call had not ended by the outer, generous bound.
HUNG = "hung"


async def outcome(call: Awaitable[T], bound: float) -> T | BaseException | str:
    """The call's result or exception; `HUNG` when it outlives `bound` seconds.

    The bound is generous (10x the store timeout): it tells a call that never
    ends from one that ends, without asserting how long it took.
    """
    guard = asyncio.timeout(bound)
    try:
        async with guard:
            return await call
    except (Exception, asyncio.CancelledError) as exc:
        if guard.expired():
            return HUNG
        return exc


@contextlib.contextmanager
def full_redis() -> Iterator[RedisServer]:
    """A redis-server at `--maxclients 1`, its one slot taken by a socket of ours."""
    server = RedisServer(redis_server_binary(), args=["--maxclients", "1"])
    server.start()
    deadline = time.monotonic() + 10
    hold = None
    try:
        # The start-up probe's connection may hold the slot a moment longer.
        while True:
            hold = socket.create_connection(("127.0.0.1", server.port), timeout=2)
            hold.sendall(b"PING\r\n")
            if hold.recv(64) == b"+PONG\r\n":
                break
            hold.close()
            if time.monotonic() > deadline:
                raise RuntimeError("could not take the only client slot of the full server")
            time.sleep(0.02)
        yield server
    finally:
        if hold is not None:
            hold.close()
        server.kill()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def tcp_server(handler: Handler) -> AsyncIterator[int]:
    """A loopback asyncio server running `handler` per connection; yields its port."""
    tasks: set[asyncio.Task[Any]] = set()

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(tracked, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await reader.read(65536):
        pass


async def noscript_then_silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """`-NOSCRIPT` to the first command, sent once a second command is in; then silence."""
    parser = hiredis.Reader()
    commands: list[Any] = []
    answered = False
    while data := await reader.read(65536):
        parser.feed(data)
        while (command := parser.gets()) is not False:
            commands.append(command)
        if not answered and len(commands) >= 2:
            writer.write(b"-NOSCRIPT No matching script. Please use EVAL.\r\n")
            answered = True


def slow_start(port: int, delay: float) -> Handler:
    """A proxy to `127.0.0.1:port` whose connections' first reply comes `delay` s late.

    What a far-away or TLS-terminated Redis does to a new connection: its
    handshake (`AUTH`, `SELECT`, a sentinel's answer) takes long; later
    replies pass through at once.
    """

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)

        async def forward() -> None:
            while data := await reader.read(65536):
                upstream_writer.write(data)
            upstream_writer.close()

        async def backward() -> None:
            first = True
            while data := await upstream_reader.read(65536):
                if first:
                    await asyncio.sleep(delay)
                    first = False
                writer.write(data)

        sending = asyncio.ensure_future(forward())
        try:
            await backward()
        finally:
            sending.cancel()
            upstream_writer.close()

    return handler
