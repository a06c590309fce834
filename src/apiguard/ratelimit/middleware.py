"""`RateLimitMiddleware`: quotas per client, route, plan and consumer, in one ASGI layer."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Iterable, Mapping
from math import ceil as _ceil
from typing import Final, Literal

from apiguard._asgi import AddHeaders, ResponseObserver, lifespan_hooks
from apiguard._clock import clock
from apiguard._types import ASGIApp, KeyFunc, Receive, Scope, Send
from apiguard.compose import checked_at_startup
from apiguard.context import CONTEXT_KEY, AttributeValue, Decision, RequestContext, get_context
from apiguard.errors import StorageError
from apiguard.layer import Answer, Description, JSONValue, Options
from apiguard.problems import Problem, ProblemResponse
from apiguard.ratelimit._config import (
    GENERAL,
    Route,
    check_costs,
    general_lookup,
    route_table,
)
from apiguard.ratelimit._policy import (
    QUOTA_EXCEEDED,
    LimitSpec,
    Policy,
    PolicyBuilder,
    RoutePolicy,
)
from apiguard.ratelimit.headers import (
    LEGACY_LIMIT,
    LEGACY_REMAINING,
    LEGACY_RESET,
    RATELIMIT,
    RATELIMIT_POLICY,
    RETRY_AFTER,
    delta_seconds,
    ratelimit_field,
)
from apiguard.ratelimit.keys import by_ip
from apiguard.routing import RoutePolicies
from apiguard.storage import STRATEGIES, MemoryStorage, Store, Strategy, Verdict, open_store

__all__ = ["RateLimitMiddleware"]

OnStoreError = Literal["fail-open", "fail-closed"]

_LAYER: Final = "ratelimit"
_UNAVAILABLE: Final = "store-unavailable"
#: The request's deadline ended the store call: the fail mode applies, for this reason.
_DEADLINE: Final = "deadline"
_UNAVAILABLE_DETAIL: Final = "Request limits cannot be checked right now; retry later."
_KINDS: Final = frozenset({"http", "websocket"})
#: `tuple.__new__(Decision, fields)`: a decision without the named tuple's
#: Python-level `__new__` (0.09 µs against 0.27 µs), on the hot path only.
_new = tuple.__new__
_QUOTA_DESCRIPTION: Final = "Too many requests: a quota of this route is used up."


def _quotas(policy: Policy) -> list[JSONValue]:
    """A policy's quotas as the report shows them: `"ip-0: 100 per 60 s"`."""
    return [
        f"{name}: {quota.amount} per {quota.window} s"
        for name, quota in zip(policy.names, policy.quotas, strict=True)
    ]


class _OutOfTime(StorageError):
    """The request's deadline, not the store, ended the store call."""


class RateLimitMiddleware:
    """Limit requests per client, route, plan and consumer; 429 past the quota.

    Each request is keyed (by client address by default), its route's policy
    looked up, and its cost counted against every quota of the policy at
    once: it is admitted when all have room, and then counted by all, or by
    none. Admitted responses carry the draft-11 `RateLimit-Policy` and
    `RateLimit` fields; refused requests get 429, `Retry-After` and a
    `quota-exceeded` problem naming the violated policies.

    WebSocket handshakes are counted like requests (route keys
    `"WEBSOCKET /ws"`); a refused handshake gets the 429 with `Retry-After`
    as an HTTP response where the server supports the ASGI
    `websocket.http.response` extension, and otherwise a close with code
    1013 (try again later) before it is accepted.

    Args:
        app: The ASGI app to protect.
        name: The limiter's name: it prefixes the policy names in the
            headers (`"default-0"`), the store keys and the decisions, so
            that two limiters never collide. Two limiters of one app must
            have distinct names (a start-up error otherwise). Two services
            sharing one store (one Redis for several apps) must name their
            limiters apart too: limiters of one name, on one store, share
            their counters, and each would count the other's requests.
        limit: The general limit: `"100/minute"`, several at once
            (`"10/second; 1000/hour"`, all must admit), or a mapping of
            policy names to limits (`{"burst": "10/second"}`) to name them
            in the headers. May be left out when `plans` is given.
        key: Who a request counts against: [`by_ip()`][apiguard.by_ip] (the
            default), [`by_principal()`][apiguard.by_principal],
            [`by_api_key()`][apiguard.by_api_key],
            [`by_header(name)`][apiguard.by_header], or any callable of the
            scope returning a string (or `None`: not limited).
        storage: Where counters live: `"memory://"` (this process only), or
            `"redis://host:6379/0"`, `"rediss://..."`, `"redis+cluster://..."`,
            `"redis+sentinel://host:26379/service"`, and the other `limits`
            storage URIs (`memcached://`, `mongodb://`), shared by every
            worker and host using them.
        strategy: `"fixed-window"` (the default: windows aligned on the
            clock, the quota comes back whole at the window's end),
            `"sliding-window-counter"` (smooths the burst a fixed window
            allows across its edge, O(1) memory) or `"moving-window"`
            (exact over any span of the window, memory per key grows with
            the limit).
        routes: Per-route limits, by route key (`"POST /orders"`): a limit
            as for `limit`, counted per route, or a
            [`RoutePolicy`][apiguard.ratelimit.RoutePolicy].
        exempt: Route keys that are not limited (health checks).
        cost: Per-route cost: units each request to the route takes.
        plans: Limits by the principal's plan (`{"free": "10/minute",
            "pro": "1000/minute"}`), read from the request context after the
            authentication layer; callers without a listed plan get `limit`.
        overrides: Limits for particular consumers, by the value the key
            function returns (an address, a header's value); with
            [`by_principal()`][apiguard.by_principal], by the principal's
            id, or `"ip:<address>"` for anonymous callers.
        shadow: Count and report, never refuse: to roll a limit out on
            production traffic and watch its decisions first.
        headers: Send `RateLimit` and `RateLimit-Policy`; by default on,
            and off in shadow mode.
        legacy_headers: Also send `X-RateLimit-Limit`, `-Remaining` and
            `-Reset` (epoch seconds), for the quota nearest its end, for
            clients that still read them.
        on_store_error: When the store fails or times out: `"fail-open"`
            (the default, an availability choice: requests are served
            unlimited until the store is back) or `"fail-closed"` (503 +
            `Retry-After`; never 500).
        store_timeout: Seconds a store call may take before it counts as a
            failure. After a few failures in a row the store is skipped for
            a short, growing interval, so that requests do not wait on it.

    Raises:
        ConfigError: an option is missing, of the wrong type or malformed;
            or a route's cost exceeds a quota it is counted against.

    Examples:
        >>> from starlette.applications import Starlette
        >>> from starlette.middleware import Middleware
        >>> from apiguard import guard, by_principal
        >>> app = guard(
        ...     Starlette(),
        ...     Middleware(RateLimitMiddleware, name="ip", limit="100/minute"),
        ...     Middleware(RateLimitMiddleware, name="plan", key=by_principal(),
        ...                plans={"free": "10/minute", "pro": "1000/minute"}),
        ... )
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        name: str = "default",
        limit: LimitSpec | None = None,
        key: KeyFunc | None = None,
        storage: str | MemoryStorage = "memory://",
        strategy: Strategy = "fixed-window",
        routes: Mapping[str, LimitSpec | RoutePolicy] | None = None,
        exempt: Iterable[str] | None = None,
        cost: Mapping[str, int] | None = None,
        plans: Mapping[str, LimitSpec] | None = None,
        overrides: Mapping[str, LimitSpec] | None = None,
        shadow: bool = False,
        headers: bool | None = None,
        legacy_headers: bool = False,
        on_store_error: OnStoreError = "fail-open",
        store_timeout: float = 0.25,
    ) -> None:
        self.name = Options("RateLimitMiddleware").layer_name(name)
        options = self.options = Options.of("RateLimitMiddleware", name)
        self.shadow = options.flag("shadow", shadow)
        self.legacy_headers = options.flag("legacy_headers", legacy_headers)
        if headers is not None:
            options.flag("headers", headers)
        self.headers = (not shadow) if headers is None else headers
        self.strategy: Strategy = options.choice("strategy", strategy, STRATEGIES)  # type: ignore[assignment]
        self.on_store_error: OnStoreError = options.choice(  # type: ignore[assignment]
            "on_store_error", on_store_error, ("fail-open", "fail-closed")
        )
        timeout = self._store_timeout = options.seconds("store_timeout", store_timeout, high=60.0)
        self.key: KeyFunc = (
            by_ip()
            if key is None
            else options.function("key", key, "a key function (by_ip(), by_principal(), ...)")
        )

        with options.checking():
            builder = PolicyBuilder(name, self.headers)
            self.default = builder.build("limit", limit) if limit is not None else None
            table = route_table(options, builder, routes, exempt, cost)
            self.routes: RoutePolicies[Route] = RoutePolicies("routes", table, GENERAL)
            self.plans = {
                plan: builder.build(f"plans[{plan!r}]", spec)
                for plan, spec in options.mapping("plans", plans).items()
            }
            self.overrides = {
                consumer: builder.build(f"overrides[{consumer!r}]", spec)
                for consumer, spec in options.mapping("overrides", overrides).items()
            }
            if self.default is None and not self.plans:
                raise options.invalid("limit", "give a limit ('100/minute'), or plans, or both")
            general = [self.default, *self.plans.values(), *self.overrides.values()]
            check_costs(options, self.routes, [p for p in general if p is not None])
            self.store: Store = open_store(storage, timeout=timeout)
        self._general = general_lookup(self.key, self.default, self.plans, self.overrides)
        #: The draft's headers and nothing else: the inlined admitted path.
        self._plain = self.headers and not self.legacy_headers
        self._acquire = self.store.limiter(self.strategy)
        self._unavailable = ProblemResponse(Problem(status=503, detail=_UNAVAILABLE_DETAIL))
        self._skip_exempt = Decision(_LAYER, "skip", name=name, reason="exempt")
        self._skip_nokey = Decision(_LAYER, "skip", name=name, reason="no-key")
        self._skip_nopolicy = Decision(_LAYER, "skip", name=name, reason="no-policy")

        def bind() -> None:
            with options.checking():
                self.routes.bind(app)
                self._check_names(app)

        self.app = checked_at_startup(app, bind)

    def _check_names(self, app: ASGIApp) -> None:
        """Refuse a limiter of the same name further in: both would count in one set of counters."""
        inner: object = app
        for _ in range(64):
            if isinstance(inner, RateLimitMiddleware) and inner.name == self.name:
                raise self.options.invalid(
                    "name",
                    f"another RateLimitMiddleware in this app is named {self.name!r}; "
                    "give each limiter a name of its own (name='ip', name='plan')",
                )
            inner = getattr(inner, "app", None)
            if inner is None:
                return

    def describe(self, method: str, key: str) -> Description:
        """The policies that count requests of `method` on route `key`, and the 429 they give."""
        route = self.routes.get(method, key)
        summary: dict[str, JSONValue] = {
            "key": repr(self.key),
            "strategy": self.strategy,
            "store": self.store.display,
            "on_store_error": self.on_store_error,
            "shadow": self.shadow,
        }
        if route.exempt:
            summary["exempt"] = True
            return Description(_LAYER, self.name, False, summary)
        if route.policy is not None:
            summary["policies"] = {"route": _quotas(route.policy)}
        else:
            general: dict[str, JSONValue] = {}
            if self.default is not None:
                general["default"] = _quotas(self.default)
            for plan, policy in self.plans.items():
                general[f"plan:{plan}"] = _quotas(policy)
            for consumer, policy in self.overrides.items():
                general[f"override:{consumer}"] = _quotas(policy)
            summary["policies"] = general
        if route.cost != 1:
            summary["cost"] = route.cost
        answers: list[Answer] = []
        headers = ("Retry-After", "RateLimit") if self.headers else ("Retry-After",)
        if not self.shadow:
            answers.append(
                Answer(429, "quota-exceeded", headers, QUOTA_EXCEEDED, _QUOTA_DESCRIPTION)
            )
        if self.on_store_error == "fail-closed":
            answers.append(
                Answer(503, _UNAVAILABLE, ("Retry-After",), description=_UNAVAILABLE_DETAIL)
            )
        added: tuple[str, ...] = ("RateLimit", "RateLimit-Policy") if self.headers else ()
        if self.legacy_headers:
            added += ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
        return Description(_LAYER, self.name, True, summary, tuple(answers), response_headers=added)

    async def aclose(self) -> None:
        """Close the store's connections (the memory store has none).

        Runs by itself when the app's lifespan shuts down. The next request
        reconnects, so calling this early does no harm.
        """
        await self.store.aclose()

    # --- the request -----------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count an HTTP request or WebSocket handshake; admit or refuse it."""
        if scope["type"] not in _KINDS:
            if scope["type"] == "lifespan":
                # Connect the store before the first request; close it at shutdown.
                await lifespan_hooks(
                    self.app, scope, receive, send, startup=self.store.open, shutdown=self.aclose
                )
                return
            await self.app(scope, receive, send)
            return
        routes = self.routes
        route = routes.default if routes.empty else routes.lookup(scope)
        if route.exempt:
            get_context(scope).record(self._skip_exempt)
            await self.app(scope, receive, send)
            return
        key = self.key(scope)
        if key is None:
            get_context(scope).record(self._skip_nokey)
            await self.app(scope, receive, send)
            return
        policy = route.policy or self._general(scope, key)
        if policy is None:
            get_context(scope).record(self._skip_nopolicy)
            await self.app(scope, receive, send)
            return
        try:
            verdict = self._acquire(key, policy.quotas, route.cost)
            if type(verdict) is not Verdict:
                context: RequestContext | None = scope.get(CONTEXT_KEY)
                if context is not None and context.deadline is not None:
                    verdict = await self._within_deadline(verdict, context)  # type: ignore[arg-type]
                else:
                    verdict = await verdict  # type: ignore[misc]
        except StorageError as exc:
            await self._store_failed(scope, receive, send, exc)
            return
        if verdict.admitted:
            if policy.single and self._plain:
                # The usual request, inlined: one quota, the draft's headers.
                used = verdict.used[0]
                reset = verdict.reset[0]
                remaining = policy.amount - used
                if remaining < 0:
                    remaining = 0
                context = scope.get(CONTEXT_KEY) or get_context(scope)
                context.decisions.append(
                    _new(
                        Decision,
                        (_LAYER, "allow", self.name, None, None, policy.name,
                         policy.amount, remaining, reset, None, None, None),
                    )
                )  # fmt: skip
                if scope["type"] != "http":
                    await self.app(scope, receive, send)
                    return
                value = b"%s%d;t=%d" % (policy.prefix, remaining, _ceil(reset) if reset > 0 else 0)
                headers = [(RATELIMIT_POLICY, policy.field), (RATELIMIT, value)]
                await self.app(scope, receive, AddHeaders.around(send, headers))
                return
            await self._admit(scope, receive, send, policy, verdict, None)
        elif self.shadow:
            await self._admit(scope, receive, send, policy, verdict, "shadow")
        else:
            await self._reject(scope, send, policy, verdict)

    async def _within_deadline(
        self, pending: Awaitable[Verdict], context: RequestContext
    ) -> Verdict:
        """The store's answer, waited for no longer than what is left of the request's time.

        Only called when the request has a deadline: without one the store's
        own timeout bounds the call, and the hot path pays nothing. The
        store's breaker does not count a call cut this way (the request ran
        out of time, the store did not fail); the layer follows its fail
        mode, with the reason `deadline`.
        """
        left = context.bound(self._store_timeout)
        if left >= self._store_timeout:
            return await pending
        if left <= 0.0:
            close = getattr(pending, "close", None)
            if close is not None:  # a coroutine never started: no store call at all
                close()
            raise _OutOfTime(f"{self.store.display}: the request's time is up")
        bound = asyncio.timeout(left)
        try:
            async with bound:
                return await pending
        except TimeoutError:
            if not bound.expired():  # pragma: no cover - stores raise StorageError
                raise
            raise _OutOfTime(f"{self.store.display}: the request's deadline") from None

    async def _admit(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        policy: Policy,
        verdict: Verdict,
        reason: str | None,
    ) -> None:
        quotas = policy.quotas
        used = verdict.used
        # The quota nearest its end speaks for the policy in the decision.
        index = 0
        if len(quotas) > 1:
            index = min(range(len(quotas)), key=lambda i: quotas[i].amount - used[i])
        quota = quotas[index]
        remaining = max(quota.amount - used[index], 0)
        attributes = None
        if reason is not None:
            attributes = {"shadow.violated": ",".join(policy.names[i] for i in verdict.violated)}
        get_context(scope).record(
            Decision(
                _LAYER,
                "allow",
                self.name,
                reason,
                None,
                policy.names[index],
                quota.amount,
                remaining,
                verdict.reset[index],
                attributes=attributes,
            )
        )
        if (not self.headers and not self.legacy_headers) or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra: list[tuple[bytes, bytes]] = []
        if self.headers:
            extra += (
                (RATELIMIT_POLICY, policy.field),
                (RATELIMIT, ratelimit_field(policy.prefixes, quotas, used, verdict.reset)),
            )
        if self.legacy_headers:
            extra += self._legacy(quota.amount, remaining, verdict.reset[index])
        await self.app(scope, receive, ResponseObserver(send, extra))

    async def _reject(self, scope: Scope, send: Send, policy: Policy, verdict: Verdict) -> None:
        violated = verdict.violated
        index = violated[0]
        quota = policy.quotas[index]
        retry = max(delta_seconds(verdict.retry_after), 1)
        get_context(scope).record(
            Decision(
                _LAYER,
                "reject",
                self.name,
                "quota-exceeded",
                429,
                policy.names[index],
                quota.amount,
                max(quota.amount - verdict.used[index], 0),
                verdict.retry_after,
            )
        )
        extra = [(RETRY_AFTER, b"%d" % retry)]
        if self.headers:
            extra.append(
                (
                    RATELIMIT,
                    ratelimit_field(policy.prefixes, policy.quotas, verdict.used, verdict.reset),
                )
            )
        if self.legacy_headers:
            extra += self._legacy(quota.amount, 0, verdict.retry_after)
        await policy.rejection(violated).send(scope, send, extra)

    def _legacy(self, amount: int, remaining: int, reset: float) -> list[tuple[bytes, bytes]]:
        return [
            (LEGACY_LIMIT, b"%d" % amount),
            (LEGACY_REMAINING, b"%d" % remaining),
            (LEGACY_RESET, b"%d" % math.ceil(clock.time() + reset)),
        ]

    async def _store_failed(
        self, scope: Scope, receive: Receive, send: Send, error: StorageError
    ) -> None:
        attributes: dict[str, AttributeValue] = {
            "store.failures": error.failures,
            "store.breaker": error.state,
        }
        reason = _DEADLINE if isinstance(error, _OutOfTime) else _UNAVAILABLE
        context = get_context(scope)
        if self.on_store_error == "fail-open":
            context.record(Decision(_LAYER, "allow", self.name, reason, attributes=attributes))
            await self.app(scope, receive, send)
            return
        context.record(Decision(_LAYER, "reject", self.name, reason, 503, attributes=attributes))
        retry = max(delta_seconds(error.retry_after), 1)
        await self._unavailable.send(scope, send, [(RETRY_AFTER, b"%d" % retry)])
