"""A minimal asyncio RESP2 client for one Redis node, built for the rate limiter's hot path.

One multiplexed connection per client (and a client per event loop): every
caller writes its command at once and waits on a future; replies are matched
to the waiting futures in order (Redis answers each connection's commands in
the order it received them), so concurrent callers pipeline on one socket
without a pool, a lock or a reader task.

Robustness rules:

- A waiter that gives up (its deadline passes, or its task is cancelled)
  stays in the queue: its reply is read and dropped when it arrives, so the
  stream never shifts a reply to the wrong caller.
- Deadlines are checked by one timer per connection, armed for the oldest
  waiter only (replies come in order, so it expires first), instead of a
  timer per call: a call costs a clock read, not a timer.
- A connection that owes a reply for longer than `dead_after` (a frozen
  server, a black-holed route) is closed; so is one that breaks the
  protocol. Every pending waiter then fails with a
  [`RespConnectionError`][apiguard.storage._resp.RespConnectionError], and the
  next call reconnects.
- Connecting (TCP or unix socket, TLS, `AUTH`, `SELECT`, `CLIENT SETNAME`) is
  done once for all the callers that need it. The client's first connection
  (a cold start, where no lifespan start-up connected it) is bounded by
  `connect_timeout`, not by the callers' deadlines, and each caller's
  deadline starts once it is made; every later one (a reconnection after an
  outage) within each caller's deadline, so that an outage costs a request
  no more than its timeout.
- No call outlives its deadline. A command sent on a connection already lost
  (a peer that accepts and closes at once, Redis at `maxclients`, which says
  why first) fails at once with the reason, rather than wait on a timer that
  a lost connection no longer runs; a waiter whose deadline comes before
  those queued ahead of it (an `EVAL` after `NOSCRIPT`, a caller back from
  connecting) gets a timer of its own; `aclose()` fails the callers waiting
  for a connection with a connection error, never a cancellation.

Replies: integers as `int`, simple and bulk strings as `bytes`, nulls as
`None`, arrays as `list`, error replies as
[`ReplyError`][apiguard.storage._resp.ReplyError] (raised for a command's
own reply, kept as an item inside arrays). The parser is hiredis' C reader
when `hiredis` is installed, else a pure-Python one with the same interface.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import socket
import ssl
from typing import Any, Final

from apiguard.storage._redis_uri import Endpoint, parse_redis_uri
from apiguard.storage._resp_wire import (
    ProtocolError,
    PyReader,
    Reader,
    ReplyError,
    RespConnectionError,
    Script,
    encode_command,
    reader_factory,
)

__all__ = [
    "Endpoint",
    "ProtocolError",
    "PyReader",
    "ReplyError",
    "RespClient",
    "RespConnectionError",
    "Script",
    "encode_command",
    "parse_redis_uri",
]


# --- the connection ---------------------------------------------------------------


_EARLY: Final = 0.0001


class _Connection(asyncio.Protocol):
    """One socket: writes commands, matches replies to waiters in order, expires them."""

    def __init__(self, client: RespClient, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.loop = loop
        self.reader: Reader = client.reader_factory()
        self.transport: asyncio.Transport | None = None
        #: (future, deadline) per command written and not yet answered, oldest
        #: first; the future is None for a reply nobody waits for.
        self.waiters: collections.deque[tuple[asyncio.Future[Any] | None, float]] = (
            collections.deque()
        )
        #: How many waiters at the head have already been expired.
        self.expired = 0
        self.timer: asyncio.TimerHandle | None = None
        #: When the timer fires (infinity when it is off).
        self.wake = math.inf
        self.lost = False
        #: Why the connection was lost: each later caller gets a copy.
        self.error: RespConnectionError | None = None
        self.closed: asyncio.Future[None] = loop.create_future()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment] # a stream transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Finds a peer that vanished while the connection sat idle.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        waiters = self.waiters
        try:
            reader.feed(data)
            reply = reader.gets()
            while reply is not False:
                if not waiters:
                    if type(reply) is ReplyError:
                        # Said before any command: Redis at maxclients
                        # ("-ERR max number of clients reached") then closes.
                        raise RespConnectionError(f"Redis refused the connection: {reply}")
                    raise ProtocolError("a reply nobody asked for")
                future = waiters.popleft()[0]
                if self.expired:
                    self.expired -= 1
                # None: a reply nobody waits for; done: its waiter timed out
                # or was cancelled. Either way it is read and dropped.
                if future is not None and not future.done():
                    future.set_result(reply)
                reply = reader.gets()
        except Exception as exc:  # a broken stream cannot be trusted any further
            self.abort(exc if isinstance(exc, RespConnectionError) else ProtocolError(str(exc)))

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost fails the waiters

    def connection_lost(self, exc: Exception | None) -> None:
        if self.error is None:
            reason = type(exc).__name__ if exc else "closed"
            self.error = RespConnectionError(f"connection lost ({reason})")
            self.error.__cause__ = exc
        self.lost = True
        if self.client._connection is self:
            self.client._connection = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.wake = math.inf
        self._fail_all()
        if not self.closed.done():
            self.closed.set_result(None)

    def _fail_all(self) -> None:
        """Fail every waiter with the connection's error; a lost connection owes nothing."""
        waiters, self.waiters = self.waiters, collections.deque()
        self.expired = 0
        for future, _ in waiters:
            if future is not None and not future.done():
                future.set_exception(self._error())

    def _error(self) -> RespConnectionError:
        """A copy of the connection's error for one caller.

        One exception raised in many tasks would grow one traceback with each.
        """
        error = self.error
        if error is None:  # pragma: no cover - lost always says why
            return RespConnectionError("connection lost")
        fresh = type(error)(*error.args)
        fresh.__cause__ = error.__cause__
        return fresh

    # commands

    def send(
        self, payload: bytes, deadline: float, unread: int = 0, skip: int = 0
    ) -> asyncio.Future[Any]:
        """Write `payload`: `skip` commands, one command, then `unread` more.

        Returns that one command's reply's future; the replies of the
        `skip` before it and the `unread` after it are read and dropped.
        """
        future = self.loop.create_future()
        if self.lost:
            # Lost since the caller got it (a peer that accepts and closes at
            # once): nothing will answer, nor expire, a waiter queued now.
            future.set_exception(self._error())
            return future
        waiters = self.waiters
        if waiters and deadline < waiters[-1][1]:
            # Deadlines are met in queue order (the timer expires a prefix);
            # one earlier than the tail's (a NOSCRIPT retry, a caller back
            # from connecting) would wait for the later ones: it gets a timer
            # of its own. Rare, so the common call still costs no timer.
            self.loop.call_at(deadline, self._late, future)
        self.transport.write(payload)  # type: ignore[union-attr]
        for _ in range(skip):
            waiters.append((None, deadline))
        waiters.append((future, deadline))
        for _ in range(unread):
            waiters.append((None, deadline))
        if deadline < self.wake:  # the timer is for later (or off): bring it forward
            self._arm(deadline)
        return future

    def send_unread(self, payload: bytes, deadline: float) -> None:
        """Write one command whose reply is read and dropped (nothing when lost)."""
        if self.lost:
            return
        self.transport.write(payload)  # type: ignore[union-attr]
        self.waiters.append((None, deadline))
        if deadline < self.wake:
            self._arm(deadline)

    @staticmethod
    def _late(future: asyncio.Future[Any]) -> None:
        if not future.done():
            future.set_exception(TimeoutError("Redis did not answer in time"))

    def _arm(self, when: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_at(when, self._expire)
        self.wake = when

    def _expire(self) -> None:
        """Fail the waiters whose deadline passed; close a connection owing replies too long."""
        self.timer = None
        self.wake = math.inf
        if self.lost:  # connection_lost failed the waiters; fail any left, never skip them
            self._fail_all()
            return
        # The loop runs a timer up to its clock resolution early: count a
        # deadline that close as reached, rather than re-arm for it at once.
        now = self.loop.time() + _EARLY
        waiters = self.waiters
        index = self.expired
        size = len(waiters)
        while index < size:
            future, deadline = waiters[index]
            if deadline > now:
                break
            if future is not None and not future.done():
                future.set_exception(TimeoutError("Redis did not answer in time"))
            index += 1
        self.expired = index
        if index:
            # The oldest unanswered command: past its deadline since when?
            owed_since = waiters[0][1]
            if now - owed_since >= self.client.dead_after:
                self.abort(RespConnectionError("Redis owes replies for too long"))
                return
            wake = owed_since + self.client.dead_after
            if index < size:
                wake = min(wake, waiters[index][1])
            self._arm(wake)
        elif size:
            self._arm(waiters[0][1])

    def abort(self, error: RespConnectionError) -> None:
        """Close at once and fail every waiter with `error`; the next call reconnects."""
        if self.error is None:
            self.error = error
        self.lost = True
        if self.client._connection is self:
            self.client._connection = None
        self._fail_all()
        if self.transport is not None:
            self.transport.abort()
        else:  # pragma: no cover - abort before connection_made
            self.connection_lost(error)


class RespClient:
    """A multiplexed RESP2 client for one Redis node, bound to one event loop.

    Args:
        endpoint: Where to connect and how to authenticate.
        timeout: Seconds a call may take, a reconnection included.
        connect_timeout: Seconds the first connection may take (at least
            `timeout`); the deadline of the calls that wait for it starts
            once it is made.
        dead_after: Seconds a connection may owe a reply past its deadline
            before it is closed and made again.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        timeout: float,
        connect_timeout: float | None = None,
        dead_after: float = 2.0,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.connect_timeout = max(connect_timeout or timeout, timeout)
        self.dead_after = max(dead_after, timeout)
        #: No connection attempt has ended yet (made or failed).
        self.cold = True
        self.reader_factory = reader_factory()
        self.loop = asyncio.get_running_loop()
        self._connection: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None
        self._ssl: ssl.SSLContext | None = None
        #: Writes made, each waited for: round trips (a handshake counts
        #: one), for the tests and benchmarks.
        self.sent = 0

    async def execute(self, payload: bytes, unread: int = 0, skip: int = 0) -> Any:
        """Send one encoded command; its reply.

        `unread` more commands may follow it in `payload`, and `skip` more
        come before it, pipelined: their replies are read and dropped.

        Raises:
            ReplyError: the server answered with an error.
            TimeoutError: no reply within the timeout.
            RespConnectionError: no connection, or lost before the reply.
        """
        deadline = self.loop.time() + self.timeout
        connection = self._connection
        if connection is None:
            connection, deadline = await self._connect(deadline)
        self.sent += 1
        reply = await connection.send(payload, deadline, unread, skip)
        if type(reply) is ReplyError:
            raise reply
        return reply

    def submit(self, payload: bytes, skip: int = 0) -> asyncio.Future[Any] | None:
        """Write one command on the open connection, without a coroutine of its own.

        For the hot path: returns its reply's future (an error reply is a
        [`ReplyError`][] result, not raised), or `None` when there is no
        connection yet (then `await execute(payload, skip=skip)`, which
        connects). `skip` commands may come first in `payload`, pipelined:
        their replies are read and dropped (a `SET ... NX` before an `INCRBY`).
        """
        connection = self._connection
        if connection is None:
            return None
        self.sent += 1
        return connection.send(payload, self.loop.time() + self.timeout, 0, skip)

    def post(self, payload: bytes) -> None:
        """Write one command whose reply nobody waits for (read and dropped).

        Nothing is written when there is no connection.
        """
        connection = self._connection
        if connection is not None:
            connection.send_unread(payload, self.loop.time() + self.timeout)

    async def command(self, *args: bytes | str | int) -> Any:
        """Encode and send one command (`await client.command("GET", "k")`)."""
        return await self.execute(encode_command(*args))

    async def evalsha(self, script: Script, numkeys: int, tail: bytes, count: int) -> Any:
        """Run `script` by its SHA1; on `NOSCRIPT`, once more with `EVAL` (within the timeout).

        A `NOSCRIPT` reply means the script did not run, so running it again
        cannot count a request twice.
        """
        deadline = self.loop.time() + self.timeout
        connection = self._connection
        if connection is None:
            connection, deadline = await self._connect(deadline)
        self.sent += 1
        reply = await connection.send(script.command(numkeys, tail, count), deadline)
        if type(reply) is ReplyError:
            if not str(reply).startswith("NOSCRIPT"):
                raise reply
            connection = self._connection
            if connection is None:
                connection, deadline = await self._connect(deadline)
            self.sent += 1
            reply = await connection.send(script.fallback(numkeys, tail, count), deadline)
            if type(reply) is ReplyError:
                raise reply
        return reply

    async def connect(self) -> None:
        """Connect now unless connected: the first time within `connect_timeout`."""
        if self._connection is None:
            await self._connect(self.loop.time() + self.timeout)

    async def _connect(self, deadline: float) -> tuple[_Connection, float]:
        """The shared connection attempt; the connection and the caller's deadline after it.

        The first attempt is bounded by `connect_timeout` (its own timeout),
        and the caller's deadline starts again once it ends; a later one
        within the caller's deadline.
        """
        task = self._connecting
        if task is None:
            task = self._connecting = self.loop.create_task(self._open(self.cold))
            task.add_done_callback(self._connected)
        if self.cold:
            # A cold start: no caller's deadline applies, the attempt has its own.
            connection = await self._wait(task, None)
            return connection, self.loop.time() + self.timeout
        return await self._wait(task, deadline), deadline

    async def _wait(self, task: asyncio.Task[_Connection], deadline: float | None) -> _Connection:
        try:
            async with asyncio.timeout_at(deadline):
                return await asyncio.shield(task)
        except TimeoutError:
            raise TimeoutError("Redis did not accept the connection in time") from None
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and current is not None and not current.cancelling():
                # aclose() cancelled the attempt, not this caller's own task:
                # a failed call for the caller, never a stray cancellation.
                raise RespConnectionError("the client was closed while connecting") from None
            raise

    def _connected(self, task: asyncio.Task[_Connection]) -> None:
        if self._connecting is task:
            self._connecting = None
        self.cold = False
        if not task.cancelled():
            task.exception()  # retrieved: a failed attempt is each waiter's error

    async def _open(self, cold: bool = False) -> _Connection:
        endpoint = self.endpoint
        loop = self.loop
        connection = _Connection(self, loop)
        budget = self.connect_timeout if cold else self.timeout
        try:
            async with asyncio.timeout(budget):
                if endpoint.path is not None:
                    await loop.create_unix_connection(lambda: connection, endpoint.path)
                else:
                    context = None
                    if endpoint.tls:
                        if self._ssl is None:
                            self._ssl = endpoint.ssl_context()
                        context = self._ssl
                    await loop.create_connection(
                        lambda: connection,
                        endpoint.host,
                        endpoint.port,
                        ssl=context,
                        server_hostname=endpoint.host if context is not None else None,
                    )
                commands = endpoint.handshake()
                if commands:
                    deadline = loop.time() + budget
                    futures = [connection.send(command, deadline) for command in commands]
                    self.sent += 1
                    for reply in await asyncio.gather(*futures):
                        if type(reply) is ReplyError:
                            raise reply
        except BaseException as exc:
            if connection.transport is not None:
                connection.transport.abort()
            if isinstance(exc, TimeoutError):
                raise TimeoutError("Redis did not accept the connection in time") from None
            if isinstance(exc, OSError) and not isinstance(exc, RespConnectionError):
                msg = f"cannot connect to Redis ({type(exc).__name__}: {exc.strerror or exc})"
                raise RespConnectionError(msg) from exc
            raise
        if connection.lost:
            raise RespConnectionError("connection lost while connecting")
        self._connection = connection
        return connection

    async def aclose(self) -> None:
        """Close the connection (pending callers fail); the next call reconnects."""
        task, self._connecting = self._connecting, None
        if task is not None:
            task.cancel()
            # Wait for the attempt to end (its socket closed), whatever its
            # outcome; a cancellation of our own caller still goes through.
            await asyncio.wait([task])
        connection, self._connection = self._connection, None
        if connection is None or connection.lost or connection.transport is None:
            return
        connection.transport.close()
        try:
            async with asyncio.timeout(self.timeout):
                await asyncio.shield(connection.closed)
        except TimeoutError:
            connection.transport.abort()
