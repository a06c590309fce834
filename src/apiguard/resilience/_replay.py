"""The request body of a retried request: recorded as the app reads it, replayed after.

Nothing is read ahead of the app: the first attempt reads the body from the
server as it would without the layer, and the recorder keeps what it reads,
up to a bound. A later attempt gets what was recorded as one message, then
the rest from the server (the part no attempt read yet, or the disconnect a
streaming response waits for: DESIGN.md contract 10). A body larger than the
bound is not kept, and the request is then not retried; nor is one whose
client went away. `Content-Length` is never trusted to size anything: what
is replayed is what the app read, byte for byte.
"""

from __future__ import annotations

from apiguard._types import Message, Receive

__all__ = ["Recorder", "Replay"]


class Recorder:
    """The server's `receive`, recording the body as it passes (up to `limit` bytes)."""

    __slots__ = ("_chunks", "_limit", "_receive", "_size", "complete", "disconnected", "overflow")

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self.complete = False
        self.overflow = False
        self.disconnected = False

    @property
    def read(self) -> bool:
        """Whether any of the body was read yet."""
        return self._size > 0 or self.complete

    @property
    def replayable(self) -> bool:
        """Whether a new attempt can be given the same body."""
        return not self.overflow and not self.disconnected

    def body(self) -> bytes:
        """What was read so far."""
        return b"".join(self._chunks)

    async def __call__(self) -> Message:
        message = await self._receive()
        kind = message["type"]
        if kind == "http.request":
            chunk: bytes = message.get("body", b"")
            if not self.overflow:
                self._size += len(chunk)
                if self._size > self._limit:
                    self.overflow = True
                    self._chunks = []
                elif chunk:
                    self._chunks.append(chunk)
            if not message.get("more_body", False):
                self.complete = True
        elif kind == "http.disconnect":
            self.disconnected = True
        return message


class Replay:
    """The `receive` of a later attempt: the body read so far, then the recorder."""

    __slots__ = ("_pending", "_recorder")

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder
        self._pending = recorder.read

    async def __call__(self) -> Message:
        if self._pending:
            self._pending = False
            recorder = self._recorder
            return {
                "type": "http.request",
                "body": recorder.body(),
                "more_body": not recorder.complete,
            }
        return await self._recorder()
