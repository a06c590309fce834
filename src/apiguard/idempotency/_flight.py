"""One claimed request: its lease kept alive, its response recorded, then stored or released.

The claim is a lease: it expires `lease` seconds after it was taken or last
renewed. While the app runs, a heartbeat renews it every `lease / 3`
seconds, so a slow request keeps its claim however long it runs, and a
worker that dies (or an event loop that stalls for two thirds of the lease)
stops renewing: the claim expires, and a retry may run.

The response is passed on as the app sends it, and copied up to the route's
bound. At its last body message (before that message goes on, so that a
client that has the whole response and retries always finds it stored) the
claim becomes the stored response, or is released: a 5xx (unless
`store_server_errors`), a 408/425/429 (retry later), a response over the
bound, a trailer or file response, or a response a layer inside sent in
the app's place (an inner timeout's 504 or fallback, any inner refusal: the
request's decisions say so). A request that ends without a complete
response (the app raised, or the request was cancelled or timed out)
releases it too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Final

from apiguard._types import Message, RawHeaders, Send
from apiguard.context import RequestContext
from apiguard.errors import StorageError
from apiguard.idempotency._record import encode, kept_headers
from apiguard.storage import KeyValueStore

__all__ = ["Flight"]

logger = logging.getLogger("apiguard.idempotency")

#: Statuses that say "try again later": a replay would repeat them for ever.
RETRY_LATER: Final = frozenset({408, 425, 429})

#: Releases started when a request was cancelled: held until they finish.
_BACKGROUND: set[asyncio.Task[None]] = set()

#: Why a response was not stored, as decisions record it.
SERVER_ERROR: Final = "server-error"
RETRY_STATUS: Final = "retry-later"
TOO_LARGE: Final = "too-large"
NOT_BUFFERED: Final = "not-buffered"
INCOMPLETE: Final = "incomplete"
CANCELLED: Final = "cancelled"
LEASE_LOST: Final = "lease-lost"
STORE_FAILED: Final = "store-unavailable"
NOT_THE_APP: Final = "not-the-app"
STORED: Final = "stored"
#: The layer kind of a fallback's decision (`apiguard.resilience.fallbacks.LAYER`).
_FALLBACK: Final = "fallback"


class Flight:
    """A claimed request's lease, its `send` wrapper, and what became of its response.

    Args:
        kv: The store's key-value part.
        key: The store key claimed.
        token: The claim's owner token.
        fingerprint: The request's fingerprint, stored with the response.
        send: The server's `send`.
        lease: Seconds a claim lasts without renewal.
        ttl: Seconds the response is kept.
        max_bytes: The largest response stored (headers and body).
        store_server_errors: Whether 5xx responses are stored too.
        timeout: Seconds each store call may take.
        context: The request's context: the decisions recorded from now on
            say whether a layer inside answered in the app's place.
    """

    __slots__ = (
        "_beat",
        "_mark",
        "_settling",
        "_size",
        "_timer",
        "_unstored",
        "body",
        "context",
        "fingerprint",
        "headers",
        "key",
        "kv",
        "lease",
        "lost",
        "max_bytes",
        "outcome",
        "send",
        "status",
        "store_server_errors",
        "timeout",
        "token",
        "ttl",
    )

    def __init__(
        self,
        kv: KeyValueStore,
        key: str,
        token: str,
        fingerprint: bytes,
        send: Send,
        *,
        lease: float,
        ttl: float,
        max_bytes: int,
        store_server_errors: bool,
        timeout: float,
        context: RequestContext,
    ) -> None:
        self.kv = kv
        self.context = context
        self._mark = len(context.decisions)
        self.key = key
        self.token = token
        self.fingerprint = fingerprint
        self.send = send
        self.lease = lease
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.store_server_errors = store_server_errors
        self.timeout = timeout
        self.status: int | None = None
        self.headers: RawHeaders = []
        #: The body so far, while it is still storable; `None` once it is not.
        self.body: list[bytes] | None = []
        self._size = 0
        #: Why the response cannot be stored, once that is known while it streams.
        self._unstored: str | None = None
        self._settling = False
        #: What became of the response: `"stored"`, or why not; `None` until settled.
        self.outcome: str | None = None
        #: Whether a renewal found the claim gone (expired, or another's now).
        self.lost = False
        self._timer: asyncio.TimerHandle | None = None
        self._beat: asyncio.Task[None] | None = None

    # --- the lease -------------------------------------------------------------------

    def start(self) -> None:
        """Start renewing the lease, every third of it, until the response is settled.

        A timer, not a task, until the first renewal is due: most requests
        end well within a third of the lease, and a timer costs a fraction
        of a task to make and to cancel.
        """
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.lease / 3, self._due)

    def _due(self) -> None:
        self._timer = None
        if not self._settling:
            self._beat = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        interval = self.lease / 3
        try:
            held = await self.kv.renew(
                self.key, self.token, self.lease, timeout=min(self.timeout, interval)
            )
        except StorageError:
            held = True  # the claim may still stand: the next beat tries again
        self._beat = None
        if not held:
            self.lost = True
            logger.warning(
                "apiguard.idempotency: a request's claim expired while it ran (the event "
                "loop stalled, or the store lost it); its response will not be stored"
            )
        elif not self._settling:
            self._timer = asyncio.get_running_loop().call_later(interval, self._due)

    def _stop(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        beat, self._beat = self._beat, None
        if beat is not None:
            beat.cancel()

    # --- the response ----------------------------------------------------------------

    async def __call__(self, message: Message) -> None:
        """Pass a response message on, copying what will be stored."""
        kind = message["type"]
        if kind == "http.response.body":
            chunk: bytes = message.get("body", b"")
            body = self.body
            if body is not None and chunk:
                self._size += len(chunk)
                if self._size > self.max_bytes:
                    self._unstorable(TOO_LARGE)
                else:
                    body.append(chunk)
            if not message.get("more_body", False) and self.status is not None:
                await self.settle()
        elif kind == "http.response.start":
            self.status = message["status"]
            if message.get("trailers", False):
                self._unstorable(NOT_BUFFERED)  # the response ends with its trailers
            else:
                self.headers = kept_headers(message.get("headers", ()))
                self._size = sum(len(name) + len(value) for name, value in self.headers)
                if self._size > self.max_bytes:
                    self._unstorable(TOO_LARGE)
        elif kind == "http.response.pathsend" or kind == "http.response.zerocopysend":
            self._unstorable(NOT_BUFFERED)  # a file, sent by the server: never copied
            await self.settle()
        await self.send(message)

    def _unstorable(self, reason: str) -> None:
        self.body = None
        if self._unstored is None:
            self._unstored = reason

    async def settle(self) -> None:
        """The response is complete: store it over the claim, or release the claim."""
        if self._settling:
            return
        self._settling = True
        self._stop()
        status = self.status
        body = self.body
        reason = self._unstored
        if reason is None:
            if status is None or body is None:
                reason = INCOMPLETE
            elif self._not_the_app():
                reason = NOT_THE_APP
            elif status >= 500 and not self.store_server_errors:
                reason = SERVER_ERROR
            elif status in RETRY_LATER:
                reason = RETRY_STATUS
            elif self.lost:
                self.outcome = LEASE_LOST  # another request may hold the key now
                return
        if reason is not None or status is None or body is None:
            await self._release(reason or INCOMPLETE)
            return
        value = encode(self.fingerprint, status, self.headers, b"".join(body))
        self.body = None
        try:
            stored = await self.kv.put(
                self.key, value, self.ttl, token=self.token, timeout=self.timeout
            )
        except StorageError as exc:
            logger.warning(
                "apiguard.idempotency: a response could not be stored (%s); its claim "
                "expires by itself",
                exc,
            )
            self.outcome = STORE_FAILED
            return
        self.outcome = STORED if stored else LEASE_LOST

    def _not_the_app(self) -> bool:
        """Whether a layer inside sent this response in the app's place.

        A fallback records its decision before it sends, a refusing layer
        (an inner timeout's 504) before its refusal: either is there by the
        time the last body message reaches `settle`. Such a response is not
        the operation's result (the app was cut short, or never ran), so a
        retry must run it, as the draft's "store the response of the
        resource" intends.
        """
        for decision in self.context.decisions[self._mark :]:
            if decision.outcome == "reject" or decision.layer == _FALLBACK:
                return True
        return False

    async def finish(self) -> None:
        """The app returned or raised: release the claim if its response never completed."""
        if not self._settling:
            self._settling = True
            self._stop()
            await self._release(self._unstored or INCOMPLETE)

    async def _release(self, reason: str) -> None:
        """Release the claim (so that a retry may run), noting why nothing was stored."""
        self.body = None
        try:
            await self.kv.release(self.key, self.token, timeout=self.timeout)
        except StorageError as exc:
            logger.warning(
                "apiguard.idempotency: a claim could not be released (%s); it expires by itself",
                exc,
            )
        self.outcome = reason

    def abandon(self) -> None:
        """The request was cancelled: release the claim in a task of its own.

        An await here would be cancelled in turn (anyio cancels every await
        in a cancelled scope), so the release runs beside the request. A
        response stored already stays stored: the release finds no claim.
        """
        self._settling = True
        self._stop()
        if self.outcome is None:
            self.outcome = CANCELLED
            _in_background(self._release(CANCELLED))


def _in_background(work: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(work)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
