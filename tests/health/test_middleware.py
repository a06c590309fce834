"""HealthMiddleware: liveness, readiness and its opt-in checks, in front of every other layer."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from apiguard import (
    APIKeyAuth,
    AuthMiddleware,
    CircuitBreakerMiddleware,
    ConcurrencyLimitMiddleware,
    ConfigError,
    HealthMiddleware,
    Principal,
    RateLimitMiddleware,
    TracingMiddleware,
    guard,
)
from apiguard.compose import startup_error
from apiguard.errors import redact
from apiguard.report import build_report, render_table
from apiguard.testing import FrozenClock
from tests._servers import RedisServer
from tests.tracing._helpers import Telemetry

pytestmark = pytest.mark.anyio

KEYS = {"k-reader-0001": Principal(id="ada")}


class Work:
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.release.set()
        self.status = 200

    async def endpoint(self, request: Request) -> Response:
        await self.release.wait()
        return PlainTextResponse("ok", self.status)


def make(*layers: Middleware, work: Work | None = None, lifespan: Any = None) -> Starlette:
    work = work or Work()
    app = Starlette(
        routes=[Route("/orders", work.endpoint), Route("/a", work.endpoint)], lifespan=lifespan
    )
    return guard(app, *layers)


def client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://api.example.com", timeout=30)


# --- liveness ----------------------------------------------------------------------------


async def test_liveness_is_a_pass_in_health_json_never_cached() -> None:
    app = make(Middleware(HealthMiddleware, version="1.4.2", service_id="orders"))
    async with client(app) as http:
        answer = await http.get("/health/live")
        head = await http.head("/health/live")
        posted = await http.post("/health/live")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/health+json"
    assert answer.headers["cache-control"] == "no-store"
    assert answer.json() == {"status": "pass", "serviceId": "orders", "version": "1.4.2"}
    assert (head.status_code, head.content) == (200, b"")
    assert posted.status_code == 405  # the route the layer added to the router


async def test_probes_meet_no_authentication_rate_limit_or_shedding() -> None:
    work = Work()
    work.release.clear()
    app = make(
        Middleware(HealthMiddleware),
        Middleware(ConcurrencyLimitMiddleware, max_in_flight=1),
        Middleware(RateLimitMiddleware, limit="2/minute"),
        Middleware(AuthMiddleware, authenticators=[APIKeyAuth(keys=KEYS)]),
        work=work,
    )
    key = {"x-api-key": "k-reader-0001"}
    async with client(app) as http:
        assert (await http.get("/orders")).status_code == 401
        busy = asyncio.ensure_future(http.get("/orders", headers=key))
        await asyncio.sleep(0.05)
        assert (await http.get("/orders")).status_code == 503  # the shedder is full
        for _ in range(20):
            assert (await http.get("/health/live")).status_code == 200
            assert (await http.get("/health/ready")).status_code == 200
        work.release.set()
        assert (await busy).status_code == 200
        assert (await http.get("/orders", headers=key)).status_code == 429  # the third


# --- readiness: local state ------------------------------------------------------------------


async def test_readiness_fails_while_starting_and_from_shutdown_on() -> None:
    started = asyncio.Event()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await started.wait()
        yield

    app = make(Middleware(HealthMiddleware, cache_seconds=0), lifespan=lifespan)
    async with client(app) as http:
        assert (await http.get("/health/ready")).json()["status"] == "pass"  # no lifespan yet
        inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        outbox: list[dict[str, str]] = []

        async def send(message: dict[str, str]) -> None:
            outbox.append(message)

        await inbox.put({"type": "lifespan.startup"})
        running = asyncio.ensure_future(
            app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, send)  # type: ignore[arg-type]
        )
        await asyncio.sleep(0.05)
        starting = await http.get("/health/ready")
        assert starting.status_code == 503
        assert starting.json()["checks"]["app:started"] == [
            {"componentType": "system", "status": "fail", "observedValue": "starting"}
        ]
        started.set()
        await asyncio.sleep(0.05)
        assert (await http.get("/health/ready")).status_code == 200
        assert (await http.get("/health/live")).status_code == 200
        await inbox.put({"type": "lifespan.shutdown"})
        await running
        stopping = await http.get("/health/ready")
        assert stopping.status_code == 503  # drained by the load balancer
        assert (await http.get("/health/live")).status_code == 200  # alive all the same
    assert [m["type"] for m in outbox] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


async def test_readiness_fails_while_a_shedder_inside_sheds_everything() -> None:
    work = Work()
    work.release.clear()
    app = make(
        Middleware(HealthMiddleware, cache_seconds=0),
        Middleware(ConcurrencyLimitMiddleware, max_in_flight=1),
        work=work,
    )
    with FrozenClock() as frozen:
        async with client(app) as http:
            stuck = asyncio.ensure_future(http.get("/orders"))
            await asyncio.sleep(0.05)
            frozen.advance(1.5)
            assert (await http.get("/health/ready")).status_code == 200  # one was admitted
            for _ in range(3):
                assert (await http.get("/orders")).status_code == 503
            frozen.advance(1.5)
            refused = await http.get("/health/ready")
            work.release.set()
            await stuck
    assert refused.status_code == 503
    assert refused.json()["checks"]["concurrency:shedding"] == [
        {
            "componentId": "concurrency",
            "componentType": "component",
            "observedValue": 1,
            "observedUnit": "of 1 in flight",
            "status": "fail",
        }
    ]


async def test_a_health_route_inside_a_saturated_shedder_is_never_shed() -> None:
    """Routes a layer inside answers itself are critical to the shedder."""
    work = Work()
    work.release.clear()
    app = make(
        Middleware(ConcurrencyLimitMiddleware, max_in_flight=2),
        Middleware(HealthMiddleware),
        work=work,
    )
    async with client(app) as http:
        held = [asyncio.ensure_future(http.get("/orders")) for _ in range(50)]
        await asyncio.sleep(0.1)
        assert sum(t.done() for t in held) == 48
        for _ in range(20):
            assert (await http.get("/health/live")).status_code == 200
            assert (await http.get("/health/ready")).status_code == 200
        work.release.set()
        await asyncio.gather(*held)


# --- readiness: dependencies, opt-in ---------------------------------------------------------


@pytest.mark.usefixtures("close_stores")
async def test_readiness_with_and_without_store_checks_while_redis_is_stopped(
    own_redis: RedisServer,
) -> None:
    """A stopped Redis leaves readiness alone by default (limits fail open); opted in, shown."""
    store = redact(own_redis.url)[1:-1]

    def app(stores: str) -> Starlette:
        return make(
            Middleware(HealthMiddleware, stores=stores, cache_seconds=0),
            Middleware(RateLimitMiddleware, limit="100/minute", storage=own_redis.url),
        )

    plain, warned, failed = app("off"), app("warn"), app("fail")
    for each in (plain, warned, failed):
        async with client(each) as http:
            ready = await http.get("/health/ready")
            assert ready.status_code == 200
            assert ready.json()["status"] == "pass"
    own_redis.kill()
    answers = {}
    began = time.monotonic()
    for label, each in (("off", plain), ("warn", warned), ("fail", failed)):
        async with client(each) as http:
            answers[label] = await http.get("/health/ready")
            assert (await http.get("/orders")).status_code == 200  # failing open meanwhile
    assert time.monotonic() - began < 10  # each ping bounded by the store's timeout
    assert (answers["off"].status_code, answers["off"].json()["status"]) == (200, "pass")
    assert "store:responseTime" not in answers["off"].json()["checks"]
    assert (answers["warn"].status_code, answers["warn"].json()["status"]) == (200, "warn")
    assert (answers["fail"].status_code, answers["fail"].json()["status"]) == (503, "fail")
    [entry] = answers["fail"].json()["checks"]["store:responseTime"]
    assert entry["componentId"] == store
    assert entry["componentType"] == "datastore"
    assert entry["status"] == "fail"
    assert entry["output"] in ("StorageError", "breaker open")
    assert entry["observedUnit"] == "ms"
    own_redis.start()


async def test_your_own_checks_each_within_the_timeout() -> None:
    async def database() -> bool:
        return True

    async def cache() -> str:
        return "warn"

    async def search() -> None:
        raise ConnectionError("search.internal:9200 refused")

    async def queue() -> None:
        await asyncio.sleep(10)

    app = make(
        Middleware(
            HealthMiddleware,
            checks={"database": database, "cache": cache, "search": search, "queue": queue},
            check_timeout=0.05,
        )
    )
    async with client(app) as http:
        ready = await http.get("/health/ready")
    body = ready.json()
    assert (ready.status_code, body["status"]) == (503, "fail")
    statuses = {key: [e["status"] for e in entries] for key, entries in body["checks"].items()}
    assert statuses == {
        "app:started": ["pass"],
        "database:responseTime": ["pass"],
        "cache:responseTime": ["warn"],
        "search:responseTime": ["fail"],
        "queue:responseTime": ["fail"],
    }
    assert body["checks"]["search:responseTime"][0]["output"] == "ConnectionError"  # no message
    assert body["checks"]["queue:responseTime"][0]["output"] == "no answer within 0.05 s"


async def test_open_breakers_fail_readiness_when_asked() -> None:
    work = Work()
    work.status = 500
    app = make(
        Middleware(HealthMiddleware, breakers="fail", cache_seconds=0),
        Middleware(CircuitBreakerMiddleware, name="upstream", minimum_calls=2),
        work=work,
    )
    with FrozenClock() as frozen:
        async with client(app) as http:
            assert (await http.get("/health/ready")).status_code == 200
            for _ in range(3):
                await http.get("/a")
            refused = await http.get("/health/ready")
            work.status = 200
            frozen.advance(5)
            for _ in range(3):
                await http.get("/a")
            ready = await http.get("/health/ready")
    assert refused.status_code == 503
    assert refused.json()["checks"]["breakers:open"] == [
        {
            "componentId": "breaker:upstream /a",
            "componentType": "component",
            "observedValue": "open",
            "status": "fail",
        }
    ]
    assert ready.status_code == 200


async def test_concurrent_probes_share_one_run_and_results_are_kept_a_while() -> None:
    calls = 0

    async def slow() -> bool:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return True

    app = make(Middleware(HealthMiddleware, checks={"slow": slow}, cache_seconds=30))
    async with client(app) as http:
        answers = await asyncio.gather(*(http.get("/health/ready") for _ in range(20)))
        again = await http.get("/health/ready")
    assert {a.status_code for a in answers} == {200}
    assert again.status_code == 200
    assert calls == 1


# --- the report, and other layers --------------------------------------------------------------


def test_the_report_counts_the_endpoints_as_public_and_stops_there() -> None:
    app = make(
        Middleware(HealthMiddleware, stores="warn"),
        Middleware(RateLimitMiddleware, limit="10/minute"),
        Middleware(AuthMiddleware, authenticators=[APIKeyAuth(keys=KEYS)]),
    )
    report = build_report(app)
    assert [(r.name, r.security) for r in report.routes] == [
        ("GET /orders", "required"),
        ("GET /a", "required"),
        ("GET /health/live", "public"),
        ("GET /health/ready", "public"),
    ]
    assert report.check() == []
    findings = [str(f) for f in report.check(require=["ratelimit"])]
    why = "answered by health before any ratelimit layer (required for every route)"
    assert findings == [f"GET /health/live: {why}", f"GET /health/ready: {why}"]
    table = render_table(report)
    assert re.search(
        r"^GET +/health/live +health +endpoint: liveness\n +ratelimit:default +not reached$",
        table,
        re.M,
    ), table


async def test_outer_layers_can_name_the_endpoints_and_tracing_shows_their_route() -> None:
    telemetry = Telemetry()
    app = make(
        Middleware(TracingMiddleware, **telemetry.providers, exclude=["GET /health/live"]),
        Middleware(HealthMiddleware),
    )
    async with client(app) as http:
        await http.get("/health/live")
        await http.get("/health/ready")
    [span] = telemetry.server_spans()
    assert span.attributes["http.route"] == "/health/ready"  # type: ignore[index]
    telemetry.shutdown()


async def test_the_stack_built_twice_keeps_one_pair_of_routes() -> None:
    app = make(Middleware(HealthMiddleware))
    build_report(app)  # builds the stack once for the report
    async with client(app) as http:  # and the app builds its own
        assert (await http.get("/health/live")).status_code == 200
    paths = [getattr(route, "path", None) for route in app.router.routes]
    assert paths.count("/health/live") == paths.count("/health/ready") == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"live_path": "health"}, "live_path 'health' is not a path like '/health/live'"),
        ({"ready_path": "/health/live"}, "ready_path: is the same path as live_path"),
        ({"live_path": "/orders"}, "live_path: '/orders' is a route of the app already"),
        ({"checks": {"db:x": lambda: True}}, "checks 'db:x' is not a check name"),
        ({"checks": {"db": 42}}, "checks['db'] 42 is not an async function"),
        ({"stores": "maybe"}, "stores 'maybe' is not one of 'off', 'warn', 'fail'"),
        ({"version": ""}, "version '' is not a non-empty string"),
    ],
)
def test_a_bad_option_is_refused_at_start_up(options: dict[str, Any], message: str) -> None:
    def build() -> None:
        app = make(Middleware(HealthMiddleware, **options))
        found = startup_error(app.build_middleware_stack())
        if found is not None:
            raise found

    with pytest.raises(ConfigError, match=r"^HealthMiddleware\[name='health'\]: ") as error:
        build()
    assert message in str(error.value)
