"""RESP2 on the wire: encoding commands, reading replies, scripts by SHA1.

Replies: integers as `int`, simple and bulk strings as `bytes`, nulls as
`None`, arrays as `list`, error replies as [`ReplyError`][] instances. The
reader is hiredis' C reader when `hiredis` is installed (0.3 µs against
2.1 µs for a script's 4-integer reply, `python -m benchmarks ratelimit`),
else [`PyReader`][apiguard.storage._resp_wire.PyReader], a pure-Python one
with the same interface (`APIGUARD_RESP_PARSER=python` forces it).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Final, Protocol

__all__ = [
    "ProtocolError",
    "PyReader",
    "Reader",
    "ReplyError",
    "RespConnectionError",
    "Script",
    "encode_command",
    "reader_factory",
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


def reader_factory() -> type[Any]:
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
