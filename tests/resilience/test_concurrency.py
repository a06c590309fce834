"""ConcurrencyLimitMiddleware in process: the bound, the queue, priorities, bulkheads, shedding."""

from __future__ import annotations

import asyncio
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
    ConcurrencyLimitMiddleware,
    ConfigError,
    ResponseFallback,
    TimeoutMiddleware,
    get_context,
    guard,
)
from apiguard.compose import startup_error
from apiguard.context import Decision
from apiguard.report import build_report
from apiguard.resilience import AdaptiveLimit
from apiguard.resilience._adaptive import Gradient
from apiguard.resilience._pools import Pool
from apiguard.testing import FrozenClock

pytestmark = pytest.mark.anyio

SHED_TYPE = "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity"


class Work:
    """Endpoints that hold until released, counting how many run at once."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.release = asyncio.Event()
        self.decisions: list[list[Decision]] = []

    async def hold(self, request: Request) -> Response:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        return PlainTextResponse(request.url.path)

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "pass"})


class Keep:
    def __init__(self, app: Any, *, into: list[list[Decision]]) -> None:
        self.app = app
        self.into = into

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.into.append(get_context(scope).decisions)
        await self.app(scope, receive, send)


def make(work: Work, *outer: Middleware, **options: Any) -> Starlette:
    app = Starlette(
        routes=[
            Route("/work", work.hold),
            Route("/other", work.hold),
            Route("/reports", work.hold, methods=["POST"]),
            Route("/stream", work.hold),
            Route("/health", work.health),
        ]
    )
    return guard(
        app,
        Middleware(Keep, into=work.decisions),
        *outer,
        Middleware(ConcurrencyLimitMiddleware, **options),
    )


def client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://api.example.com", timeout=30)


async def settle(condition: Any, within: float = 30.0) -> None:
    for _ in range(int(within / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("never settled")


async def test_500_concurrent_requests_keep_in_flight_at_the_bound_and_shed_the_rest() -> None:
    """The bound holds; the rest get 503 with Retry-After, never a 500; health is never shed."""
    work = Work()
    app = make(work, max_in_flight=20, priorities={"GET /health": "critical"})
    async with client(app) as http:
        pending = [asyncio.ensure_future(http.get("/work")) for _ in range(500)]
        await settle(lambda: sum(p.done() for p in pending) == 480 and work.running == 20)
        health = [await http.get("/health") for _ in range(5)]
        shed = [p.result() for p in pending if p.done()]
        work.release.set()
        answered = await asyncio.gather(*pending)
    admitted = [r for r in answered if r.status_code != 503]
    assert work.most == 20
    assert {r.status_code for r in health} == {200}
    assert {r.status_code for r in shed} == {503}
    assert {r.headers["retry-after"] for r in shed} == {"1"}
    body = shed[0].json()
    assert (body["type"], body["status"], body["violated-policies"]) == (
        SHED_TYPE,
        503,
        ["concurrency"],
    )
    assert [r.status_code for r in admitted] == [200] * 20


async def test_a_queue_holds_a_few_for_a_while_and_hands_them_the_freed_slots() -> None:
    work = Work()
    app = make(work, max_in_flight=2, max_queue=3, max_wait=30)
    async with client(app) as http:
        pending = [asyncio.ensure_future(http.get("/work")) for _ in range(7)]
        await settle(lambda: sum(p.done() for p in pending) == 2 and work.running == 2)
        assert {p.result().status_code for p in pending if p.done()} == {503}  # past the queue
        work.release.set()
        answered = await asyncio.gather(*pending)
    assert sorted(r.status_code for r in answered) == [200] * 5 + [503] * 2
    assert work.most == 2
    waited = [d for ds in work.decisions for d in ds if d.outcome == "allow" and d.attributes]
    assert len(waited) == 3
    assert all(d.attributes["concurrency.waited"] > 0 for d in waited)  # type: ignore[index]


async def test_a_wait_ends_at_max_wait_with_a_503() -> None:
    work = Work()
    app = make(work, max_in_flight=1, max_queue=5, max_wait=0.05)
    async with client(app) as http:
        first = asyncio.ensure_future(http.get("/work"))
        await settle(lambda: work.running == 1)
        assert (await http.get("/work")).status_code == 503
        work.release.set()
        assert (await first).status_code == 200


async def test_a_wait_ends_with_the_requests_deadline() -> None:
    work = Work()
    app = make(
        work,
        Middleware(TimeoutMiddleware, timeout=0.05, routes={"/work": None}),
        max_in_flight=1,
        max_queue=5,
        max_wait=10,
    )
    async with client(app) as http:
        first = asyncio.ensure_future(http.get("/work"))
        await settle(lambda: work.running == 1)
        began = asyncio.get_running_loop().time()
        second = await http.get("/other")  # max_wait is 10 s; the deadline (50 ms) comes first
        waited = asyncio.get_running_loop().time() - began
        work.release.set()
        await first
    # Shed at the deadline (503), or answered by the timeout at the same moment (504):
    # either way, long before max_wait, and the app never ran it.
    assert second.status_code in (503, 504)
    assert waited < 5
    assert work.most == 1


async def test_high_priority_takes_a_normal_waiters_place_and_goes_first() -> None:
    work = Work()
    app = make(work, max_in_flight=1, max_queue=1, max_wait=30, priorities={"/other": "high"})
    async with client(app) as http:
        first = asyncio.ensure_future(http.get("/work"))
        await settle(lambda: work.running == 1)
        normal = asyncio.ensure_future(http.get("/work"))
        await asyncio.sleep(0.05)
        high = asyncio.ensure_future(http.get("/other"))
        assert (await normal).status_code == 503  # its place taken
        work.release.set()
        assert (await high).status_code == 200
        assert (await first).status_code == 200


async def test_low_priority_is_shed_before_the_bound_is_reached() -> None:
    work = Work()
    app = make(work, max_in_flight=10, priorities={"/other": "low"})
    async with client(app) as http:
        normal = [asyncio.ensure_future(http.get("/work")) for _ in range(9)]
        await settle(lambda: work.running == 9)
        assert (await http.get("/other")).status_code == 503  # a tenth must stay free for it
        last = asyncio.ensure_future(http.get("/work"))
        await settle(lambda: work.running == 10)  # normal still gets the last slot
        work.release.set()
        await asyncio.gather(*normal, last)


async def test_a_route_bulkhead_and_an_unlimited_route() -> None:
    work = Work()
    app = make(work, max_in_flight=10, routes={"POST /reports": 2, "/stream": None})
    async with client(app) as http:
        reports = [asyncio.ensure_future(http.post("/reports")) for _ in range(3)]
        await settle(lambda: sum(p.done() for p in reports) == 1)
        [refused] = [p.result() for p in reports if p.done()]
        assert refused.json()["violated-policies"] == ["concurrency:/reports"]
        streams = [asyncio.ensure_future(http.get("/stream")) for _ in range(12)]
        others = [asyncio.ensure_future(http.get("/other")) for _ in range(8)]
        await settle(lambda: work.running == 2 + 12 + 8)  # streams are not counted
        assert (await http.get("/other")).status_code == 503  # 2 reports + 8 others: full
        work.release.set()
        await asyncio.gather(*reports, *streams, *others)
    skipped = [d for ds in work.decisions for d in ds if d.reason == "not-limited"]
    assert len(skipped) == 12


async def test_a_fallback_answers_a_shed_request() -> None:
    work = Work()
    fallback = ResponseFallback(JSONResponse({"busy": True}), name="busy")
    app = make(work, max_in_flight=1, fallback=fallback)
    async with client(app) as http:
        first = asyncio.ensure_future(http.get("/work"))
        await settle(lambda: work.running == 1)
        answered = await http.get("/work")
        work.release.set()
        await first
    assert answered.json() == {"busy": True}
    served, shed = work.decisions[1][-2:]
    assert (served.layer, served.reason) == ("fallback", "shed")
    assert (shed.outcome, shed.status, shed.attributes) == (
        "reject",
        None,
        {"concurrency.priority": "normal", "concurrency.fallback": True},
    )


async def test_a_waiter_whose_client_leaves_gives_its_place_back() -> None:
    work = Work()
    app = make(work, max_in_flight=1, max_queue=1, max_wait=30)
    async with client(app) as http:
        first = asyncio.ensure_future(http.get("/work"))
        await settle(lambda: work.running == 1)
        leaving = asyncio.ensure_future(http.get("/work"))
        await asyncio.sleep(0.05)
        leaving.cancel()
        await asyncio.gather(leaving, return_exceptions=True)
        staying = asyncio.ensure_future(http.get("/work"))  # the queue has room again
        await asyncio.sleep(0.05)
        assert not staying.done()
        work.release.set()
        assert (await staying).status_code == 200
        await first


async def test_the_allowed_decision_says_the_limit_and_what_is_left() -> None:
    work = Work()
    work.release.set()
    app = make(work, max_in_flight=5)
    async with client(app) as http:
        await http.get("/work")
        await http.get("/health")
    assert [d for d in work.decisions[0] if d.layer == "concurrency"] == [
        Decision("concurrency", "allow", "concurrency", limit=5, remaining=4)
    ]


async def test_with_an_adaptive_limit_the_decision_says_the_limit_in_force() -> None:
    work = Work()
    work.release.set()
    app = make(work, max_in_flight=50, adaptive=True)
    async with client(app) as http:
        await http.get("/work")
        await http.get("/work")
    for decisions in work.decisions:
        assert [d for d in decisions if d.layer == "concurrency"] == [
            Decision("concurrency", "allow", "concurrency", limit=4, remaining=3)  # measuring
        ]


async def test_it_describes_its_bound_and_its_answers() -> None:
    work = Work()
    app = make(work, max_in_flight=5, routes={"POST /reports": 2, "/stream": None})
    described = {
        r.name: next(d for d in r.descriptions if d.layer == "concurrency")
        for r in build_report(app).routes
    }
    assert described["GET /work"].summary == {
        "max_in_flight": 5,
        "max_queue": 0,
        "priority": "normal",
    }
    assert described["POST /reports"].summary["route_limit"] == 2
    assert not described["GET /stream"].applies
    [answer] = described["GET /work"].answers
    assert (answer.status, answer.reason, answer.type) == (503, "shed", SHED_TYPE)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_in_flight": 0}, "max_in_flight 0 is not a whole number from 1"),
        ({"max_queue": -1}, "max_queue -1 is not a whole number from 0"),
        ({"routes": {"/work": 0}}, "routes['/work'] 0 is not a whole number from 1"),
        ({"priorities": {"/work": "urgent"}}, "priorities['/work'] 'urgent' is not one of"),
        ({"adaptive": "yes"}, "adaptive 'yes' is not True, False or an AdaptiveLimit"),
        ({"routes": {"/nope": 3}}, "routes: route '/nope' is not a route of the app"),
        ({"priorities": {"/nope": "low"}}, "priorities: route '/nope' is not a route"),
    ],
)
def test_a_bad_option_is_refused_at_start_up(options: dict[str, Any], message: str) -> None:
    def build() -> None:
        app = make(Work(), **options)
        found = startup_error(app.build_middleware_stack())
        if found is not None:
            raise found

    with pytest.raises(
        ConfigError, match=r"^ConcurrencyLimitMiddleware\[name='concurrency'\]: "
    ) as e:
        build()
    assert message in str(e.value)


# --- the adaptive limit, on a frozen clock --------------------------------------------


@pytest.fixture
def frozen() -> Iterator[FrozenClock]:
    with FrozenClock() as clock:
        yield clock


def feed(gradient: Gradient, frozen: FrozenClock, latency: float, count: int = 10) -> None:
    for _ in range(count):
        admitted = frozen.monotonic()
        frozen.advance(0.011)
        gradient.sample(latency, admitted, frozen.monotonic())


def loaded(pool: Pool) -> None:
    pool.in_flight = pool.peak = pool.limit


def test_the_minimum_rtt_is_measured_at_the_lowest_limit_first(frozen: FrozenClock) -> None:
    pool = Pool(100, 0, 1.0)
    gradient = Gradient(AdaptiveLimit(min_rtt_samples=10), pool, 100)
    assert pool.limit == 4
    feed(gradient, frozen, 0.020, count=9)
    assert gradient.min_rtt is None
    feed(gradient, frozen, 0.030, count=2)
    assert gradient.min_rtt == 0.020  # the median of the first ten


def test_the_limit_grows_while_latency_stays_near_the_minimum(frozen: FrozenClock) -> None:
    pool = Pool(100, 0, 1.0)
    gradient = Gradient(AdaptiveLimit(min_rtt_samples=10), pool, 100)
    feed(gradient, frozen, 0.020)
    limits = []
    for _ in range(40):
        loaded(pool)
        feed(gradient, frozen, 0.020)
        limits.append(pool.limit)
    assert limits == sorted(limits)
    assert limits[-1] == 100  # up to max_in_flight


def test_the_limit_falls_when_latency_rises(frozen: FrozenClock) -> None:
    pool = Pool(100, 0, 1.0)
    gradient = Gradient(AdaptiveLimit(min_rtt_samples=10), pool, 100)
    feed(gradient, frozen, 0.020)
    for _ in range(30):
        loaded(pool)
        feed(gradient, frozen, 0.020)
    high = pool.limit
    for _ in range(5):
        loaded(pool)
        feed(gradient, frozen, 0.080)  # four times the minimum: queueing in the app
    assert pool.limit < high / 4


def test_the_limit_does_not_grow_when_the_app_is_not_using_it(frozen: FrozenClock) -> None:
    pool = Pool(100, 0, 1.0)
    gradient = Gradient(AdaptiveLimit(min_rtt_samples=10), pool, 100)
    feed(gradient, frozen, 0.020)
    for _ in range(20):
        pool.in_flight = pool.peak = 1  # light traffic
        feed(gradient, frozen, 0.020)
    assert pool.limit == 4


def test_the_minimum_rtt_is_measured_again_after_its_interval(frozen: FrozenClock) -> None:
    pool = Pool(100, 0, 1.0)
    gradient = Gradient(AdaptiveLimit(min_rtt_samples=10, min_rtt_interval=5), pool, 100)
    feed(gradient, frozen, 0.020)
    for _ in range(20):
        loaded(pool)
        feed(gradient, frozen, 0.020)
    grown = pool.limit
    frozen.advance(6)
    loaded(pool)
    feed(gradient, frozen, 0.020, count=5)
    assert pool.limit == 4  # held low while it measures
    feed(gradient, frozen, 0.040)  # a slower app since the deploy
    assert gradient.min_rtt == 0.040
    assert pool.limit >= grown  # the limit it had comes back


def test_shedding_everything_is_seen_over_a_second(frozen: FrozenClock) -> None:
    layer = ConcurrencyLimitMiddleware(Starlette(), max_in_flight=1)
    layer.refused += 3
    frozen.advance(1.5)
    assert layer.shedding_everything()
    layer.admitted += 1
    layer.refused += 3
    frozen.advance(1.5)
    assert not layer.shedding_everything()
