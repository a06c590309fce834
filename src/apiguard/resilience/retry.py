"""`RetryMiddleware`: re-run idempotent requests that failed before anything was sent."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from typing import Final

from apiguard._clock import clock
from apiguard._types import ASGIApp, Message, Receive, Scope, Send
from apiguard.context import CONTEXT_KEY, Decision, RequestContext, get_context
from apiguard.layer import Description, JSONValue, Options, checked
from apiguard.resilience._replay import Recorder, Replay
from apiguard.resilience.budget import RetryBudget
from apiguard.routing import WEBSOCKET, RoutePolicies, request_method
from apiguard.routing._keys import CANONICAL_METHODS, fold_method

__all__ = ["IDEMPOTENT_METHODS", "RetryMiddleware"]

logger = logging.getLogger("apiguard.resilience")

#: RFC 9110 §9.2.2: the methods whose intended effect is the same however
#: often a request is repeated.
IDEMPOTENT_METHODS: Final = ("GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE")
_LAYER: Final = "retry"
_RETRY_AFTER: Final = b"retry-after"


class _Abandoned(Exception):
    """Raised into the app by its `send`: this attempt's answer will be retried, not sent."""


class _Request:
    """One request's retries: the app's `send` for each attempt, and what deciding needs."""

    __slots__ = (
        "abandoned",
        "context",
        "delay",
        "forwarded",
        "layer",
        "mark",
        "recorder",
        "retries",
        "send",
        "started",
        "status",
        "stop",
        "trail",
    )

    def __init__(
        self, layer: RetryMiddleware, send: Send, recorder: Recorder, context: RequestContext
    ) -> None:
        self.layer = layer
        self.send = send
        self.recorder = recorder
        self.context = context
        self.started = clock.monotonic()
        self.retries = 0
        self.abandoned = False
        self.forwarded = False
        self.status: int | None = None
        self.delay = 0.0
        self.stop: str | None = None
        self.mark = len(context.decisions)
        #: What failed, attempt by attempt (made on the first retry).
        self.trail: list[str] | None = None

    def note(self, failure: str) -> None:
        """Add an attempt's failure (a status or an exception's name) to the trail."""
        if self.trail is None:
            self.trail = [failure]
        else:
            self.trail.append(failure)

    def next_attempt(self) -> None:
        self.retries += 1
        self.abandoned = self.forwarded = False
        self.status = None
        self.mark = len(self.context.decisions)

    def __call__(self, message: Message) -> Awaitable[None]:
        # Plain, not async: the downstream `send`'s awaitable, no coroutine
        # of its own for each message; a retryable status takes the slow way.
        if self.abandoned:
            raise _Abandoned
        if not self.forwarded and message["type"] == "http.response.start":
            status: int = message["status"]
            self.status = status
            if status in self.layer.statuses:
                return self._retryable(message, status)
            self.forwarded = True  # before sending: a send that fails has started too
        return self.send(message)

    async def _retryable(self, message: Message, status: int) -> None:
        """A retryable status: abandon the attempt for another, or send it on."""
        # Decided at the start: a streaming answer's body is never read.
        await _client_gone(self.recorder)
        delay = self.layer.plan(self, _retry_after(message.get("headers", ())))
        if delay is not None:
            self.abandoned = True
            self.delay = delay
            self.note(str(status))
            raise _Abandoned
        self.forwarded = True  # before sending: a send that fails has started too
        await self.send(message)


async def _client_gone(recorder: Recorder) -> None:
    """Find out whether the client went away, without waiting: a retry would serve no one.

    The next `receive` answers at once when the client has gone (ASGI:
    `http.disconnect`), and otherwise waits; it is given one turn of the
    loop and then cancelled. It goes through the recorder, so that a body
    chunk it reads is replayed to the next attempt, and a disconnect is
    noted there (`recorder.disconnected`).
    """
    if recorder.disconnected:
        return
    peek = asyncio.ensure_future(recorder())
    await asyncio.sleep(0)
    if not peek.done():
        peek.cancel()
        try:
            await peek
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # not the peek's: the request itself is cancelled
        return
    if peek.exception() is not None:  # a server failing on a late receive: no client
        recorder.disconnected = True


def _retry_after(headers: Iterable[tuple[bytes, bytes]]) -> float | None:
    """RFC 9110 §10.2.3: delay-seconds or an HTTP-date, as seconds from now; `None` if absent."""
    for name, value in headers:
        if name.lower() == _RETRY_AFTER:
            text = value.strip()
            if text.isdigit():
                return float(text)
            try:
                when = email.utils.parsedate_to_datetime(text.decode("latin-1"))
            except (ValueError, TypeError, UnicodeError, OverflowError):
                # OverflowError: a field too large for the C time functions
                # (a year of twenty digits); as malformed as any other.
                return None
            return max(when.timestamp() - clock.time(), 0.0)
    return None


class RetryMiddleware:
    """Re-run the app for idempotent requests that failed before their response started.

    A request is retried when the app raises one of `exceptions`, or starts
    its response with one of `statuses` (502, 503, 504 by default), before
    anything was sent to the client: the retryable start is held and the
    attempt abandoned (its `send` raises), so that nothing of it reaches the
    client, a streaming body included. A response that has started is never
    retried. Only methods that RFC 9110 §9.2.2 calls idempotent are retried
    (GET, HEAD, OPTIONS, TRACE, PUT, DELETE), and routes opted in by key;
    a POST is never re-run unless its route is listed.

    Between attempts: exponential backoff with full jitter
    (`random(0, min(max_backoff, backoff x 2^n))`, the AWS architecture
    note's recommendation), or the app's `Retry-After` when it asks for
    longer. No retry starts when its wait would pass `total_timeout`
    (counted from the first attempt) or the request's deadline: a 503 whose
    `Retry-After` is longer than that is answered as the app said. Every
    retry is taken from a [`RetryBudget`][apiguard.resilience.RetryBudget]
    shared by the requests, so that retries cannot multiply the load of a
    failing app.

    Each attempt runs on a fresh copy of the scope (routing rewrites
    `root_path`, `path_params` and more inside mounts; `state` and
    `headers` are copied too) with its own `receive`: the request body the
    app read is recorded (up to `max_body_bytes`) and replayed to the next
    attempt, then the server's `receive` follows, so that a disconnect
    still arrives. A body over the bound is not retried, nor a request whose
    client went away. The request context is the same for every attempt:
    decisions, the principal and the deadline are shared.

    One decision per request: `Decision("retry", "allow", name, reason,
    status, retries=n)`, with `reason` saying why retrying stopped when the
    last answer was still a failure (`"attempts"`, `"budget"`,
    `"deadline"`, `"body-too-large"`, `"client-gone"`, `"overdue"`) and
    the statuses of the retried attempts as the attribute `retry.statuses`.

    Args:
        app: The ASGI app.
        name: The layer's name, in its decisions.
        attempts: Attempts in all, the first included (3: two retries).
        statuses: Response statuses that are retried.
        exceptions: Exception types raised by the app that are retried
            (`Exception` by default: any error of an idempotent request).
        methods: The methods retried everywhere.
        routes: Per-route choice by route key: `True` to retry a route
            whatever its method (`{"POST /search": True}`), `False` never.
        backoff: Seconds of the first retry's jitter range; doubled per retry.
        max_backoff: The longest jitter range, in seconds.
        total_timeout: Seconds from the first attempt after which no retry starts.
        budget: The [`RetryBudget`][apiguard.resilience.RetryBudget] (a new
            one per layer by default: 20 % of requests, 1 a second in reserve,
            over 10 s).
        max_body_bytes: Request bodies larger than this are not retried.

    Raises:
        ConfigError: an option is out of range, or a route key names no route.
    """

    @checked("RetryMiddleware", name="retry")
    def __init__(
        self,
        app: ASGIApp,
        *,
        name: str = "retry",
        attempts: int = 3,
        statuses: Iterable[int] = (502, 503, 504),
        exceptions: Sequence[type[BaseException]] = (Exception,),
        methods: Iterable[str] = IDEMPOTENT_METHODS,
        routes: Mapping[str, bool] | None = None,
        backoff: float = 0.05,
        max_backoff: float = 1.0,
        total_timeout: float = 10.0,
        budget: RetryBudget | None = None,
        max_body_bytes: int = 65_536,
    ) -> None:
        self.name = Options().layer_name(name)
        options = self.options = Options.of("RetryMiddleware", name)
        self.attempts = options.integer("attempts", attempts, low=1, high=10)
        if isinstance(statuses, str | bytes) or not isinstance(statuses, Iterable):
            options.fail("statuses", statuses, "is not a list of HTTP statuses")
        self.statuses = frozenset(
            options.integer("statuses", status, low=500, high=599) for status in statuses
        )
        if isinstance(exceptions, type) or not isinstance(exceptions, Sequence):
            options.fail("exceptions", exceptions, "is not a list of exception types")
        for kind in exceptions:
            if not (isinstance(kind, type) and issubclass(kind, Exception)):
                options.fail("exceptions", kind, "is not an Exception subclass")
        self.exceptions = tuple(exceptions)
        self.methods = frozenset(
            fold_method(method) for method in options.strings("methods", methods)
        )
        self.backoff = options.seconds("backoff", backoff, high=60.0, zero=True)
        self.max_backoff = options.seconds("max_backoff", max_backoff, high=600.0, zero=True)
        self.total_timeout = options.seconds("total_timeout", total_timeout, high=3600.0)
        if budget is None:
            budget = RetryBudget()
        elif not isinstance(budget, RetryBudget):
            options.fail("budget", budget, "is not a RetryBudget")
        self.budget = budget
        self.max_body_bytes = options.integer(
            "max_body_bytes", max_body_bytes, low=0, high=64 * 1_048_576
        )
        table = options.mapping("routes", routes)
        for key, value in table.items():
            options.flag(f"routes[{key!r}]", value)
        with options.checking():
            self.routes: RoutePolicies[bool | None] = RoutePolicies("routes", table, None)
        self._skip = Decision(_LAYER, "skip", self.name, "not-retryable")
        self._first = Decision(_LAYER, "allow", self.name, retries=0)

        self.app = options.bind_at_startup(app, self.routes)

    def _eligible(self, method: str, choice: bool | None) -> bool:
        return choice if choice is not None else method in self.methods

    def describe(self, method: str, key: str) -> Description:
        """Whether requests of `method` on route `key` are retried, and how (it answers nothing)."""
        eligible = method != WEBSOCKET and self._eligible(method, self.routes.get(method, key))
        summary: dict[str, JSONValue] = {
            "attempts": self.attempts,
            "statuses": [*sorted(self.statuses)],
            "backoff": self.backoff,
            "max_backoff": self.max_backoff,
            "total_timeout": self.total_timeout,
            "budget": repr(self.budget),
        }
        return Description(_LAYER, self.name, eligible, summary if eligible else {})

    # --- deciding ----------------------------------------------------------------------

    def plan(self, request: _Request, retry_after: float | None) -> float | None:
        """The wait before the next attempt, or `None` (and `request.stop` says why): no retry."""
        request.stop = None
        if request.retries + 1 >= self.attempts:
            request.stop = "attempts"
        elif request.recorder.disconnected:
            request.stop = "client-gone"
        elif request.recorder.overflow:
            request.stop = "body-too-large"
        elif _overdue(request.context, request.mark):
            # An inner timeout answered while the attempt still runs (a
            # thread): a retry would wait for it, and pile on more work.
            request.stop = "overdue"
        if request.stop is not None:
            return None
        ceiling = min(self.max_backoff, self.backoff * 2**request.retries)
        delay: float = random.random() * ceiling  # noqa: S311 - jitter, not a secret
        if retry_after is not None and retry_after > delay:
            delay = retry_after
        left = self.total_timeout - (clock.monotonic() - request.started)
        remaining = request.context.remaining()
        if remaining is not None and remaining < left:
            left = remaining
        if delay >= left:
            request.stop = "deadline"
            return None
        if not self.budget.withdraw():
            request.stop = "budget"
            return None
        return delay

    # --- the request -------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app, again while it fails before answering and a retry is allowed."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context: RequestContext = scope.get(CONTEXT_KEY) or get_context(scope)
        method: str = scope["method"]
        if method not in CANONICAL_METHODS:
            method = request_method(scope)
        routes = self.routes
        if not self._eligible(method, routes.default if routes.empty else routes.lookup(scope)):
            context.record(self._skip)
            await self.app(scope, receive, send)
            return
        self.budget.deposit()
        recorder = Recorder(receive, self.max_body_bytes)
        request = _Request(self, send, recorder, context)
        attempt_receive: Receive = recorder
        while True:
            child = dict(scope)
            state = scope.get("state")
            if state is not None:
                child["state"] = dict(state)
            child["headers"] = list(scope["headers"])
            try:
                await self.app(child, attempt_receive, request)
            except Exception as exc:
                if not request.abandoned:
                    if request.forwarded or not isinstance(exc, self.exceptions):
                        self._record(request)
                        raise
                    await _client_gone(recorder)
                    if self.plan(request, None) is None:
                        request.note(type(exc).__name__)
                        self._record(request)
                        raise
                    request.abandoned = True
                    request.note(type(exc).__name__)
                elif not isinstance(exc, _Abandoned):
                    logger.debug("apiguard: an abandoned attempt raised", exc_info=exc)
            if not request.abandoned:
                self._record(request)
                return
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "apiguard: retrying %s %s in %.3f s (%s)",
                    method,
                    scope.get("path"),
                    request.delay,
                    request.trail[-1] if request.trail else "",
                )
            if request.delay > 0:
                await asyncio.sleep(request.delay)
            request.next_attempt()
            attempt_receive = Replay(recorder)

    def _record(self, request: _Request) -> None:
        if not request.retries and request.stop is None:
            request.context.decisions.append(self._first)
            return
        status = request.status
        failed = status is None or status in self.statuses
        attributes = {"retry.statuses": ",".join(request.trail)} if request.trail else None
        request.context.record(
            Decision(
                _LAYER,
                "allow",
                self.name,
                request.stop if failed else None,
                status,
                retries=request.retries,
                attributes=attributes,
            )
        )


def _overdue(context: RequestContext, mark: int) -> bool:
    """Whether an inner timeout said, during this attempt, that the app still runs."""
    for decision in context.decisions[mark:]:
        attributes = decision.attributes
        if decision.layer == "timeout" and attributes and attributes.get("timeout.overdue"):
            return True
    return False
