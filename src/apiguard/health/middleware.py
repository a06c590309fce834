"""`HealthMiddleware`: liveness and readiness endpoints, answered before the layers inside it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Final, Literal

from starlette.routing import Match, Route, Router

from apiguard._clock import clock
from apiguard._types import ASGIApp, Message, Receive, Scope, Send
from apiguard.compose import checked_at_startup
from apiguard.context import Decision, get_context
from apiguard.health._checks import (
    Check,
    Entry,
    HealthCheck,
    OpenBreakers,
    breakers_check,
    run_check,
    shedding_check,
    stores_check,
    stores_inside,
    worst,
)
from apiguard.layer import Answer, Description, JSONValue, Options, Security, checked
from apiguard.routing import find_router, normalize_template

__all__ = ["HEALTH_JSON", "HealthMiddleware"]

_LAYER: Final = "health"
#: draft-inadarei-api-health-check §3: the media type of a health response.
HEALTH_JSON: Final = "application/health+json"
_READS: Final = frozenset({"GET", "HEAD"})
_HEADERS: Final = (
    (b"content-type", HEALTH_JSON.encode()),
    # A probe must see the state now, never a cached answer (RFC 9111 §5.2.2.5).
    (b"cache-control", b"no-store"),
)
_FAIL_DETAIL: Final = "Not ready: a check failed (the body lists them)."

Kind = Literal["live", "ready"]
Mode = Literal["off", "warn", "fail"]


class _Endpoint:
    """The route's endpoint, for a request the layer did not answer (a path variant redirected)."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self.layer: HealthMiddleware | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        layer = self.layer
        if layer is None:  # pragma: no cover - bound before any request
            raise RuntimeError("apiguard: a health route without its layer")
        await layer.answer(self.kind, scope, send)


class _HealthRoute(Route):
    """The route the layer adds to the app's router: for the report, `http.route` and 405s."""


class HealthMiddleware:
    """Liveness and readiness endpoints, answered before every layer inside it.

    Put it right after [`TracingMiddleware`][apiguard.TracingMiddleware] (or
    outermost): probes are then answered without authentication, rate
    limits or shedding, which a load balancer's probe must never meet.
    `GET` (and `HEAD`) on `live_path` and `ready_path` are answered
    `application/health+json` (draft-inadarei-api-health-check): `200` with
    `{"status": "pass"}` (or `"warn"`), `503` with `"fail"`; other methods
    get the app's `405`. The two routes are added to the app's router when
    the stack is built (so that the policy report lists them, as public
    routes the layer answers itself, and other layers' options can name
    them); a route of the app on one of the paths is refused at start-up.

    **Liveness** answers `pass` whenever the event loop can answer: it
    never looks at a dependency (a dependency down is no reason to restart
    the process). **Readiness** looks at local state by default: whether
    the app has started (between lifespan start-up and its completion, and
    from shutdown on, it fails, so that a load balancer drains the process)
    and whether a [`ConcurrencyLimitMiddleware`][apiguard.ConcurrencyLimitMiddleware]
    inside has shed every request for a second or more. Dependency checks
    are opt-in, and shown in the body: `stores` pings the store of every
    layer inside (rate limiters, stale copies), through the store's breaker
    and timeout; `breakers` looks at every apiguard breaker of the process;
    `checks` are your own. With `"warn"`, a failing dependency shows in the
    body and readiness stays `200`; with `"fail"`, readiness fails. Beware
    of `"fail"` on a shared dependency: when Redis blinks, every replica
    fails its readiness at once and the load balancer has nowhere to send
    traffic, where fail-open layers would have kept serving.

    Readiness results are kept for `cache_seconds` and one run is shared by
    concurrent probes, so a flood of probes costs the dependencies one
    check per interval.

    Args:
        app: The ASGI app.
        name: The layer's name, in decisions and the policy report.
        live_path: The liveness path.
        ready_path: The readiness path.
        checks: Your own readiness checks by name: `async def () -> bool |
            str | None` (see [`HealthCheck`][apiguard.health.HealthCheck]).
        check_timeout: Seconds each check may take (a store ping takes at
            most its store's timeout too).
        stores: `"off"`, `"warn"` or `"fail"`: ping the stores of the
            layers inside.
        breakers: `"off"`, `"warn"` or `"fail"`: an open (or half-open)
            breaker anywhere in the process (the circuit breaker layer's,
            a store's, a JWKS fetcher's).
        cache_seconds: Seconds a readiness result is served again (0: each
            probe runs the checks).
        service_id: The body's `serviceId`, if given.
        version: The body's `version`, if given.
        release_id: The body's `releaseId`, if given.

    Raises:
        ConfigError: an option is out of range, or a path is a route of the app.

    Examples:
        >>> from starlette.applications import Starlette
        >>> from starlette.middleware import Middleware
        >>> from apiguard import guard
        >>> async def database() -> bool:
        ...     return True
        >>> app = guard(
        ...     Starlette(),
        ...     Middleware(HealthMiddleware, checks={"database": database}, stores="warn"),
        ... )
    """

    @checked("HealthMiddleware", name=_LAYER)
    def __init__(
        self,
        app: ASGIApp,
        *,
        name: str = _LAYER,
        live_path: str = "/health/live",
        ready_path: str = "/health/ready",
        checks: Mapping[str, HealthCheck] | None = None,
        check_timeout: float = 1.0,
        stores: Mode = "off",
        breakers: Mode = "off",
        cache_seconds: float = 1.0,
        service_id: str | None = None,
        version: str | None = None,
        release_id: str | None = None,
    ) -> None:
        self.name = Options().layer_name(name)
        options = self.options = Options.of("HealthMiddleware", name)
        self.live_path = _path(options, "live_path", live_path)
        self.ready_path = _path(options, "ready_path", ready_path)
        if self.live_path == self.ready_path:
            raise options.invalid("ready_path", "is the same path as live_path")
        self.checks: dict[str, HealthCheck] = {}
        for check_name, check in options.mapping("checks", checks).items():
            if not isinstance(check_name, str) or not check_name or ":" in check_name:
                options.fail("checks", check_name, "is not a check name (no ':')")
            self.checks[check_name] = options.function(
                f"checks[{check_name!r}]", check, "an async function () -> bool"
            )
        self.check_timeout = options.seconds("check_timeout", check_timeout, high=60.0)
        self.stores: Mode = options.choice("stores", stores, ("off", "warn", "fail"))  # type: ignore[assignment]
        self.breakers: Mode = options.choice("breakers", breakers, ("off", "warn", "fail"))  # type: ignore[assignment]
        self.cache_seconds = options.seconds("cache_seconds", cache_seconds, high=60.0, zero=True)
        head: dict[str, str] = {}
        for field, value in (
            ("serviceId", service_id),
            ("version", version),
            ("releaseId", release_id),
        ):
            if value is not None:
                if not isinstance(value, str) or not value:
                    options.fail(_SNAKE[field], value, "is not a non-empty string")
                head[field] = value
        self._head = head
        self._live_body = json.dumps({"status": "pass", **head}).encode()
        self._open_breakers = OpenBreakers()
        if self.breakers != "off":
            self._open_breakers.start()
        #: The lifespan as seen: "unknown" (no lifespan ran: a test client),
        #: "starting", "started", "stopping".
        self.phase = "unknown"
        self._checks: list[Check] = []
        self._names: list[str] = []
        self._cached: tuple[float, int, bytes] | None = None
        self._running: asyncio.Task[tuple[int, bytes]] | None = None
        self._decisions = {
            (kind, status): Decision(_LAYER, "allow", self.name, kind, status)
            for kind in ("live", "ready")
            for status in (200, 503)
        }

        def bind() -> None:
            with options.checking():
                self._bind(app)

        self.app = checked_at_startup(app, bind)

    # --- start-up --------------------------------------------------------------------

    def _bind(self, app: ASGIApp) -> None:
        """Find what readiness looks at, and add the two routes to the app's router."""
        self._checks = [self._started]
        self._names = ["app:started"]
        shedders = {}
        node: object = app
        for _ in range(128):
            if callable(getattr(node, "shedding_everything", None)):
                shedders[getattr(node, "name", "concurrency")] = node
            node = getattr(node, "app", None)
            if node is None:
                break
        if shedders:
            self._checks.append(shedding_check(shedders))
            self._names.append("concurrency:shedding")
        if self.stores != "off":
            found = stores_inside(app)
            self._checks.append(stores_check(found, self.stores, self.check_timeout))
            self._names.append(f"store:responseTime ({len(found)})")
        if self.breakers != "off":
            self._checks.append(breakers_check(self._open_breakers, self.breakers))
            self._names.append("breakers:open")
        for check_name, check in self.checks.items():
            self._checks.append(_user_check(check_name, check, self.check_timeout))
            self._names.append(f"{check_name}:responseTime")
        router = find_router(app)
        if router is not None:
            self._add_routes(router)

    def _add_routes(self, router: Router) -> None:
        """Add the two routes to the router, or take them over (a stack built again)."""
        for kind, path in (("live", self.live_path), ("ready", self.ready_path)):
            existing = next(
                (r for r in router.routes if isinstance(r, _HealthRoute) and r.path == path), None
            )
            if existing is not None:
                endpoint: _Endpoint = existing.endpoint  # type: ignore[assignment]
            else:
                for route in router.routes:
                    if isinstance(route, Route) and route.matches(_probe(path))[0] == Match.FULL:
                        raise self.options.invalid(
                            f"{kind}_path",
                            f"{path!r} is a route of the app already; choose another path",
                        )
                endpoint = _Endpoint(kind)  # type: ignore[arg-type]
                # Last: the app's own requests never try them (a regex each
                # in Starlette's router); the layer answers them before it.
                router.routes.append(
                    _HealthRoute(
                        path,
                        endpoint,
                        methods=["GET"],
                        name=f"apiguard:{self.name}:{kind}",
                        include_in_schema=False,
                    )
                )
            endpoint.layer = self

    def describe(self, method: str, key: str) -> Description:
        """The health endpoints: public, answered here; any other route: not this layer's."""
        kind = "live" if key == self.live_path else "ready" if key == self.ready_path else None
        if kind is None or method not in _READS:
            return Description(_LAYER, self.name, False, {})
        summary: dict[str, JSONValue] = {"endpoint": "liveness" if kind == "live" else "readiness"}
        answers: tuple[Answer, ...] = ()
        if kind == "ready":
            summary["checks"] = list(self._names)
            answers = (Answer(503, "fail", description=_FAIL_DETAIL),)
        return Description(
            _LAYER, self.name, True, summary, answers, security=Security("public"), handles=True
        )

    # --- the request -----------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer the two endpoints; pass everything else through."""
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            root = scope.get("root_path")
            if root and path.startswith(root):
                path = path[len(root) :]
            # RFC 9110 §9.1: methods are case-sensitive; `get` gets the router's 405.
            if (path == self.live_path or path == self.ready_path) and scope["method"] in _READS:
                await self.answer("live" if path == self.live_path else "ready", scope, send)
                return
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def answer(self, kind: Kind, scope: Scope, send: Send) -> None:
        """Send the liveness or readiness response."""
        if kind == "live":
            status, body = 200, self._live_body
        else:
            status, body = await self._readiness()
        get_context(scope).record(self._decisions[kind, status])
        head = scope["method"] == "HEAD"
        headers = [*_HEADERS, (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else body})

    async def _readiness(self) -> tuple[int, bytes]:
        """The readiness answer: kept for `cache_seconds`, one run for concurrent probes."""
        cached = self._cached
        now = clock.monotonic()
        if cached is not None and now - cached[0] < self.cache_seconds:
            return cached[1], cached[2]
        running = self._running
        if running is None or running.done():
            running = self._running = asyncio.get_running_loop().create_task(self._run())
        status, body = await asyncio.shield(running)
        return status, body

    async def _run(self) -> tuple[int, bytes]:
        now = clock.monotonic()
        found: dict[str, list[Entry]] = {}
        for part in await asyncio.gather(*(check(now) for check in self._checks)):
            found.update(part)
        overall = worst(entry["status"] for entries in found.values() for entry in entries)
        document = {"status": overall, **self._head, "checks": found}
        body = json.dumps(document, separators=(",", ":")).encode()
        status = 503 if overall == "fail" else 200
        self._cached = (clock.monotonic(), status, body)
        return status, body

    async def _started(self, now: float) -> dict[str, list[Entry]]:
        phase = self.phase
        status = "fail" if phase in ("starting", "stopping") else "pass"
        entry: Entry = {"componentType": "system", "status": status}
        if phase != "unknown":
            entry["observedValue"] = phase
        return {"app:started": [entry]}

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Follow the lifespan: not ready while starting, nor from shutdown on."""

        async def receiving() -> Message:
            message = await receive()
            kind = message["type"]
            if kind == "lifespan.startup":
                self.phase = "starting"
            elif kind == "lifespan.shutdown":
                self.phase = "stopping"
                self._cached = None
            return message

        async def sending(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                self.phase = "started"
                self._cached = None
            await send(message)

        await self.app(scope, receiving, sending)


_SNAKE: Final = {"serviceId": "service_id", "version": "version", "releaseId": "release_id"}


def _path(options: Options, option: str, value: object) -> str:
    if not isinstance(value, str) or not value.startswith("/") or "{" in value or " " in value:
        options.fail(option, value, "is not a path like '/health/live' (no parameters)")
    return normalize_template(value)


def _probe(path: str) -> Scope:
    return {"type": "http", "path": path, "method": "GET", "root_path": "", "headers": []}


def _user_check(name: str, check: HealthCheck, timeout: float) -> Check:
    async def run(_: float) -> dict[str, list[Entry]]:
        return await run_check(name, check, timeout)

    return run
