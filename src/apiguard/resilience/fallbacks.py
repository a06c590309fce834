"""Fallbacks: what a fail-safe layer serves instead of an error.

A fallback is a small object that a layer asks, when it will not let the app
answer (a timeout, an open breaker, a shed request), to serve a response in
the app's place; it may decline, and the layer then sends its own problem
details (504, 503). One protocol, [`Fallback`][apiguard.Fallback], serves
every layer that has a fallback: [`TimeoutMiddleware`][apiguard.TimeoutMiddleware]
here, the circuit breaker and the load shedder next.

Three kinds come with apiguard, and a list of them is tried in order:

- [`ResponseFallback`][apiguard.ResponseFallback]: a fixed response, its
  bytes built once;
- [`CallableFallback`][apiguard.CallableFallback]: a function of the
  request and the reason that returns a response, or `None` to decline;
- [`StaleIfError`][apiguard.StaleIfError]: the last good response to the
  same `GET` (RFC 5861 `stale-if-error`).

A layer's `fallback=` option takes any of these, a Starlette `Response`
(made a `ResponseFallback`), a function (made a `CallableFallback`), or a
list of them.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Sequence
from typing import Any, Final, Literal, Protocol, TypeAlias

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from apiguard._asgi import lifespan_hooks
from apiguard._types import ASGIApp, Message, Receive, Scope, Send
from apiguard.context import Decision, get_context
from apiguard.errors import ConfigError
from apiguard.layer import Answer, JSONValue, Options, checked

__all__ = [
    "CallableFallback",
    "Fallback",
    "FallbackChain",
    "FallbackFunction",
    "FallbackReason",
    "ResponseFallback",
    "as_fallback",
    "fallback_decision",
    "pass_through",
    "with_fallback",
]

logger = logging.getLogger("apiguard.resilience")

#: Why a layer asks its fallback: the app did not answer in time
#: (`"timeout"`), a circuit breaker is open (`"breaker"`), or the request
#: was shed under load (`"shed"`).
FallbackReason: TypeAlias = Literal["timeout", "breaker", "shed"]

#: The layer kind of the decisions fallbacks record.
LAYER: Final = "fallback"


def fallback_decision(
    scope: Scope,
    name: str,
    reason: FallbackReason,
    status: int,
    kind: str,
    **attributes: str | int | float | bool,
) -> None:
    """Record that fallback `name` served `status` for `reason`: a decision like any other."""
    get_context(scope).record(
        Decision(
            LAYER,
            "allow",
            name,
            reason,
            status,
            attributes={"fallback.kind": kind, **attributes},
        )
    )


async def _never_receive() -> Message:
    """A `receive` for responses served in the app's place: the request body is not theirs.

    It waits, so that a streaming response listening for a disconnect keeps
    streaming until it ends by itself.
    """
    await asyncio.Event().wait()
    raise AssertionError("unreachable")  # pragma: no cover


class Fallback:
    """What a fail-safe layer serves instead of an error; subclass it for a kind of your own.

    A layer calls [`serve`][apiguard.Fallback.serve] when it will not let
    the app answer; everything else has a default that does nothing, so a
    fallback of your own needs only `serve`. Every method is called by the
    layer that holds the fallback, never by the app.

    Attributes:
        name: The fallback's name, in its decisions (`Decision("fallback",
            "allow", name, reason, status)`) and in the policy report.
    """

    name: str = "fallback"

    async def serve(self, scope: Scope, reason: FallbackReason, send: Send) -> bool:
        """Send a whole response for the request in `scope` through `send`, or decline.

        Args:
            scope: The request's scope (its headers, path, context).
            reason: Why the layer does not let the app answer.
            send: Where to send the response (the server's `send`, or the
                next outer layer's): either a whole response, or nothing.

        Returns:
            `True` when a response was sent; `False` to decline (nothing
            sent): the layer then sends its own refusal.
        """
        return False

    def watch(self, scope: Scope, send: Send) -> Send:
        """A `send` for the app's response to this request: to keep a copy of it.

        The layer wraps the app's `send` with it on every request it lets
        through. The default hands `send` back unchanged, which costs
        nothing; [`StaleIfError`][apiguard.StaleIfError] keeps good `GET`
        responses this way.
        """
        return send

    @property
    def watches(self) -> bool:
        """Whether [`watch`][apiguard.Fallback.watch] ever wraps (layers skip it otherwise)."""
        return False

    def answers(self) -> tuple[Answer, ...]:
        """The responses it may serve, for the layer's `describe` (policy report, OpenAPI)."""
        return ()

    def bind(self, app: ASGIApp) -> None:
        """Check route keys against the app the layer wraps (at start-up); nothing by default."""

    async def open(self) -> None:
        """Connect a store (at lifespan start-up); nothing by default."""

    async def aclose(self) -> None:
        """Close a store (at shutdown); nothing by default."""


class ResponseFallback(Fallback):
    """A fixed response: the same status, headers and body every time, bytes built once.

    Args:
        response: A Starlette `Response` (`JSONResponse({"items": []})`,
            `Response(status_code=503, ...)`); a streaming response is
            refused (its body can be read only once).
        name: The fallback's name in decisions.

    Raises:
        ConfigError: `response` is not a Starlette `Response`, or streams.

    Examples:
        >>> from starlette.responses import JSONResponse
        >>> ResponseFallback(JSONResponse({"items": [], "partial": True})).status
        200
    """

    @checked("ResponseFallback")
    def __init__(self, response: Response, *, name: str = "response") -> None:
        options = Options("ResponseFallback")
        self.name = options.layer_name(name)
        given: object = response
        if isinstance(given, StreamingResponse) or not isinstance(given, Response):
            options.fail(
                "response", given, "is not a Starlette Response with a body (JSONResponse, ...)"
            )
        self.status = response.status_code
        self.body = bytes(response.body)
        kept = [pair for pair in response.raw_headers if pair[0] != b"content-length"]
        self.headers = (*kept, (b"content-length", b"%d" % len(self.body)))

    async def serve(self, scope: Scope, reason: FallbackReason, send: Send) -> bool:
        """Send the response."""
        fallback_decision(scope, self.name, reason, self.status, "response")
        await send(
            {"type": "http.response.start", "status": self.status, "headers": [*self.headers]}
        )
        await send({"type": "http.response.body", "body": self.body, "more_body": False})
        return True

    def answers(self) -> tuple[Answer, ...]:
        """The fixed response's status."""
        return (Answer(self.status, "fallback", description="A fixed fallback response."),)

    def __repr__(self) -> str:
        return f"ResponseFallback(status={self.status}, name={self.name!r})"


class FallbackFunction(Protocol):
    """A function that answers in the app's place: `(request, reason) -> Response | None`.

    It may be `async`. Returning `None` declines (the layer sends its own
    refusal). It must not read the request body: the app may have read it.
    """

    def __call__(
        self, request: Request, reason: FallbackReason, /
    ) -> Response | Awaitable[Response | None] | None:
        """A response for the request, or `None` to decline."""
        ...


class CallableFallback(Fallback):
    """A response made by a function of the request and the reason, or a decline.

    Args:
        function: `(request, reason) -> Response | None`, sync or `async`.
            An exception is logged and counts as a decline.
        timeout: Seconds the function may take (it runs after the
            request's own time is up); past it, a decline.
        statuses: The statuses it may answer with, for the policy report
            and OpenAPI (it is not checked at run time).
        name: The fallback's name in decisions.

    Raises:
        ConfigError: `function` is not callable, or an option is out of range.

    Examples:
        >>> from starlette.responses import JSONResponse
        >>> async def cached_menu(request, reason):
        ...     if request.url.path == "/menu":
        ...         return JSONResponse({"dishes": [], "degraded": reason})
        ...     return None
        >>> CallableFallback(cached_menu, statuses=[200]).name
        'function'
    """

    @checked("CallableFallback")
    def __init__(
        self,
        function: FallbackFunction,
        *,
        timeout: float = 1.0,
        statuses: Sequence[int] = (),
        name: str = "function",
    ) -> None:
        options = Options("CallableFallback")
        self.name = options.layer_name(name)
        self.function = options.function("function", function, "a function (request, reason)")
        self.timeout = options.seconds("timeout", timeout, high=60.0)
        if isinstance(statuses, str | bytes) or not isinstance(statuses, Sequence):
            options.fail("statuses", statuses, "is not a list of HTTP statuses")
        for status in statuses:
            options.integer("statuses", status, low=100, high=599)
        self.statuses = tuple(statuses)

    async def serve(self, scope: Scope, reason: FallbackReason, send: Send) -> bool:
        """Call the function; send what it returns."""
        try:
            async with asyncio.timeout(self.timeout):
                made: Any = self.function(Request(scope), reason)
                if inspect.isawaitable(made):
                    made = await made
        except Exception as exc:
            logger.warning(
                "apiguard: fallback %r failed (%s); declining", self.name, type(exc).__name__
            )
            return False
        if made is None:
            return False
        if not isinstance(made, Response):
            logger.error(
                "apiguard: fallback %r returned %s, not a Response; declining",
                self.name,
                type(made).__name__,
            )
            return False
        fallback_decision(scope, self.name, reason, made.status_code, "function")
        await made(scope, _never_receive, send)
        return True

    def answers(self) -> tuple[Answer, ...]:
        """The statuses it was declared to answer with."""
        return tuple(
            Answer(status, "fallback", description="A fallback response made by a function.")
            for status in self.statuses
        )

    def __repr__(self) -> str:
        return f"CallableFallback({self.function!r}, name={self.name!r})"


class FallbackChain(Fallback):
    """Fallbacks tried in order: the first that serves answers.

    `[StaleIfError(), ResponseFallback(...)]`: the last good response if
    there is one, else the fixed one. Every fallback in the chain watches
    the responses and is bound, opened and closed with it.
    """

    def __init__(self, fallbacks: Sequence[Fallback]) -> None:
        self.fallbacks = tuple(fallbacks)
        self.name = "+".join(fallback.name for fallback in self.fallbacks)
        self._watching = tuple(f for f in self.fallbacks if f.watches)

    async def serve(self, scope: Scope, reason: FallbackReason, send: Send) -> bool:
        """Ask each fallback in turn."""
        for fallback in self.fallbacks:
            if await fallback.serve(scope, reason, send):
                return True
        return False

    def watch(self, scope: Scope, send: Send) -> Send:
        """Let every fallback that keeps responses see this one."""
        for fallback in self._watching:
            send = fallback.watch(scope, send)
        return send

    @property
    def watches(self) -> bool:
        """Whether any fallback of the chain keeps responses."""
        return bool(self._watching)

    def answers(self) -> tuple[Answer, ...]:
        """Every fallback's answers."""
        return tuple(answer for fallback in self.fallbacks for answer in fallback.answers())

    def bind(self, app: ASGIApp) -> None:
        """Bind every fallback."""
        for fallback in self.fallbacks:
            fallback.bind(app)

    async def open(self) -> None:
        """Open every fallback's store."""
        for fallback in self.fallbacks:
            await fallback.open()

    async def aclose(self) -> None:
        """Close every fallback's store."""
        for fallback in self.fallbacks:
            await fallback.aclose()

    def __repr__(self) -> str:
        return f"FallbackChain({list(self.fallbacks)!r})"


def as_fallback(option: str, value: object) -> Fallback | None:
    """A layer's `fallback=` option as one [`Fallback`][apiguard.Fallback] (or `None`).

    Takes a `Fallback`, a Starlette `Response` (a fixed one), a function of
    `(request, reason)`, or a list of these (tried in order).

    Raises:
        ConfigError: anything else, naming `option`.
    """
    if value is None or isinstance(value, Fallback):
        return value
    if isinstance(value, Response):
        return ResponseFallback(value)
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        items = [as_fallback(f"{option}[{index}]", item) for index, item in enumerate(value)]
        chain = [item for item in items if item is not None]
        if not chain:
            msg = f"{option}: the list of fallbacks is empty"
            raise ConfigError(msg)
        return chain[0] if len(chain) == 1 else FallbackChain(chain)
    if callable(value):
        return CallableFallback(value)
    msg = (
        f"{option} {value!r} is not a fallback: a Response, a function (request, reason), "
        "StaleIfError(), or a list of them"
    )
    raise ConfigError(msg)


async def pass_through(
    app: ASGIApp, fallback: Fallback | None, scope: Scope, receive: Receive, send: Send
) -> None:
    """What a fail-safe layer does with a scope it does not guard (lifespan, WebSocket).

    The app's, with the fallback's resources opened when the app starts up
    and closed when it shuts down.
    """
    if scope["type"] == "lifespan" and fallback is not None:
        await lifespan_hooks(
            app, scope, receive, send, startup=fallback.open, shutdown=fallback.aclose
        )
        return
    await app(scope, receive, send)


def with_fallback(
    fallback: Fallback | None, summary: dict[str, JSONValue], answers: Sequence[Answer]
) -> tuple[Answer, ...]:
    """A fail-safe layer's answers, and its summary, with what its fallback adds (if any)."""
    if fallback is None:
        return tuple(answers)
    summary["fallback"] = fallback.name
    return (*answers, *fallback.answers())
