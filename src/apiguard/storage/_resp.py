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
  done once for all the callers that need it, within each caller's deadline.

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
import hashlib
import math
import os
import socket
import ssl
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "Endpoint",
    "PyReader",
    "ReplyError",
    "RespClient",
    "RespConnectionError",
    "Script",
    "encode_command",
    "parse_redis_uri",
]


class ReplyError(Exception):
    """An error reply from the server (`-ERR ...`, `-NOSCRIPT ...`, `-WRONGPASS ...`)."""


class RespConnectionError(ConnectionError):
    """The connection could not be made, or was lost with replies owed."""


class ProtocolError(RespConnectionError):
    """The server sent something that is not RESP2: the connection is closed."""


class Reader(Protocol):
    """What the connection needs of a RESP parser (hiredis.Reader has it)."""

    def feed(self, data: bytes, /) -> None: ...

    def gets(self) -> Any: ...


class _Incomplete(Exception):
    pass


_INCOMPLETE: Final = _Incomplete()


class PyReader:
    """A pure-Python RESP2 reader with hiredis.Reader's `feed`/`gets` interface.

    `gets()` returns the next complete reply, or `False` when more bytes are
    needed. Error replies come back as [`ReplyError`][] instances.

    Raises:
        ProtocolError: from `gets()`, on bytes that are not RESP2.
    """

    __slots__ = ("_buffer", "_position")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._position = 0

    def feed(self, data: bytes, /) -> None:
        """Append bytes read from the socket."""
        if self._position:
            del self._buffer[: self._position]
            self._position = 0
        self._buffer += data

    def gets(self) -> Any:
        """The next complete reply, or `False`."""
        buffer = self._buffer
        if self._position >= len(buffer):
            return False
        try:
            reply, self._position = self._parse(buffer, self._position)
        except _Incomplete:
            return False
        if self._position == len(buffer):
            buffer.clear()
            self._position = 0
        return reply

    def _parse(self, buffer: bytearray, position: int) -> tuple[Any, int]:
        end = buffer.find(b"\r\n", position)
        if end < 0:
            raise _INCOMPLETE
        kind = buffer[position]
        try:
            if kind == 0x3A:  # ':' integer
                return int(buffer[position + 1 : end]), end + 2
            if kind == 0x24:  # '$' bulk string
                size = int(buffer[position + 1 : end])
                if size < 0:
                    return None, end + 2
                start = end + 2
                stop = start + size
                if len(buffer) < stop + 2:
                    raise _INCOMPLETE
                return bytes(buffer[start:stop]), stop + 2
            if kind == 0x2A:  # '*' array
                count = int(buffer[position + 1 : end])
                if count < 0:
                    return None, end + 2
                items = []
                position = end + 2
                for _ in range(count):
                    item, position = self._parse(buffer, position)
                    items.append(item)
                return items, position
        except ValueError:
            msg = f"bad RESP length or integer: {bytes(buffer[position:end])!r}"
            raise ProtocolError(msg) from None
        if kind == 0x2B:  # '+' simple string
            return bytes(buffer[position + 1 : end]), end + 2
        if kind == 0x2D:  # '-' error
            return ReplyError(buffer[position + 1 : end].decode("utf-8", "replace")), end + 2
        raise ProtocolError(f"not a RESP2 reply type: {bytes(buffer[position : position + 1])!r}")


def _reader_factory() -> type[Any]:
    """The parser: hiredis' C reader when installed (measured faster), else PyReader."""
    if os.environ.get("APIGUARD_RESP_PARSER") == "python":
        return PyReader
    try:
        import hiredis
    except ImportError:
        return PyReader

    def make() -> Any:
        return hiredis.Reader(protocolError=ProtocolError, replyError=ReplyError)

    return make  # type: ignore[return-value]


def encode_command(*args: bytes | str | int) -> bytes:
    r"""One command as a RESP2 array of bulk strings.

    Examples:
        >>> encode_command("GET", "k")
        b'*2\r\n$3\r\nGET\r\n$1\r\nk\r\n'
    """
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        parts.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(parts)


# --- where to connect ------------------------------------------------------------

#: URI query options this client understands; any other sends the URI to redis-py.
SUPPORTED_OPTIONS: Final = frozenset(
    {
        "db",
        "username",
        "password",
        "client_name",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_password",
        "ssl_check_hostname",
    }
)
_CERT_REQS: Final = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}
_BOOLS: Final = {
    "true": True,
    "yes": True,
    "1": True,
    "on": True,
    "false": False,
    "no": False,
    "0": False,
    "off": False,
}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One Redis node and how to talk to it, parsed from a URI (no I/O)."""

    host: str = "localhost"
    port: int = 6379
    path: str | None = None
    tls: bool = False
    username: str | None = None
    password: str | None = None
    db: int = 0
    client_name: str | None = None
    cert_reqs: ssl.VerifyMode = ssl.CERT_REQUIRED
    check_hostname: bool = True
    ca_certs: str | None = None
    ca_path: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    key_password: str | None = None

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context: the system's CAs (or the given ones), verification on."""
        context = ssl.create_default_context(cafile=self.ca_certs, capath=self.ca_path)
        # check_hostname must be off before verify_mode may drop to CERT_NONE.
        context.check_hostname = self.check_hostname and self.cert_reqs != ssl.CERT_NONE
        context.verify_mode = self.cert_reqs
        if self.certfile is not None:
            context.load_cert_chain(self.certfile, self.keyfile, self.key_password)
        return context

    def handshake(self) -> list[bytes]:
        """The commands a new connection sends before any other."""
        commands = []
        if self.password is not None:
            if self.username is not None:
                commands.append(encode_command("AUTH", self.username, self.password))
            else:
                commands.append(encode_command("AUTH", self.password))
        if self.db:
            commands.append(encode_command("SELECT", self.db))
        if self.client_name is not None:
            commands.append(encode_command("CLIENT", "SETNAME", self.client_name))
        return commands


def parse_redis_uri(uri: str) -> Endpoint | None:
    """Parse `redis://`, `rediss://` and `redis+unix://` URIs (and their `valkey` forms).

    Options are read as redis-py reads them (`db`, `username`, `password`,
    `client_name` and the `ssl_*` options in the query; user and password in
    the authority; the database in the path).

    Returns:
        The endpoint, or `None` when the URI has a scheme or an option this
        client does not support (the caller then uses redis-py).

    Raises:
        ValueError: an option's value is malformed, or a file it names is missing.
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.lower().removeprefix("async+")
    family, _, kind = scheme.partition("+")
    if family not in ("redis", "rediss", "valkey", "valkeys") or kind not in ("", "unix"):
        return None
    query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
    if not query.keys() <= SUPPORTED_OPTIONS:
        return None
    options: dict[str, Any] = {}
    username = query.get("username") or (unquote(parts.username) if parts.username else None)
    password = query.get("password") or (unquote(parts.password) if parts.password else None)
    options.update(username=username, password=password, client_name=query.get("client_name"))
    db_text = query.get("db")
    if kind == "unix":
        if not parts.path:
            msg = "a unix socket URI needs a path (redis+unix:///run/redis.sock)"
            raise ValueError(msg)
        options["path"] = unquote(parts.path)
    else:
        try:
            port = parts.port
        except ValueError:
            msg = f"port {parts.netloc.rpartition(':')[2]!r} is not a port number"
            raise ValueError(msg) from None
        options.update(host=parts.hostname or "localhost", port=port or 6379)
        if db_text is None and parts.path.strip("/"):
            db_text = unquote(parts.path).strip("/")
    if db_text is not None:
        if not db_text.isdigit():
            msg = f"db {db_text!r} is not a database number"
            raise ValueError(msg)
        options["db"] = int(db_text)
    if family in ("rediss", "valkeys"):
        options.update(_tls_options(query))
    elif any(name.startswith("ssl_") for name in query):
        msg = "ssl_* options need a rediss:// URI"
        raise ValueError(msg)
    return Endpoint(**options)


def _tls_options(query: dict[str, str]) -> dict[str, Any]:
    options: dict[str, Any] = {"tls": True}
    reqs = query.get("ssl_cert_reqs")
    if reqs is not None:
        if reqs.lower() not in _CERT_REQS:
            msg = f"ssl_cert_reqs {reqs!r} is not 'none', 'optional' or 'required'"
            raise ValueError(msg)
        options["cert_reqs"] = _CERT_REQS[reqs.lower()]
    check = query.get("ssl_check_hostname")
    if check is not None:
        if check.lower() not in _BOOLS:
            msg = f"ssl_check_hostname {check!r} is not true or false"
            raise ValueError(msg)
        options["check_hostname"] = _BOOLS[check.lower()]
    for name, field in (
        ("ssl_ca_certs", "ca_certs"),
        ("ssl_certfile", "certfile"),
        ("ssl_keyfile", "keyfile"),
    ):
        path = query.get(name)
        if path is not None:
            if not os.path.isfile(path):  # a stat, so that a typo fails at start-up
                msg = f"{name} {path!r} is not a file"
                raise ValueError(msg)
            options[field] = path
    if "ssl_ca_path" in query:
        options["ca_path"] = query["ssl_ca_path"]
    if "ssl_password" in query:
        options["key_password"] = query["ssl_password"]
    return options


# --- scripts -----------------------------------------------------------------------


class Script:
    """A Lua script with its `EVALSHA` and `EVAL` command prefixes built once.

    `command(keys_and_args, count)` gives the `EVALSHA` bytes for `count`
    already-encoded keys and arguments; `fallback(...)` the `EVAL` bytes,
    sent once when the server answers `NOSCRIPT` (its script cache was
    flushed, or it restarted): `EVAL` runs the script and caches it again.
    """

    __slots__ = ("_eval", "_evalsha", "sha", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()
        sha = self.sha.encode()
        body = text.encode()
        self._evalsha = b"$7\r\nEVALSHA\r\n$40\r\n" + sha + b"\r\n"
        self._eval = b"$4\r\nEVAL\r\n$%d\r\n%b\r\n" % (len(body), body)

    def command(self, numkeys: int, tail: bytes, count: int) -> bytes:
        """`EVALSHA sha numkeys <tail>`, with `count` items encoded in `tail`."""
        return b"*%d\r\n%b$%d\r\n%d\r\n%b" % (
            count + 3,
            self._evalsha,
            len(str(numkeys)),
            numkeys,
            tail,
        )

    def fallback(self, numkeys: int, tail: bytes, count: int) -> bytes:
        """`EVAL script numkeys <tail>`."""
        return b"*%d\r\n%b$%d\r\n%d\r\n%b" % (
            count + 3,
            self._eval,
            len(str(numkeys)),
            numkeys,
            tail,
        )


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
            self.abort(exc if isinstance(exc, ProtocolError) else ProtocolError(str(exc)))

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost fails the waiters

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.client._connection is self:
            self.client._connection = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.wake = math.inf
        error = RespConnectionError(f"connection lost ({type(exc).__name__ if exc else 'closed'})")
        error.__cause__ = exc
        waiters, self.waiters = self.waiters, collections.deque()
        for future, _ in waiters:
            if future is not None and not future.done():
                future.set_exception(error)
        if not self.closed.done():
            self.closed.set_result(None)

    # commands

    def send(self, payload: bytes, deadline: float, unread: int = 0) -> asyncio.Future[Any]:
        """Write `payload`: one command, then `unread` more whose replies nobody waits for.

        Returns the first command's reply's future.
        """
        future = self.loop.create_future()
        waiters = self.waiters
        waiters.append((future, deadline))
        for _ in range(unread):
            waiters.append((None, deadline))
        self.transport.write(payload)  # type: ignore[union-attr]
        if deadline < self.wake:  # the timer is for later (or off): bring it forward
            self._arm(deadline)
        return future

    def send_unread(self, payload: bytes, deadline: float) -> None:
        """Write one command whose reply is read and dropped."""
        self.waiters.append((None, deadline))
        self.transport.write(payload)  # type: ignore[union-attr]
        if deadline < self.wake:
            self._arm(deadline)

    def _arm(self, when: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_at(when, self._expire)
        self.wake = when

    def _expire(self) -> None:
        """Fail the waiters whose deadline passed; close a connection owing replies too long."""
        self.timer = None
        self.wake = math.inf
        if self.lost:
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

    def abort(self, error: Exception) -> None:
        """Close at once and fail every waiter with `error`; the next call reconnects."""
        self.lost = True
        if self.client._connection is self:
            self.client._connection = None
        for future, _ in self.waiters:
            if future is not None and not future.done():
                future.set_exception(error)
        if self.transport is not None:
            self.transport.abort()
        else:  # pragma: no cover - abort before connection_made
            self.connection_lost(error)


class RespClient:
    """A multiplexed RESP2 client for one Redis node, bound to one event loop.

    Args:
        endpoint: Where to connect and how to authenticate.
        timeout: Seconds a call may take, connecting included.
        dead_after: Seconds a connection may owe a reply past its deadline
            before it is closed and made again.
    """

    def __init__(self, endpoint: Endpoint, *, timeout: float, dead_after: float = 2.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.dead_after = max(dead_after, timeout)
        self.reader_factory = _reader_factory()
        self.loop = asyncio.get_running_loop()
        self._connection: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None
        self._ssl: ssl.SSLContext | None = None
        #: Writes made, each waited for: round trips (a handshake counts
        #: one), for the tests and benchmarks.
        self.sent = 0

    async def execute(self, payload: bytes, unread: int = 0) -> Any:
        """Send one encoded command; its reply.

        `unread` more commands may follow it in `payload`, pipelined: their
        replies are read and dropped (an `EXPIRE` after an `INCRBY`).

        Raises:
            ReplyError: the server answered with an error.
            TimeoutError: no reply within the timeout.
            RespConnectionError: no connection, or lost before the reply.
        """
        deadline = self.loop.time() + self.timeout
        connection = self._connection
        if connection is None:
            connection = await self._connect(deadline)
        self.sent += 1
        reply = await connection.send(payload, deadline, unread)
        if type(reply) is ReplyError:
            raise reply
        return reply

    def submit(self, payload: bytes) -> asyncio.Future[Any] | None:
        """Write one command on the open connection, without a coroutine of its own.

        For the hot path: returns its reply's future (an error reply is a
        [`ReplyError`][] result, not raised), or `None` when there is no
        connection yet (then `await execute(payload)`, which connects).
        """
        connection = self._connection
        if connection is None:
            return None
        self.sent += 1
        return connection.send(payload, self.loop.time() + self.timeout)

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
            connection = await self._connect(deadline)
        self.sent += 1
        reply = await connection.send(script.command(numkeys, tail, count), deadline)
        if type(reply) is ReplyError:
            if not str(reply).startswith("NOSCRIPT"):
                raise reply
            connection = self._connection
            if connection is None:
                connection = await self._connect(deadline)
            self.sent += 1
            reply = await connection.send(script.fallback(numkeys, tail, count), deadline)
            if type(reply) is ReplyError:
                raise reply
        return reply

    async def _connect(self, deadline: float) -> _Connection:
        """The shared connection attempt, awaited within this caller's deadline."""
        task = self._connecting
        if task is None:
            task = self._connecting = self.loop.create_task(self._open())
            task.add_done_callback(self._connected)
        try:
            async with asyncio.timeout_at(deadline):
                return await asyncio.shield(task)
        except TimeoutError:
            raise TimeoutError("Redis did not accept the connection in time") from None

    def _connected(self, task: asyncio.Task[_Connection]) -> None:
        if self._connecting is task:
            self._connecting = None
        if not task.cancelled():
            task.exception()  # retrieved: a failed attempt is each waiter's error

    async def _open(self) -> _Connection:
        endpoint = self.endpoint
        loop = self.loop
        connection = _Connection(self, loop)
        try:
            async with asyncio.timeout(self.timeout):
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
                    deadline = loop.time() + self.timeout
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
            with contextlib.suppress(BaseException):
                await task
        connection, self._connection = self._connection, None
        if connection is None or connection.lost or connection.transport is None:
            return
        connection.transport.close()
        try:
            async with asyncio.timeout(self.timeout):
                await asyncio.shield(connection.closed)
        except TimeoutError:
            connection.transport.abort()
