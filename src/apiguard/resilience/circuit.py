"""`CircuitBreakerMiddleware`: stop calling what keeps failing; a fallback or 503 meanwhile."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from typing import Final, Literal

from apiguard._clock import clock
from apiguard._types import ASGIApp, KeyFunc, Message, Receive, Scope, Send
from apiguard.breaker import (
    CLOSED,
    HALF_OPEN,
    Breaker,
    BreakerPolicy,
    BreakerState,
    TransitionListener,
    check_policy,
)
from apiguard.context import CONTEXT_KEY, Decision, RequestContext, get_context
from apiguard.layer import Answer, Description, JSONValue, Options, checked
from apiguard.problems import Problem, ProblemResponse
from apiguard.resilience.fallbacks import Fallback, as_fallback, pass_through, with_fallback
from apiguard.routing import WEBSOCKET, RoutePolicies

__all__ = ["CircuitBreakerMiddleware"]

_LAYER: Final = "breaker"
_OPEN_REASON: Final = "breaker-open"
_DETAIL: Final = "Temporarily unavailable after repeated failures; retry after the time given."
_RETRY_AFTER: Final = b"retry-after"
#: The key of requests that reach no route (per-route breakers).
UNROUTED: Final = "*"
#: Where keys past `max_breakers` go (breakers per key).
OVERFLOW: Final = "(other)"

Per = Literal["route", "app"]


class _Slot:
    """One breaker of the layer, and its decisions built once."""

    __slots__ = ("allowed", "breaker", "key")

    def __init__(self, breaker: Breaker, name: str, key: str | None) -> None:
        self.breaker = breaker
        self.key = key
        self.allowed: dict[str, Decision] = {
            state: Decision(_LAYER, "allow", name, policy=key, state=state)
            for state in (CLOSED, HALF_OPEN)
        }


class _Policy:
    """A breaker policy as the layer applies it: the breakers made under it, by key.

    `policy` is `None` for the routes given no breaker (a route's policy
    cannot be `None` itself: `RoutePolicies` reads that as "not listed").
    """

    __slots__ = ("policy", "slots")

    def __init__(self, policy: BreakerPolicy | None) -> None:
        self.policy = policy
        self.slots: dict[str | None, _Slot] = {}


class _Watch:
    """The app's `send`: notes the status and when the response started."""

    __slots__ = ("send", "started", "status")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status = 0
        self.started = 0.0

    def __call__(self, message: Message) -> Awaitable[None]:
        # Plain, not async: the downstream `send`'s awaitable, no coroutine of its own.
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.started = clock.monotonic()
        return self.send(message)


class CircuitBreakerMiddleware:
    """Stop calling what keeps failing: answer with a fallback or 503 until a probe succeeds.

    Each route has a breaker of its own (`per="route"`), or the whole layer
    one (`per="app"`), or each value of a key function one
    (`per=by_header("x-tenant")`). A breaker counts its calls' outcomes over
    a sliding window and opens when, with at least `minimum_calls` in the
    window, `failure_rate` of them failed or `slow_call_rate` of them took
    `slow_call_seconds` or more (or `consecutive_failures` failed in a
    row). While it is open, requests are not passed to the app: the
    fallback serves them (reason `"breaker"`), or the client gets `503`
    problem details with `Retry-After`, the seconds until the next probe.
    After `open_seconds` (growing by `open_growth` each time a probe fails,
    up to `max_open_seconds`), `half_open_calls` requests probe the app:
    one failing opens the breaker again, all succeeding close it.

    A call fails when the app raises one of `failure_exceptions`, answers
    one of `failure_statuses` (5xx; never a 4xx unless listed: a client's
    mistake says nothing about the app), or, with `count_timeouts`, when a
    [`TimeoutMiddleware`][apiguard.TimeoutMiddleware] inside it gave up on
    the request (its 504, or its fallback's answer). A slow call is timed
    to the start of its response. A request cancelled (the client went
    away) counts as neither.

    Every transition is logged in one line (`apiguard.breaker` logger),
    handed to `on_transition` and to the process-wide listeners of
    [`apiguard.breaker.listen`][] (the tracing layer counts them), and
    shows in the decisions: `Decision("breaker", "allow" | "reject", name,
    reason, status, policy=<route or key>, state=<state>)`. State is per
    process: with several workers, each has its own breakers, and each
    opens on what it sees.

    Args:
        app: The ASGI app.
        name: The layer's name, in decisions, logs and transitions.
        per: `"route"` (a breaker per route key; requests that reach no
            route share one, `"*"`), `"app"` (one for every route), or a
            key function (`by_header("x-upstream")`; a request it gives
            `None` passes unguarded).
        window: `"time"` (the calls of the last `window_size` seconds, in
            one-second buckets) or `"count"` (the last `window_size` calls).
        window_size: Seconds or calls.
        minimum_calls: Calls the window must hold before a rate counts.
        failure_rate: The share of failed calls that opens a breaker.
        slow_call_rate: The share of slow calls that opens a breaker.
        slow_call_seconds: A call whose response starts this late or later
            is slow; `None`: none is.
        consecutive_failures: Failures in a row that open a breaker whatever
            the rates; `None`: only the rates.
        open_seconds: How long a breaker stays open the first time.
        open_growth: The factor the open time grows by while probes fail.
        max_open_seconds: The longest open time.
        half_open_calls: Probes let through half-open; all must succeed.
        probe_timeout: Seconds after which a probe that never ended no
            longer holds its place.
        failure_statuses: Response statuses that count as failures.
        failure_exceptions: Exception types raised by the app that count
            as failures (raised on to the server either way).
        count_timeouts: Count an inner `TimeoutMiddleware`'s timeout as a
            failure, whatever was served instead.
        routes: Per-route policies by route key: a
            [`BreakerPolicy`][apiguard.breaker.BreakerPolicy] of their own,
            or `None` for no breaker there.
        fallback: What to serve while open instead of the 503: a
            [`Fallback`][apiguard.Fallback], a Starlette `Response`, a
            function `(request, reason)`, or a list of these.
        on_transition: A function (or a list) called with each
            [`Transition`][apiguard.breaker.Transition] of the layer's breakers.
        max_breakers: Breakers kept at most with a key function (keys come
            from requests): past it, closed ones are dropped, and new keys
            share one breaker while none is.

    Raises:
        ConfigError: an option is out of range, or a route key names no route.

    Examples:
        >>> from starlette.applications import Starlette
        >>> from starlette.middleware import Middleware
        >>> from apiguard import guard
        >>> app = guard(
        ...     Starlette(),
        ...     Middleware(CircuitBreakerMiddleware, failure_rate=0.5, open_seconds=10),
        ... )
    """

    @checked("CircuitBreakerMiddleware", name=_LAYER)
    def __init__(
        self,
        app: ASGIApp,
        *,
        name: str = _LAYER,
        per: Per | KeyFunc = "route",
        window: Literal["count", "time"] = "time",
        window_size: int = 30,
        minimum_calls: int = 20,
        failure_rate: float = 0.5,
        slow_call_rate: float = 1.0,
        slow_call_seconds: float | None = 60.0,
        consecutive_failures: int | None = None,
        open_seconds: float = 5.0,
        open_growth: float = 1.0,
        max_open_seconds: float = 60.0,
        half_open_calls: int = 3,
        probe_timeout: float = 30.0,
        failure_statuses: Iterable[int] = range(500, 600),
        failure_exceptions: Sequence[type[BaseException]] = (Exception,),
        count_timeouts: bool = True,
        routes: Mapping[str, BreakerPolicy | None] | None = None,
        fallback: object = None,
        on_transition: TransitionListener | Sequence[TransitionListener] | None = None,
        max_breakers: int = 1000,
    ) -> None:
        self.name = Options().layer_name(name)
        options = self.options = Options.of("CircuitBreakerMiddleware", name)
        self.policy = check_policy(
            options,
            window=window,
            window_size=window_size,
            minimum_calls=minimum_calls,
            failure_rate=failure_rate,
            slow_call_rate=slow_call_rate,
            slow_call_seconds=slow_call_seconds,
            consecutive_failures=consecutive_failures,
            open_seconds=open_seconds,
            open_growth=open_growth,
            max_open_seconds=max_open_seconds,
            half_open_calls=half_open_calls,
            probe_timeout=probe_timeout,
        )
        self.key: KeyFunc | None = None
        self.per: str
        if isinstance(per, str):
            self.per = options.choice("per", per, ("route", "app"))
        else:
            self.key = options.function("per", per, "'route', 'app' or a key function")
            self.per = "key"
        if isinstance(failure_statuses, str | bytes) or not isinstance(failure_statuses, Iterable):
            options.fail("failure_statuses", failure_statuses, "is not a list of HTTP statuses")
        self.failure_statuses = frozenset(
            options.integer("failure_statuses", status, low=400, high=599)
            for status in failure_statuses
        )
        if isinstance(failure_exceptions, type) or not isinstance(failure_exceptions, Sequence):
            options.fail(
                "failure_exceptions", failure_exceptions, "is not a list of exception types"
            )
        for kind in failure_exceptions:
            if not (isinstance(kind, type) and issubclass(kind, Exception)):
                options.fail("failure_exceptions", kind, "is not an Exception subclass")
        self.failure_exceptions = tuple(failure_exceptions)
        self.count_timeouts = options.flag("count_timeouts", count_timeouts)
        self.max_breakers = options.integer("max_breakers", max_breakers, low=1, high=1_000_000)
        listeners: Sequence[object]
        if on_transition is None:
            listeners = ()
        elif callable(on_transition):
            listeners = (on_transition,)
        else:
            listeners = tuple(on_transition)
        for listener in listeners:
            options.function("on_transition", listener, "a function (transition)")
        self._listeners: tuple[TransitionListener, ...] = tuple(listeners)  # type: ignore[arg-type]
        self.default = _Policy(self.policy)
        self._off = _Policy(None)
        table: dict[str, _Policy] = {}
        for key, value in options.mapping("routes", routes).items():
            if value is not None and not isinstance(value, BreakerPolicy):
                options.fail(f"routes[{key!r}]", value, "is not a BreakerPolicy or None")
            table[key] = self._off if value is None else _Policy(value)
        with options.checking():
            self.routes: RoutePolicies[_Policy] = RoutePolicies("routes", table, self.default)
            self.fallback: Fallback | None = as_fallback("fallback", fallback)
        self._watches = self.fallback is not None and self.fallback.watches
        self._slow = any(
            p.policy is not None and p.policy.slow_call_seconds is not None
            for p in (self.default, *table.values())
        )
        self._response = ProblemResponse(Problem(status=503, detail=_DETAIL))
        self._skip = Decision(_LAYER, "skip", self.name, "no-breaker")
        self._no_key = Decision(_LAYER, "skip", self.name, "no-key")

        self.app = options.bind_at_startup(app, self.routes, self.fallback)

    # --- the breakers ----------------------------------------------------------------

    def breakers(self) -> list[Breaker]:
        """Every breaker the layer has made so far (for health checks and tests)."""
        policies = {id(p): p for p in (self.default, *(p for _, p in self.routes.items()))}
        return [slot.breaker for policy in policies.values() for slot in policy.slots.values()]

    def _slot(self, policy: _Policy, key: str | None) -> _Slot:
        """The breaker of `key` under `policy`, made on first use."""
        slots = policy.slots
        slot = slots.get(key)
        if slot is not None:
            return slot
        if self.per == "key" and len(slots) >= self.max_breakers:
            for old, kept in list(slots.items()):
                if kept.breaker.state == CLOSED and old != OVERFLOW:
                    del slots[old]
                    break
            else:
                key = OVERFLOW
                slot = slots.get(key)
                if slot is not None:
                    return slot
        breaker = Breaker(
            policy.policy or self.policy,
            layer=_LAYER,
            name=self.name,
            key=key,
            listeners=self._listeners,
        )
        slot = slots[key] = _Slot(breaker, self.name, key)
        return slot

    def describe(self, method: str, key: str) -> Description:
        """The breaker policy of requests of `method` on route `key`, and what it answers open."""
        policy = self.routes.get(method, key).policy
        if policy is None or method == WEBSOCKET:
            return Description(_LAYER, self.name, False, {})
        per = self.per if self.key is None else repr(self.key)
        summary: dict[str, JSONValue] = {"per": per, **policy.summary()}
        summary["failure_statuses"] = _ranges(self.failure_statuses)
        if self.count_timeouts:
            summary["count_timeouts"] = True
        answers = [Answer(503, _OPEN_REASON, ("Retry-After",), description=_DETAIL)]
        return Description(
            _LAYER, self.name, True, summary, with_fallback(self.fallback, summary, answers)
        )

    # --- the request -----------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Call the app through the request's breaker, or answer in its place while it is open."""
        if scope["type"] != "http":
            await pass_through(self.app, self.fallback, scope, receive, send)
            return
        routes = self.routes
        policy = routes.default if routes.empty else routes.lookup(scope)
        if policy is self._off:
            get_context(scope).record(self._skip)
            await self.app(scope, receive, send)
            return
        per = self.per
        if per == "route":
            match = self.routes.match(scope)
            key: str | None = UNROUTED if match is None else match.key
        elif per == "app":
            key = None
        else:
            key = self.key(scope)  # type: ignore[misc]
            if key is None:
                get_context(scope).record(self._no_key)
                await self.app(scope, receive, send)
                return
        slot = policy.slots.get(key)
        if slot is None:
            slot = self._slot(policy, key)
        breaker = slot.breaker
        # Closed, the common case, without a call: permit() would say the same.
        generation = breaker.generation if breaker.state == CLOSED else breaker.permit()
        context: RequestContext | None = scope.get(CONTEXT_KEY)
        if context is None:
            context = get_context(scope)
        if generation is None:
            await self._refuse(scope, send, slot, context)
            return
        context.decisions.append(slot.allowed[breaker.state])
        timeouts = context.timeouts
        watch = _Watch(self.fallback.watch(scope, send) if self._watches else send)  # type: ignore[union-attr]
        slow = self._slow
        began = clock.monotonic() if slow else 0.0
        try:
            await self.app(scope, receive, watch)
        except asyncio.CancelledError:
            breaker.release(generation)  # the client went away: no outcome
            raise
        except BaseException as exc:
            seconds = (watch.started or clock.monotonic()) - began if self._slow else 0.0
            if isinstance(exc, self.failure_exceptions):
                breaker.failure(exc, seconds, generation)
            else:
                breaker.release(generation)
            raise
        seconds = (watch.started or clock.monotonic()) - began if slow else 0.0
        if watch.status in self.failure_statuses or (
            context.timeouts > timeouts and self.count_timeouts
        ):
            breaker.failure(None, seconds, generation)
        else:
            breaker.success(seconds, generation, watch.started or None)

    async def _refuse(self, scope: Scope, send: Send, slot: _Slot, context: RequestContext) -> None:
        """The breaker is open: the fallback's answer, or 503 with the time until the next probe."""
        breaker = slot.breaker
        state: BreakerState = breaker.state
        retry = breaker.retry_after()
        if state == HALF_OPEN:
            # The probes in flight decide soon; their timeout is only a bound.
            retry = min(retry, 1.0)
        fallback = self.fallback
        served = fallback is not None and await fallback.serve(scope, "breaker", send)
        context.record(
            Decision(
                _LAYER,
                "reject",
                self.name,
                _OPEN_REASON,
                None if served else 503,
                slot.key,
                reset_after=retry,
                state=state,
                attributes={"breaker.fallback": True} if served else None,
            )
        )
        if served:
            return
        # RFC 9110 §10.2.3: delay-seconds, whole; never 0 (that invites a retry storm).
        await self._response.send(scope, send, [(_RETRY_AFTER, b"%d" % max(math.ceil(retry), 1))])


def _ranges(statuses: frozenset[int]) -> str:
    """`500-599` or `500, 502-504`: a set of statuses as the report shows it."""
    found: list[str] = []
    ordered = sorted(statuses)
    start = previous = ordered[0] if ordered else 0
    for status in [*ordered[1:], -1]:
        if status != previous + 1:
            found.append(f"{start}" if start == previous else f"{start}-{previous}")
            start = status
        previous = status
    return ", ".join(found) if ordered else ""
