"""`RateLimitMiddleware`: quotas per client, route, plan and consumer, in one ASGI layer."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Literal

from apiguard._asgi import ResponseObserver, lifespan_with_cleanup
from apiguard._clock import clock
from apiguard._types import ASGIApp, KeyFunc, Receive, Scope, Send
from apiguard.compose import checked_at_startup
from apiguard.context import Decision, get_context
from apiguard.errors import ConfigError, StorageError
from apiguard.problems import Problem, ProblemResponse
from apiguard.ratelimit._policy import LimitSpec, Policy, PolicyBuilder, RoutePolicy
from apiguard.ratelimit.headers import (
    LEGACY_LIMIT,
    LEGACY_REMAINING,
    LEGACY_RESET,
    RATELIMIT,
    RATELIMIT_POLICY,
    RETRY_AFTER,
    check_name,
    delta_seconds,
    ratelimit_field,
)
from apiguard.ratelimit.keys import ANONYMOUS_PREFIX, _ByPrincipal, by_ip, principal_id_of
from apiguard.routing import RoutePolicies
from apiguard.storage import STRATEGIES, MemoryStorage, Strategy, Verdict, open_store

__all__ = ["RateLimitMiddleware"]

OnStoreError = Literal["fail-open", "fail-closed"]

_LAYER: Final = "ratelimit"
_UNAVAILABLE: Final = "store-unavailable"
_UNAVAILABLE_DETAIL: Final = "Request limits cannot be checked right now; retry later."


class _Route:
    """What a route gets: its own policy (or the general one), a cost, or an exemption."""

    __slots__ = ("cost", "exempt", "policy")

    def __init__(self, policy: Policy | None, cost: int, exempt: bool) -> None:
        self.policy = policy
        self.cost = cost
        self.exempt = exempt


class RateLimitMiddleware:
    """Limit requests per client, route, plan and consumer; 429 past the quota.

    Each request is keyed (by client address by default), its route's policy
    looked up, and its cost counted against every quota of the policy at
    once: it is admitted when all have room, and then counted by all, or by
    none. Admitted responses carry the draft-11 `RateLimit-Policy` and
    `RateLimit` fields; refused requests get 429, `Retry-After` and a
    `quota-exceeded` problem naming the violated policies.

    Args:
        app: The ASGI app to protect.
        name: The limiter's name: it prefixes the policy names in the
            headers (`"default-0"`), the store keys and the decisions, so
            that two limiters never collide.
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
        if not check_name(name) or "/" in name:
            msg = f"RateLimitMiddleware: name {name!r} is not 1-64 letters, digits and _.:+-"
            raise ConfigError(msg)
        self.name = name
        given: dict[str, object] = {"shadow": shadow, "legacy_headers": legacy_headers}
        for option, flag in given.items():
            if not isinstance(flag, bool):
                msg = f"{option}: {flag!r} is not True or False"
                raise ConfigError(msg)
        given_headers: object = headers
        if given_headers is not None and not isinstance(given_headers, bool):
            msg = f"headers: {headers!r} is not True, False or None"
            raise ConfigError(msg)
        if strategy not in STRATEGIES:
            msg = f"strategy: {strategy!r} is not one of {', '.join(map(repr, STRATEGIES))}"
            raise ConfigError(msg)
        if on_store_error not in ("fail-open", "fail-closed"):
            msg = f"on_store_error: {on_store_error!r} is not 'fail-open' or 'fail-closed'"
            raise ConfigError(msg)
        timeout: object = store_timeout
        if (
            not isinstance(timeout, int | float)
            or isinstance(timeout, bool)
            or not 0 < timeout < math.inf
        ):
            msg = f"store_timeout: {store_timeout!r} is not a positive number of seconds"
            raise ConfigError(msg)
        given_key: object = key
        if key is None:
            key = by_ip()
        elif not callable(given_key):
            msg = f"key: {key!r} is not a key function (by_ip(), by_principal(), ...)"
            raise ConfigError(msg)
        self.key: KeyFunc = key
        self.shadow = shadow
        self.headers = (not shadow) if headers is None else headers
        self.legacy_headers = legacy_headers
        self.strategy: Strategy = strategy
        self.on_store_error: OnStoreError = on_store_error

        builder = PolicyBuilder(name, self.headers)
        self.default = builder.build("limit", limit) if limit is not None else None
        self.routes = RoutePolicies("routes", self._routes(builder, routes, exempt, cost), _GENERAL)
        self.plans = {
            plan: builder.build(f"plans[{plan!r}]", spec)
            for plan, spec in _mapping("plans", plans).items()
        }
        self.overrides = {
            consumer: builder.build(f"overrides[{consumer!r}]", spec)
            for consumer, spec in _mapping("overrides", overrides).items()
        }
        if self.default is None and not self.plans:
            msg = "RateLimitMiddleware: give a limit ('100/minute'), or plans, or both"
            raise ConfigError(msg)
        self._check_costs()
        self._general = self._choose_general()

        self.store = open_store(storage, timeout=store_timeout)
        self._memory: Callable[..., Verdict] | None = None
        self._acquire: Callable[..., Any] | None = None
        self._remote = not isinstance(self.store, MemoryStorage)
        if isinstance(self.store, MemoryStorage):
            self._memory = getattr(self.store, strategy.replace("-", "_"))
        else:
            self._acquire = self.store.acquirer(strategy)
        self._unavailable = ProblemResponse(Problem(status=503, detail=_UNAVAILABLE_DETAIL))
        self._skip_exempt = Decision(_LAYER, "skip", name=name, reason="exempt")
        self._skip_nokey = Decision(_LAYER, "skip", name=name, reason="no-key")
        self._skip_nopolicy = Decision(_LAYER, "skip", name=name, reason="no-policy")
        self.app = checked_at_startup(app, lambda: self.routes.bind(app))

    # --- configuration ---------------------------------------------------------------

    def _routes(
        self,
        builder: PolicyBuilder,
        routes: Mapping[str, LimitSpec | RoutePolicy] | None,
        exempt: Iterable[str] | None,
        cost: Mapping[str, int] | None,
    ) -> dict[str, _Route]:
        table: dict[str, _Route] = {}
        for route, spec in _mapping("routes", routes).items():
            if isinstance(spec, RoutePolicy):
                policy = (
                    builder.build(f"routes[{route!r}]", spec.limit)
                    if spec.limit is not None
                    else None
                )
                table[route] = _Route(policy, _cost(route, spec.cost), _flag(route, spec.exempt))
            else:
                table[route] = _Route(builder.build(f"routes[{route!r}]", spec), 1, False)
        for route, units in _mapping("cost", cost).items():
            entry = table.get(route)
            if entry is not None and entry.cost != 1:
                msg = f"cost: route {route!r} has a cost in routes too"
                raise ConfigError(msg)
            policy = entry.policy if entry is not None else None
            table[route] = _Route(policy, _cost(route, units), False)
        if exempt is not None:
            if isinstance(exempt, str) or not isinstance(exempt, Iterable):
                msg = f"exempt: {exempt!r} is not a list of route keys"
                raise ConfigError(msg)
            for route in exempt:
                if route in table:
                    msg = f"exempt: route {route!r} also has a limit or a cost"
                    raise ConfigError(msg)
                table[route] = _Route(None, 1, True)
        return table

    def _check_costs(self) -> None:
        general = [p for p in (self.default, *self.plans.values(), *self.overrides.values()) if p]
        for (method, route), entry in self.routes.items():
            policies = [entry.policy] if entry.policy is not None else general
            for policy in policies:
                for name, quota in zip(policy.names, policy.quotas, strict=True):
                    if entry.cost > quota.amount:
                        where = f"{method} {route}" if method else route
                        msg = (
                            f"cost: route {where!r} costs {entry.cost}, more than the "
                            f"{quota.amount} of policy {name!r}: it could never be admitted"
                        )
                        raise ConfigError(msg)

    def _choose_general(self) -> Callable[[Scope, str], Policy | None]:
        """The general policy lookup, reduced to what the options need."""
        default = self.default
        plans = self.plans
        overrides = self.overrides
        if not plans and not overrides:
            return lambda scope, key: default
        # by_principal() keys principals as "p:<method>:<id>": their overrides
        # are named by id, apart from the anonymous callers' ("ip:<address>"),
        # so that a principal whose id reads like an address never gets an
        # address's override.
        by_id: dict[str, Policy] | None = None
        if isinstance(self.key, _ByPrincipal):
            by_id = {k: p for k, p in overrides.items() if not k.startswith(ANONYMOUS_PREFIX)}
            overrides = {k: p for k, p in overrides.items() if k.startswith(ANONYMOUS_PREFIX)}

        def general(scope: Scope, key: str) -> Policy | None:
            if by_id:
                principal_id = principal_id_of(key)
                if principal_id is not None:
                    policy = by_id.get(principal_id)
                    if policy is not None:
                        return policy
            if overrides:
                policy = overrides.get(key)
                if policy is not None:
                    return policy
            if plans:
                principal = get_context(scope).principal
                plan = principal.plan if principal is not None else None
                if plan is not None:
                    policy = plans.get(plan)
                    if policy is not None:
                        return policy
            return default

        return general

    async def aclose(self) -> None:
        """Close the store's connections (the memory store has none).

        Runs by itself when the app's lifespan shuts down. The next request
        reconnects, so calling this early does no harm.
        """
        if not isinstance(self.store, MemoryStorage):
            await self.store.aclose()

    # --- the request -----------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count an HTTP request and admit or refuse it; pass other scopes through."""
        if scope["type"] != "http":
            if scope["type"] == "lifespan" and self._remote:
                # Close the store's connections when the app shuts down.
                await lifespan_with_cleanup(self.app, scope, receive, send, self.aclose)
                return
            await self.app(scope, receive, send)
            return
        route = self.routes.lookup(scope)
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
        if self._memory is not None:
            verdict = self._memory(key, policy.quotas, route.cost, clock.time())
        else:
            try:
                verdict = await self._acquire(key, policy.quotas, route.cost)  # type: ignore[misc]
            except StorageError:
                await self._store_failed(scope, receive, send)
                return
        if verdict.admitted:
            await self._admit(scope, receive, send, policy, verdict, None)
        elif self.shadow:
            await self._admit(scope, receive, send, policy, verdict, "shadow")
        else:
            await self._reject(scope, send, policy, verdict)

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
        if not self.headers and not self.legacy_headers:
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

    async def _store_failed(self, scope: Scope, receive: Receive, send: Send) -> None:
        breaker = self.store.breaker  # type: ignore[union-attr]
        attributes = {"store.failures": breaker.failures, "store.breaker": breaker.state}
        context = get_context(scope)
        if self.on_store_error == "fail-open":
            context.record(
                Decision(_LAYER, "allow", self.name, _UNAVAILABLE, attributes=attributes)
            )
            await self.app(scope, receive, send)
            return
        context.record(
            Decision(_LAYER, "reject", self.name, _UNAVAILABLE, 503, attributes=attributes)
        )
        retry = max(delta_seconds(breaker.retry_after()), 1)
        await self._unavailable.send(scope, send, [(RETRY_AFTER, b"%d" % retry)])


_GENERAL: Final = _Route(None, 1, False)


def _mapping(option: str, value: object) -> Mapping[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        msg = f"{option}: {value!r} is not a mapping"
        raise ConfigError(msg)
    return value


def _cost(route: str, units: object) -> int:
    if not isinstance(units, int) or isinstance(units, bool) or units < 1:
        msg = f"cost: {units!r} for route {route!r} is not a whole number of units >= 1"
        raise ConfigError(msg)
    return units


def _flag(route: str, value: object) -> bool:
    if not isinstance(value, bool):
        msg = f"routes: exempt {value!r} for route {route!r} is not True or False"
        raise ConfigError(msg)
    return value
