"""CircuitBreakerMiddleware in process: what opens it, what it answers open, how it closes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from apiguard import (
    CircuitBreakerMiddleware,
    ConfigError,
    ResponseFallback,
    StaleIfError,
    TimeoutMiddleware,
    TracingMiddleware,
    by_header,
    get_context,
    guard,
)
from apiguard.breaker import BreakerPolicy, Transition
from apiguard.compose import startup_error
from apiguard.context import Decision
from apiguard.report import build_report
from apiguard.testing import FrozenClock
from tests.tracing._helpers import Telemetry

pytestmark = pytest.mark.anyio


class Backend:
    """Endpoints answering what the test says: a status, an exception, a delay, a hang."""

    def __init__(self) -> None:
        self.status: dict[str, int] = {}
        self.raises: set[str] = set()
        self.takes: dict[str, float] = {}
        self.hangs: set[str] = set()
        self.calls: dict[str, int] = {}
        self.decisions: list[Decision] = []
        self.clock: FrozenClock | None = None

    async def answer(self, request: Request) -> Response:
        path = request.url.path
        self.calls[path] = self.calls.get(path, 0) + 1
        if path in self.hangs:
            await asyncio.sleep(3600)
        if path in self.takes and self.clock is not None:
            self.clock.advance(self.takes[path])
        if path in self.raises:
            raise RuntimeError("the dependency broke")
        return PlainTextResponse(path, self.status.get(path, 200))


class Last:
    """Keeps the decisions of each request (outermost), for the test to read."""

    def __init__(self, app: Any, *, into: list[list[Decision]]) -> None:
        self.app = app
        self.into = into

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.into.append(get_context(scope).decisions)
        await self.app(scope, receive, send)


def make(backend: Backend, *inner: Middleware, **options: Any) -> tuple[Starlette, list[Any]]:
    seen: list[list[Decision]] = []
    app = Starlette(
        routes=[
            Route("/a", backend.answer),
            Route("/b", backend.answer),
            Route("/items/{item_id}", backend.answer),
        ]
    )
    settings = {"minimum_calls": 4, "window_size": 10, **options}
    guard(
        app,
        Middleware(Last, into=seen),
        Middleware(CircuitBreakerMiddleware, **settings),
        *inner,
    )
    return app, seen


def client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://api.example.com")


def breaker_of(seen: list[list[Decision]]) -> Decision:
    [decision] = [d for d in seen[-1] if d.layer == "breaker"]
    return decision


@pytest.fixture
def frozen() -> Iterator[FrozenClock]:
    with FrozenClock() as clock:
        yield clock


async def test_a_failing_route_opens_its_own_breaker_only(frozen: FrozenClock) -> None:
    backend = Backend()
    backend.status["/a"] = 503
    app, seen = make(backend)
    async with client(app) as http:
        for _ in range(4):
            assert (await http.get("/a")).status_code == 503  # the app's own 503s
        refused = await http.get("/a")
        assert (await http.get("/b")).status_code == 200  # another route: another breaker
    assert backend.calls["/a"] == 4  # not called once open
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"] == "5"
    assert refused.json()["status"] == 503
    assert breaker_of(seen[:-1]) == Decision(
        "breaker", "reject", "breaker", "breaker-open", 503, "/a", reset_after=5.0, state="open"
    )
    assert breaker_of(seen) == Decision("breaker", "allow", "breaker", policy="/b", state="closed")


async def test_retry_after_is_the_time_until_the_next_probe(frozen: FrozenClock) -> None:
    backend = Backend()
    backend.status["/a"] = 500
    app, _ = make(backend, open_seconds=30)
    async with client(app) as http:
        for _ in range(4):
            await http.get("/a")
        frozen.advance(12.5)
        assert (await http.get("/a")).headers["retry-after"] == "18"  # 17.5, rounded up
        frozen.advance(17.4)
        assert (await http.get("/a")).headers["retry-after"] == "1"  # never 0


async def test_probes_that_succeed_close_it(frozen: FrozenClock) -> None:
    backend = Backend()
    backend.status["/a"] = 502
    app, seen = make(backend, half_open_calls=2)
    async with client(app) as http:
        for _ in range(4):
            await http.get("/a")
        backend.status["/a"] = 200
        frozen.advance(5)
        assert (await http.get("/a")).status_code == 200
        assert breaker_of(seen).state == "half-open"
        assert (await http.get("/a")).status_code == 200
        assert (await http.get("/a")).status_code == 200
        assert breaker_of(seen).state == "closed"


async def test_a_failed_probe_opens_it_for_longer_when_it_grows(frozen: FrozenClock) -> None:
    backend = Backend()
    backend.status["/a"] = 500
    app, _ = make(backend, open_seconds=2, open_growth=3.0, max_open_seconds=10, half_open_calls=1)
    async with client(app) as http:
        for _ in range(4):
            await http.get("/a")
        for expected in ("6", "10", "10"):
            frozen.advance(10)
            assert (await http.get("/a")).status_code == 500  # the probe, failing
            assert (await http.get("/a")).headers["retry-after"] == expected


async def test_half_open_lets_only_its_probes_through(frozen: FrozenClock) -> None:
    backend = Backend()
    backend.status["/a"] = 500
    app, _ = make(backend, half_open_calls=2)
    async with client(app) as http:
        for _ in range(4):
            await http.get("/a")
        frozen.advance(5)
        backend.hangs.add("/a")
        probes = [asyncio.ensure_future(http.get("/a")) for _ in range(2)]
        await asyncio.sleep(0.05)
        third = await http.get("/a")
        assert third.status_code == 503  # the two probes still run
        assert third.headers["retry-after"] == "1"  # they decide soon
        for probe in probes:
            probe.cancel()
        await asyncio.gather(*probes, return_exceptions=True)
        backend.hangs.clear()
        backend.status["/a"] = 200
        await asyncio.sleep(0.05)
        # The cancelled probes gave their places back at once.
        assert (await http.get("/a")).status_code == 200


async def test_4xx_never_count_and_exceptions_do(frozen: FrozenClock) -> None:
    backend = Backend()
    backend.status["/a"] = 404
    app, seen = make(backend)
    async with client(app) as http:
        for _ in range(10):
            assert (await http.get("/a")).status_code == 404
        assert breaker_of(seen).state == "closed"
        backend.raises.add("/b")
        for _ in range(4):
            assert (await http.get("/b")).status_code == 500  # Starlette's, the app raised
        assert (await http.get("/b")).status_code == 503
    assert backend.calls["/b"] == 4


async def test_listed_statuses_and_exceptions_only(frozen: FrozenClock) -> None:
    backend = Backend()
    backend.status["/a"] = 429
    backend.raises.add("/b")
    app, _ = make(backend, failure_statuses=[429, 503], failure_exceptions=[KeyError])
    async with client(app) as http:
        for _ in range(4):
            await http.get("/a")
            await http.get("/b")
        assert (await http.get("/a")).status_code == 503
        assert (await http.get("/b")).status_code == 500  # RuntimeError is not listed


async def test_an_inner_timeout_counts_as_a_failure_even_with_its_fallback() -> None:
    backend = Backend()
    backend.hangs.add("/a")
    served = ResponseFallback(JSONResponse({"cached": True}))
    app, _ = make(
        backend, Middleware(TimeoutMiddleware, timeout=0.05, fallback=served), minimum_calls=3
    )
    async with client(app) as http:
        for _ in range(3):
            assert (await http.get("/a")).json() == {"cached": True}
        assert (await http.get("/a")).status_code == 503
    assert backend.calls["/a"] == 3


async def test_timeouts_are_not_counted_when_told(frozen: FrozenClock) -> None:
    backend = Backend()
    backend.hangs.add("/a")
    served = ResponseFallback(JSONResponse({"cached": True}))
    app, seen = make(
        backend,
        Middleware(TimeoutMiddleware, timeout=0.05, fallback=served),
        minimum_calls=3,
        count_timeouts=False,
    )
    async with client(app) as http:
        for _ in range(4):
            assert (await http.get("/a")).json() == {"cached": True}
    assert breaker_of(seen).state == "closed"


async def test_slow_calls_open_it_at_their_rate(frozen: FrozenClock) -> None:
    backend = Backend()
    backend.clock = frozen
    backend.takes["/a"] = 3.0
    app, _ = make(backend, slow_call_seconds=2.0, slow_call_rate=0.5)
    async with client(app) as http:
        for _ in range(4):
            assert (await http.get("/a")).status_code == 200  # slow, but answered
        assert (await http.get("/a")).status_code == 503


async def test_a_fallback_answers_while_open(frozen: FrozenClock) -> None:
    backend = Backend()
    backend.status["/a"] = 500
    fallback = ResponseFallback(JSONResponse({"degraded": True}), name="fixed")
    app, seen = make(backend, fallback=fallback)
    async with client(app) as http:
        for _ in range(4):
            await http.get("/a")
        answered = await http.get("/a")
    assert (answered.status_code, answered.json()) == (200, {"degraded": True})
    fallback_decision, decision = seen[-1][-2:]
    assert (fallback_decision.layer, fallback_decision.reason) == ("fallback", "breaker")
    assert decision.outcome == "reject"
    assert decision.status is None
    assert decision.attributes == {"breaker.fallback": True}


async def test_a_stale_copy_answers_while_open_marked_as_a_hit(frozen: FrozenClock) -> None:
    backend = Backend()
    app, _ = make(backend, fallback=StaleIfError(ttl=600))
    async with client(app) as http:
        assert (await http.get("/items/1")).text == "/items/1"  # kept
        backend.status["/items/1"] = 500
        for _ in range(4):
            await http.get("/items/1")
        answered = await http.get("/items/1")
    assert (answered.status_code, answered.text) == (200, "/items/1")
    assert answered.headers["cache-status"].startswith("apiguard; hit;")
    assert "detail=breaker" in answered.headers["cache-status"]


async def test_one_breaker_for_the_app(frozen: FrozenClock) -> None:
    backend = Backend()
    backend.status["/a"] = 500
    app, _ = make(backend, per="app")
    async with client(app) as http:
        for _ in range(4):
            await http.get("/a")
        assert (await http.get("/b")).status_code == 503


async def test_a_breaker_per_key_and_none_without_one(frozen: FrozenClock) -> None:
    backend = Backend()
    backend.status["/a"] = 500
    app, seen = make(backend, per=by_header("x-tenant"))
    async with client(app) as http:
        for _ in range(4):
            await http.get("/a", headers={"x-tenant": "acme"})
        assert (await http.get("/a", headers={"x-tenant": "acme"})).status_code == 503
        assert (await http.get("/a", headers={"x-tenant": "globex"})).status_code == 500
        assert breaker_of(seen).policy == "globex"
        assert (await http.get("/a")).status_code == 500  # no key: not guarded
        assert breaker_of(seen) == Decision("breaker", "skip", "breaker", "no-key")


async def test_breakers_per_key_are_bounded(frozen: FrozenClock) -> None:
    backend = Backend()
    backend.status["/a"] = 500
    layer_seen: list[CircuitBreakerMiddleware] = []
    app, _ = make(backend, per=by_header("x-tenant"), max_breakers=3, minimum_calls=1)
    async with client(app) as http:
        for tenant in range(2):
            await http.get("/a", headers={"x-tenant": f"t{tenant}"})  # open
        for tenant in range(2, 50):
            backend.status["/a"] = 200
            await http.get("/a", headers={"x-tenant": f"t{tenant}"})
        stack = app.middleware_stack
        while not isinstance(stack, CircuitBreakerMiddleware):
            stack = stack.app  # type: ignore[union-attr]
        layer_seen.append(stack)
    [layer] = layer_seen
    keys = [b.key for b in layer.breakers()]
    assert len(keys) == 3
    assert {"t0", "t1"} <= set(keys)  # open ones are kept


async def test_routes_choose_their_policy_or_none(frozen: FrozenClock) -> None:
    backend = Backend()
    backend.status["/a"] = backend.status["/b"] = 500
    app, seen = make(
        backend,
        routes={"GET /a": None, "/b": BreakerPolicy(window=None, consecutive_failures=2)},
    )
    async with client(app) as http:
        for _ in range(5):
            assert (await http.get("/a")).status_code == 500
        assert breaker_of(seen) == Decision("breaker", "skip", "breaker", "no-breaker")
        await http.get("/b")
        await http.get("/b")
        assert (await http.get("/b")).status_code == 503


async def test_every_transition_is_heard_logged_and_counted_once(
    frozen: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "apiguard.breaker")
    telemetry = Telemetry()
    heard: list[Transition] = []
    backend = Backend()
    backend.status["/a"] = 500
    app = Starlette(routes=[Route("/a", backend.answer)])
    guard(
        app,
        Middleware(TracingMiddleware, **telemetry.providers),
        Middleware(
            CircuitBreakerMiddleware,
            name="upstream",
            minimum_calls=2,
            half_open_calls=1,
            on_transition=heard.append,
        ),
    )
    async with client(app) as http:
        for _ in range(6):
            await http.get("/a")
        frozen.advance(5)
        backend.status["/a"] = 200
        for _ in range(6):
            await http.get("/a")
    assert [(t.previous, t.state, t.key) for t in heard] == [
        ("closed", "open", "/a"),
        ("open", "half-open", "/a"),
        ("half-open", "closed", "/a"),
    ]
    assert len(caplog.records) == 3
    assert "circuit breaker upstream [/a]: closed -> open (failure-rate: 100% of 2 calls" in (
        caplog.records[0].getMessage()
    )
    counted = {
        (p.attributes["apiguard.state.previous"], p.attributes["apiguard.state"]): p.value
        for p in telemetry.points("apiguard.state.transitions")
        if p.attributes["apiguard.layer"] == "breaker"
    }
    assert counted == {("closed", "open"): 1, ("open", "half-open"): 1, ("half-open", "closed"): 1}
    telemetry.shutdown()


async def test_it_describes_its_policy_and_its_answers() -> None:
    backend = Backend()
    app, _ = make(backend, routes={"GET /b": None}, fallback=StaleIfError())
    report = build_report(app)
    by_route = {r.name: r for r in report.routes}
    [described] = [d for d in by_route["GET /a"].descriptions if d.layer == "breaker"]
    assert described.applies
    assert described.summary == {
        "per": "route",
        "window": "10s",
        "minimum_calls": 4,
        "failure_rate": 0.5,
        "slow_call_rate": 1.0,
        "slow_call_seconds": 60.0,
        "open_seconds": 5.0,
        "half_open_calls": 3,
        "failure_statuses": "500-599",
        "count_timeouts": True,
        "fallback": "stale",
    }
    assert next((a.status, a.reason, a.headers) for a in described.answers) == (
        503,
        "breaker-open",
        ("Retry-After",),
    )
    [off] = [d for d in by_route["GET /b"].descriptions if d.layer == "breaker"]
    assert not off.applies


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"per": "host"}, "per 'host' is not one of 'route', 'app'"),
        ({"per": 42}, "per 42 is not 'route', 'app' or a key function"),
        ({"failure_rate": 0}, "failure_rate 0 is not a share in"),
        ({"failure_statuses": [200]}, "failure_statuses 200 is not a whole number from 400 to 599"),
        ({"failure_exceptions": [int]}, "failure_exceptions <class 'int'> is not an Exception"),
        ({"routes": {"/a": 0.5}}, "routes['/a'] 0.5 is not a BreakerPolicy or None"),
        ({"routes": {"/nope": None}}, "route '/nope' is not a route of the app"),
        ({"on_transition": [1]}, "on_transition 1 is not a function"),
        ({"window": "count", "window_size": 3}, "minimum_calls 4 is more than a count window"),
    ],
)
def test_a_bad_option_is_refused_at_start_up(options: dict[str, Any], message: str) -> None:
    def build() -> None:
        app, _ = make(Backend(), **options)
        found = startup_error(app.build_middleware_stack())
        if found is not None:
            raise found

    prefix = r"^CircuitBreakerMiddleware\[name='breaker'\]: "
    with pytest.raises(ConfigError, match=prefix) as error:
        build()
    assert message in str(error.value)


async def test_websockets_and_lifespan_pass_through() -> None:
    app, _ = make(Backend())
    report = build_report(app)
    assert report.error is None
    messages = []

    async def receive() -> dict[str, str]:
        return {"type": "lifespan.startup"} if not messages else {"type": "lifespan.shutdown"}

    async def send(message: dict[str, str]) -> None:
        messages.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)  # type: ignore[arg-type]
    assert [m["type"] for m in messages] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
