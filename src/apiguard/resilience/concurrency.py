"""`ConcurrencyLimitMiddleware`: bounded in-flight work (bulkheads), load shedding, priorities."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Final

from apiguard._clock import clock
from apiguard._types import ASGIApp, Receive, Scope, Send
from apiguard.compose import checked_at_startup
from apiguard.context import CONTEXT_KEY, Decision, RequestContext, get_context
from apiguard.layer import Answer, Describes, Description, JSONValue, Options, checked
from apiguard.problems import Problem, ProblemResponse
from apiguard.resilience._adaptive import AdaptiveLimit, Gradient
from apiguard.resilience._pools import CRITICAL, PRIORITIES, Pool, Priority
from apiguard.resilience.fallbacks import Fallback, as_fallback, pass_through, with_fallback
from apiguard.routing import WEBSOCKET, RoutePolicies, find_router, parse_route_key, routes_of

__all__ = ["TEMPORARY_REDUCED_CAPACITY", "ConcurrencyLimitMiddleware"]

_LAYER: Final = "concurrency"
#: draft-ietf-httpapi-ratelimit-headers-11 §8: the problem type of a 503
#: given because the server's capacity is reduced for a while.
TEMPORARY_REDUCED_CAPACITY: Final = (
    "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity"
)
_TITLE: Final = "Request cannot be satisfied due to temporary server capacity constraints"
_DETAIL: Final = "The server is at capacity; retry after the number of seconds in Retry-After."
_RETRY_AFTER: Final = b"retry-after"
#: Fixed limits up to this size get their allowed decisions built once.
_PREBUILT: Final = 4096
#: A readiness check asks whether every request was shed over at least this long.
_SHEDDING_WINDOW: Final = 1.0


class _Route:
    """What a route gets: its own pool (a bulkhead) or none, its priority, or no limit at all."""

    __slots__ = ("exempt", "label", "pool", "priority")

    def __init__(self, pool: Pool | None, priority: str, label: str, exempt: bool = False) -> None:
        self.pool = pool
        self.priority = priority
        self.label = label
        self.exempt = exempt


class _Refusal:
    """A pool's 503, built once."""

    __slots__ = ("response",)

    def __init__(self, policy: str, retry_after: int) -> None:
        problem = Problem(
            status=503,
            type=TEMPORARY_REDUCED_CAPACITY,
            title=_TITLE,
            detail=_DETAIL,
            extensions={"violated-policies": [policy]},
        )
        self.response = ProblemResponse(problem, [(_RETRY_AFTER, b"%d" % retry_after)])


class ConcurrencyLimitMiddleware:
    """Bound the requests in flight; queue a few briefly; shed the rest with 503 and `Retry-After`.

    At most `max_in_flight` requests run in the app at once. Past that, up
    to `max_queue` requests wait (each at most `max_wait` seconds, and never
    past the request's deadline) for a slot, which a finishing request hands
    to the first waiter of the highest priority; the others are shed at
    once: `503` problem details of the `temporary-reduced-capacity` type
    (draft-ietf-httpapi-ratelimit-headers-11), with `Retry-After`, or the
    fallback's answer (reason `"shed"`). A shed request costs no app work.

    Routes listed in `routes` get a pool of their own as well (a bulkhead:
    `{"POST /reports": 4}` keeps slow reports from taking every slot), or,
    given `None`, are not limited (long-lived streams). Priorities
    (`priorities={"GET /search": "low"}`) decide who is shed first:
    `"critical"` is never shed (nor counted), `"high"` waits first and
    takes a lower waiter's place in a full queue, `"low"` is admitted only
    while a tenth of the limit is free. Routes that a layer inside answers
    itself (a [`HealthMiddleware`][apiguard.HealthMiddleware] endpoint) are
    critical unless listed.

    With `adaptive`, the global limit follows the app's latency (a
    gradient, as Envoy's adaptive concurrency filter; see
    [`AdaptiveLimit`][apiguard.resilience.AdaptiveLimit]), between
    `min_limit` and `max_in_flight`: it falls as requests start to queue
    inside the app, and rises while they do not.

    State is per process: with several workers, each has its own bound.
    WebSocket connections pass through uncounted.

    Args:
        app: The ASGI app.
        name: The layer's name, in decisions and in the 503's `violated-policies`.
        max_in_flight: Requests in the app at most (the adaptive limit's ceiling).
        max_queue: Requests waiting at most; 0 (the default): shed at once,
            as resilience4j's bulkhead and Envoy do.
        max_wait: Seconds a request waits at most.
        routes: Per-route pools by route key: a number of requests in
            flight on that route at most, or `None` for no limit there.
        priorities: Per-route priorities by route key: `"critical"`,
            `"high"`, `"normal"` (the default) or `"low"`.
        adaptive: `True` for an adaptive limit with its defaults, an
            [`AdaptiveLimit`][apiguard.resilience.AdaptiveLimit], or
            `False` for the fixed `max_in_flight`.
        retry_after: The `Retry-After` of a 503, in whole seconds.
        fallback: What to serve instead of the 503: a
            [`Fallback`][apiguard.Fallback], a Starlette `Response`, a
            function `(request, reason)`, or a list of these.

    Raises:
        ConfigError: an option is out of range, or a route key names no route.

    Examples:
        >>> from starlette.applications import Starlette
        >>> from starlette.middleware import Middleware
        >>> from apiguard import guard
        >>> app = guard(Starlette(), Middleware(ConcurrencyLimitMiddleware, max_in_flight=200))
    """

    @checked("ConcurrencyLimitMiddleware", name=_LAYER)
    def __init__(
        self,
        app: ASGIApp,
        *,
        name: str = _LAYER,
        max_in_flight: int = 100,
        max_queue: int = 0,
        max_wait: float = 1.0,
        routes: Mapping[str, int | None] | None = None,
        priorities: Mapping[str, Priority] | None = None,
        adaptive: bool | AdaptiveLimit = False,
        retry_after: int = 1,
        fallback: object = None,
    ) -> None:
        self.name = Options().layer_name(name)
        options = self.options = Options.of("ConcurrencyLimitMiddleware", name)
        self.max_in_flight = options.integer("max_in_flight", max_in_flight, low=1, high=1_000_000)
        self.max_queue = options.integer("max_queue", max_queue, low=0, high=1_000_000)
        self.max_wait = options.seconds("max_wait", max_wait, high=600.0)
        self.retry_after = options.integer("retry_after", retry_after, low=1, high=86_400)
        self.pool = Pool(self.max_in_flight, self.max_queue, self.max_wait)
        self.adaptive: Gradient | None = None
        if adaptive is True:
            adaptive = AdaptiveLimit()
        if isinstance(adaptive, AdaptiveLimit):
            ceiling = adaptive.max_limit or self.max_in_flight
            self.adaptive = Gradient(adaptive, self.pool, min(ceiling, self.max_in_flight))
        elif adaptive is not False:
            options.fail("adaptive", adaptive, "is not True, False or an AdaptiveLimit")
        limits = options.mapping("routes", routes)
        for key, value in limits.items():
            if value is not None:
                options.integer(f"routes[{key!r}]", value, low=1, high=1_000_000)
        ranks = options.mapping("priorities", priorities)
        for key, value in ranks.items():
            options.choice(f"priorities[{key!r}]", value, PRIORITIES)
        self._limits = dict(limits)
        self._priorities = dict(ranks)
        self._refusals = {self.name: _Refusal(self.name, self.retry_after)}
        self.default = _Route(None, "normal", self.name)
        with options.checking():
            self.routes = self._table({})
            self.fallback: Fallback | None = as_fallback("fallback", fallback)
        self._watches = self.fallback is not None and self.fallback.watches
        self._skip = Decision(_LAYER, "skip", self.name, "not-limited")
        self._allowed: list[Decision] = []
        if self.adaptive is None and self.max_in_flight <= _PREBUILT:
            self._allowed = [
                Decision(_LAYER, "allow", self.name, limit=self.max_in_flight, remaining=left)
                for left in range(self.max_in_flight, -1, -1)
            ]
        self._critical = Decision(_LAYER, "allow", self.name, "critical")
        self._seen: dict[tuple[int, int], Decision] = {}
        self._checked = (clock.monotonic(), 0, 0, False)
        self.admitted = 0
        self.refused = 0

        def bind() -> None:
            with options.checking():
                # Each option's keys checked against the app under its own name.
                RoutePolicies("priorities", self._priorities, "").bind(app)
                RoutePolicies("routes", self._limits, None).bind(app)
                self.routes = self._table(self._answered_inside(app))
                self.routes.bind(app)
                if self.fallback is not None:
                    self.fallback.bind(app)

        self.app = checked_at_startup(app, bind)

    # --- routes ------------------------------------------------------------------------

    def _table(self, critical: Mapping[str, str]) -> RoutePolicies[_Route]:
        """The per-route table: each listed key's pool and priority.

        Routes answered by a layer inside (`critical`) are critical unless
        `priorities` says otherwise.
        """
        # RoutePolicies reads a None policy as "not listed": 0 is "no limit", -1 "not given".
        given_limits = {k: 0 if v is None else v for k, v in self._limits.items()}
        limits: RoutePolicies[int] = RoutePolicies("routes", given_limits, -1)
        given: RoutePolicies[str] = RoutePolicies("priorities", self._priorities, "")
        table: dict[str, _Route] = {}
        for raw in {**critical, **self._limits, **self._priorities}:
            method, key = parse_route_key("routes", raw)
            limit = limits.get(method, key)
            priority = given.get(method, key) or critical.get(raw) or "normal"
            if limit == 0:
                table[raw] = _Route(None, priority, self.name, exempt=True)
                continue
            pool = None
            label = self.name
            if limit > 0:
                pool = Pool(limit, self.max_queue, self.max_wait)
                label = f"{self.name}:{key}"
                if label not in self._refusals:
                    self._refusals[label] = _Refusal(label, self.retry_after)
            table[raw] = _Route(pool, priority, label)
        return RoutePolicies("routes", table, self.default)

    def _answered_inside(self, app: ASGIApp) -> dict[str, str]:
        """Route keys a layer inside answers itself (health endpoints): critical by default."""
        if find_router(app) is None:
            return {}
        inner: list[Describes] = []
        node: object = app
        for _ in range(64):
            if isinstance(node, Describes):
                inner.append(node)
            node = getattr(node, "app", None)
            if node is None:
                break
        found: dict[str, str] = {}
        for info in routes_of(app):
            for method in sorted(info.methods or ()):
                if any(layer.describe(method, info.key).handles for layer in inner):
                    found[f"{method} {info.key}"] = CRITICAL
        return found

    def describe(self, method: str, key: str) -> Description:
        """The bound requests of `method` on route `key` meet, and the 503 they may get."""
        route = self.routes.get(method, key)
        if route.exempt or method == WEBSOCKET:
            return Description(_LAYER, self.name, False, {"limited": False})
        summary: dict[str, JSONValue] = {
            "max_in_flight": self.max_in_flight,
            "max_queue": self.max_queue,
            "priority": route.priority,
        }
        if self.max_queue:
            summary["max_wait"] = self.max_wait
        if route.pool is not None:
            summary["route_limit"] = route.pool.limit
        if self.adaptive is not None:
            summary["adaptive"] = repr(self.adaptive.settings)
        answers: tuple[Answer, ...] = ()
        if route.priority != CRITICAL:
            answers = (Answer(503, "shed", ("Retry-After",), TEMPORARY_REDUCED_CAPACITY, _DETAIL),)
            answers = with_fallback(self.fallback, summary, answers)
        return Description(_LAYER, self.name, True, summary, answers)

    # --- state, for readiness ------------------------------------------------------------

    @property
    def limit(self) -> int:
        """The global limit now (the adaptive one where adaptive)."""
        return self.pool.limit

    @property
    def in_flight(self) -> int:
        """Requests in the app now (critical ones apart)."""
        return self.pool.in_flight

    def shedding_everything(self) -> bool:
        """Whether every request was shed since this was last asked, at least a second ago."""
        now = clock.monotonic()
        at, admitted, refused, verdict = self._checked
        if now - at >= _SHEDDING_WINDOW:
            verdict = self.refused > refused and self.admitted == admitted
            self._checked = (now, self.admitted, self.refused, verdict)
        return verdict

    # --- the request -------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request within the bound, after a short wait at most, or shed it."""
        if scope["type"] != "http":
            await pass_through(self.app, self.fallback, scope, receive, send)
            return
        routes = self.routes
        route = routes.default if routes.empty else routes.lookup(scope)
        if route.exempt:
            get_context(scope).record(self._skip)
            await self.app(scope, receive, send)
            return
        priority = route.priority
        context: RequestContext = scope.get(CONTEXT_KEY) or get_context(scope)
        if priority == CRITICAL:
            context.record(self._critical)
            await self.app(scope, receive, send)
            return
        own = route.pool
        pool = self.pool
        waited = 0.0
        if own is not None and not own.try_acquire(priority):
            waited = await self._wait(own, priority, context, waited)
            if waited < 0:
                await self._shed(scope, send, context, own, route.label, priority)
                return
        if not pool.try_acquire(priority):
            waited = await self._wait(pool, priority, context, waited)
            if waited < 0:
                if own is not None:
                    own.release(priority)
                await self._shed(scope, send, context, pool, self.name, priority)
                return
        self.admitted += 1
        allowed = self._allowed
        if allowed and not waited:
            context.decisions.append(allowed[pool.in_flight])
        elif not waited:
            # An adaptive limit: the decisions of the limits it takes, made on first use.
            seen = self._seen
            decision = seen.get((pool.limit, pool.in_flight))
            if decision is None:
                if len(seen) >= _PREBUILT:
                    seen.clear()
                decision = seen[pool.limit, pool.in_flight] = Decision(
                    _LAYER,
                    "allow",
                    self.name,
                    limit=pool.limit,
                    remaining=max(pool.limit - pool.in_flight, 0),
                )
            context.record(decision)
        else:
            attributes = {"concurrency.waited": waited} if waited else None
            context.record(
                Decision(
                    _LAYER,
                    "allow",
                    self.name,
                    limit=pool.limit,
                    remaining=max(pool.limit - pool.in_flight, 0),
                    attributes=attributes,
                )
            )
        if self._watches:
            send = self.fallback.watch(scope, send)  # type: ignore[union-attr]
        adaptive = self.adaptive
        began = clock.monotonic() if adaptive is not None else 0.0
        try:
            await self.app(scope, receive, send)
        finally:
            pool.release(priority)
            if own is not None:
                own.release(priority)
            if adaptive is not None:
                now = clock.monotonic()
                adaptive.sample(now - began, began, now)

    async def _wait(
        self, pool: Pool, priority: str, context: RequestContext, waited: float
    ) -> float:
        """Wait in `pool`'s queue: the seconds waited in all, or -1: shed."""
        future = pool.enqueue(priority)
        if future is None:
            return -1.0
        bound = context.bound(pool.max_wait)
        began = clock.monotonic()
        try:
            async with asyncio.timeout(bound):
                admitted = await asyncio.shield(future)
        except TimeoutError:
            pool.gave_up(future)
            return -1.0
        except asyncio.CancelledError:
            pool.gave_up(future)
            raise
        if not admitted:
            return -1.0
        return waited + max(clock.monotonic() - began, 1e-9)

    async def _shed(
        self,
        scope: Scope,
        send: Send,
        context: RequestContext,
        pool: Pool,
        label: str,
        priority: str,
    ) -> None:
        """The fallback's answer, or 503 with `Retry-After`: no app work done."""
        self.refused += 1
        attributes: dict[str, Any] = {"concurrency.priority": priority}
        if label != self.name:
            attributes["concurrency.pool"] = label
        fallback = self.fallback
        served = fallback is not None and await fallback.serve(scope, "shed", send)
        if served:
            attributes["concurrency.fallback"] = True
        context.record(
            Decision(
                _LAYER,
                "reject",
                self.name,
                "shed",
                None if served else 503,
                limit=pool.limit,
                remaining=0,
                attributes=attributes,
            )
        )
        if served:
            return
        await self._refusals[label].response.send(scope, send)
