"""ASGI plumbing shared by every layer.

Header access over the raw byte pairs, a send wrapper that observes (and can
extend) the response start, a bounded request-body reader with a `receive`
that replays what was read, and canned responses whose bytes are built once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable

from apiguard._types import ASGIApp, Message, RawHeaders, Receive, Scope, Send

__all__ = [
    "AddHeaders",
    "BodyTooLarge",
    "CannedResponse",
    "ClientDisconnected",
    "ReplayReceive",
    "ResponseObserver",
    "get_header",
    "get_headers",
    "lifespan_hooks",
    "read_body",
]

logger = logging.getLogger("apiguard")


def get_header(scope: Scope, name: bytes) -> bytes | None:
    """Return the first value of header `name` (lowercase bytes), or `None`.

    Scans the raw pairs; builds no `Headers` object. ASGI servers lowercase
    header names, so `name` must be lowercase.
    """
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


def get_headers(scope: Scope, name: bytes) -> list[bytes]:
    """Return every value of header `name` (lowercase bytes), in order."""
    return [value for key, value in scope["headers"] if key == name]


class ResponseObserver:
    """A `send` wrapper that records the response status and can add headers.

    `status` is `None` until the app sends `http.response.start`;
    `complete` turns true with the last body message. Headers in
    `extra_headers` are appended to the start message, which is copied rather
    than changed in place (a `Response` object may be sent more than once).
    """

    __slots__ = ("complete", "extra_headers", "send", "status")

    def __init__(self, send: Send, extra_headers: RawHeaders | None = None) -> None:
        self.send = send
        self.extra_headers = extra_headers
        self.status: int | None = None
        self.complete = False

    @property
    def started(self) -> bool:
        """Whether the response has started: it can no longer be replaced."""
        return self.status is not None

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            if self.extra_headers:
                message = {
                    **message,
                    "headers": [*message.get("headers", ()), *self.extra_headers],
                }
        elif kind == "http.response.body" and not message.get("more_body", False):
            self.complete = True
        await self.send(message)


class AddHeaders:
    """A `send` wrapper that appends headers to the response start, and nothing else.

    The cheapest way for a layer to add headers to the app's response: one
    type check per message. The start message is copied, not changed in
    place (a `Response` object may be sent more than once).
    """

    __slots__ = ("headers", "send")

    def __init__(self, send: Send, headers: RawHeaders) -> None:
        self.send = send
        self.headers = headers

    @classmethod
    def around(cls, send: Send, headers: RawHeaders) -> AddHeaders:
        """`send` with `headers` added; one wrapper for two layers that both add some.

        When `send` is itself an `AddHeaders` (an outer layer added headers and
        the layers between passed its `send` on unchanged), the two merge:
        the same headers, in the same order (this layer's, then the outer
        one's), one copy of the start message instead of two.
        """
        if type(send) is cls:
            return cls(send.send, headers + send.headers)
        return cls(send, headers)

    def __call__(self, message: Message) -> Awaitable[None]:
        # A plain callable handing back the downstream `send`'s awaitable:
        # no coroutine of its own for each message.
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *self.headers]}
        return self.send(message)


class BodyTooLarge(Exception):
    """The request body grew past the reader's limit (`received` bytes so far)."""

    def __init__(self, limit: int, received: int) -> None:
        super().__init__(f"request body over {limit} bytes")
        self.limit = limit
        self.received = received


class ClientDisconnected(Exception):
    """The client went away before the request body was complete."""


async def read_body(receive: Receive, limit: int) -> bytes:
    """Read the whole request body, refusing to hold more than `limit` bytes.

    Memory stays bounded whatever the client sends: reading stops at the
    first chunk that crosses the limit, so at most `limit` plus one chunk is
    held, and twice that for an instant while the chunks are joined.

    Raises:
        BodyTooLarge: the body is longer than `limit`.
        ClientDisconnected: `http.disconnect` arrived before the end.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.request":
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(limit, size)
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        elif kind == "http.disconnect":
            raise ClientDisconnected
    if len(chunks) == 1:
        return chunks[0]
    return b"".join(chunks)


class ReplayReceive:
    """A `receive` that hands the app the body already read, then the real one.

    The first call returns the whole body as one `http.request` message;
    every later call goes to the server's `receive`, so that a disconnect
    still reaches the app and a streaming response waiting for one blocks
    instead of spinning.
    """

    __slots__ = ("_body", "_pending", "_receive")

    def __init__(self, body: bytes, receive: Receive) -> None:
        self._body = body
        self._receive = receive
        self._pending = True

    async def __call__(self) -> Message:
        if self._pending:
            self._pending = False
            body, self._body = self._body, b""
            return {"type": "http.request", "body": body, "more_body": False}
        return await self._receive()


class CannedResponse:
    """A complete response whose status, headers and body are built once.

    Each send builds fresh message dicts and header lists, because outer
    middleware may change a message in place.
    """

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.body = body
        self.headers: tuple[tuple[bytes, bytes], ...] = (
            *headers,
            (b"content-length", str(len(body)).encode("latin-1")),
        )

    async def send(self, send: Send, extra_headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
        """Send the response through `send`, with `extra_headers` appended."""
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [*self.headers, *extra_headers],
            }
        )
        await send({"type": "http.response.body", "body": self.body, "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.send(send)


async def lifespan_hooks(
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    startup: Callable[[], Awaitable[None]] | None = None,
    shutdown: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Pass a lifespan scope to `app`, with a layer's own start-up and shutdown work.

    For layers that hold connections (a Redis store): `startup` runs when
    the server sends `lifespan.startup`, before the app hears it, so that
    stores are connected before the first request and outside any request's
    timeout; `shutdown` runs when the app reports `lifespan.shutdown.complete`
    (or `.failed`), before the server hears it, so that connections close
    while the event loop still runs. A failing hook is logged and changes
    nothing in the app's answers (a store that cannot be reached at start-up
    is the layer's fail mode to handle, not a reason to refuse to start).
    """

    async def receive_after_startup() -> Message:
        message = await receive()
        if startup is not None and message["type"] == "lifespan.startup":
            try:
                await startup()
            except Exception:
                logger.exception("apiguard: a layer's start-up work failed")
        return message

    async def send_after_shutdown(message: Message) -> None:
        if shutdown is not None and message["type"] in (
            "lifespan.shutdown.complete",
            "lifespan.shutdown.failed",
        ):
            try:
                await shutdown()
            except Exception:
                logger.exception("apiguard: closing a layer's connections at shutdown failed")
        await send(message)

    await app(scope, receive_after_startup, send_after_shutdown)
