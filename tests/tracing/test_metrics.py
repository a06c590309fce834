"""The HTTP metrics of the conventions, apiguard's own, and the bounds on their labels."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from apiguard import Principal, RateLimitMiddleware, TracingMiddleware, guard
from apiguard.errors import redact
from apiguard.testing import FrozenClock
from apiguard.tracing._metrics import DURATION_BUCKETS
from tests._servers import RedisServer
from tests.tracing._helpers import (
    READER_KEY,
    WRITER_KEY,
    Telemetry,
    call,
    client,
    orders_app,
    point_attributes,
)

pytestmark = pytest.mark.anyio


async def test_duration_follows_the_conventions(telemetry: Telemetry) -> None:
    """Seconds, the conventions' buckets, the conventions' attributes."""
    async with client(orders_app(telemetry)) as http:
        await http.get("/orders/1", headers={"x-api-key": READER_KEY})
        await http.get("/unavailable")
    metrics = telemetry.reader.get_metrics_data()
    assert metrics is not None
    (duration,) = [
        metric
        for resource in metrics.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "http.server.request.duration"
    ]
    assert duration.unit == "s"
    points = list(duration.data.data_points)
    assert {tuple(p.explicit_bounds) for p in points} == {DURATION_BUCKETS}
    assert sorted(point_attributes(points), key=str) == sorted(
        [
            {
                "http.request.method": "GET",
                "url.scheme": "http",
                "network.protocol.version": "1.1",
                "http.route": "/orders/{order_id}",
                "http.response.status_code": 200,
            },
            {
                "http.request.method": "GET",
                "url.scheme": "http",
                "network.protocol.version": "1.1",
                "http.route": "/unavailable",
                "http.response.status_code": 503,
                "error.type": "503",
            },
        ],
        key=str,
    )


async def test_development_metrics_are_opt_in(telemetry: Telemetry) -> None:
    async with client(orders_app(telemetry)) as http:
        await http.post(
            "/orders", json={"sku": "A", "quantity": 1}, headers={"x-api-key": WRITER_KEY}
        )
    names = {name for _, name in telemetry.metrics()}
    assert "http.server.active_requests" not in names
    assert "http.server.request.body.size" not in names


async def test_active_requests_and_body_sizes_when_asked(telemetry: Telemetry) -> None:
    seen: list[int] = []
    app = orders_app(telemetry, active_requests=True, body_sizes=True)

    async with client(app) as http:
        response = await http.post(
            "/orders", json={"sku": "A-1", "quantity": 3}, headers={"x-api-key": WRITER_KEY}
        )
    seen.append(len(response.content))
    (active,) = telemetry.points("http.server.active_requests")
    assert active.value == 0  # up and down again
    assert dict(active.attributes) == {"http.request.method": "POST", "url.scheme": "http"}
    (request_size,) = telemetry.points("http.server.request.body.size")
    (response_size,) = telemetry.points("http.server.response.body.size")
    assert request_size.sum == len(b'{"sku":"A-1","quantity":3}')
    assert response_size.sum == seen[0]


async def test_usage_per_consumer_route_and_status_class(telemetry: Telemetry) -> None:
    app = orders_app(telemetry, consumer="plan")
    async with client(app) as http:
        await http.get("/orders/1", headers={"x-api-key": READER_KEY})
        await http.get("/orders/2", headers={"x-api-key": READER_KEY})
        await http.get("/orders/3", headers={"x-api-key": WRITER_KEY})
        await http.get("/orders/4")
    usage = {
        (p.attributes["apiguard.consumer"], p.attributes["apiguard.status_class"]): p.value
        for p in telemetry.points("apiguard.requests")
    }
    assert usage == {("free", "2xx"): 2, ("pro", "2xx"): 1, ("anonymous", "4xx"): 1}
    routes = {p.attributes["http.route"] for p in telemetry.points("apiguard.requests")}
    assert routes == {"/orders/{order_id}"}


async def test_no_consumer_label_unless_configured(telemetry: Telemetry) -> None:
    async with client(orders_app(telemetry)) as http:
        await http.get("/orders/1", headers={"x-api-key": READER_KEY})
    (point,) = telemetry.points("apiguard.requests")
    assert "apiguard.consumer" not in point.attributes


async def test_labels_stay_bounded_under_10000_paths(telemetry: Telemetry) -> None:
    """10,000 distinct ids and 10,000 unknown paths: route templates only, never paths."""
    app = guard(
        Starlette(routes=[Route("/orders/{order_id:int}", lambda r: PlainTextResponse("ok"))]),
        Middleware(TracingMiddleware, **telemetry.providers),
    )
    for i in range(10_000):
        assert await call(app, "GET", f"/orders/{i}") == 200
        assert await call(app, "GET", f"/random/{i}") == 404
    for name in ("http.server.request.duration", "apiguard.requests"):
        labels = list(point_attributes(telemetry.points(name)))
        assert len(labels) == 2, name
        assert {label.get("http.route") for label in labels} == {"/orders/{order_id}", None}
    assert sum(p.count for p in telemetry.points("http.server.request.duration")) == 20_000
    names = {span.name for span in telemetry.server_spans()}
    assert names == {"GET /orders/{order_id}", "GET"}


async def test_consumers_fold_into_other_past_the_cap(telemetry: Telemetry) -> None:
    """10,000 distinct principals: 100 labels of their own, the rest counted as `other`."""
    from apiguard import APIKeyAuth, AuthMiddleware

    keys = {f"k-{i:05d}-secret": Principal(id=f"user-{i}") for i in range(10_000)}
    app = guard(
        Starlette(routes=[Route("/x", lambda r: PlainTextResponse("ok"))]),
        Middleware(
            TracingMiddleware, consumer="principal", max_consumers=100, **telemetry.providers
        ),
        Middleware(AuthMiddleware, authenticators=[APIKeyAuth(keys=keys, cache_size=0)]),
    )
    for key in keys:
        assert await call(app, "GET", "/x", [(b"x-api-key", key.encode())]) == 200
    usage = {
        p.attributes["apiguard.consumer"]: p.value for p in telemetry.points("apiguard.requests")
    }
    assert len(usage) == 101
    assert usage["other"] == 9_900
    assert sum(usage.values()) == 10_000


async def test_refusals_are_counted_by_layer_reason_and_route(telemetry: Telemetry) -> None:
    async with client(orders_app(telemetry, limit="2/minute")) as http:
        for _ in range(4):
            await http.get("/orders/1", headers={"x-api-key": READER_KEY})
        await http.get("/health")  # counted by the limiter too
    refusals = {
        (
            p.attributes["apiguard.name"],
            p.attributes["apiguard.reason"],
            p.attributes["http.route"],
        ): p.value
        for p in telemetry.points("apiguard.refusals")
    }
    assert refusals == {
        ("ip", "quota-exceeded", "/orders/{order_id}"): 2,
        ("ip", "quota-exceeded", "/health"): 1,
    }


async def test_streaming_response_ends_with_its_last_chunk(telemetry: Telemetry) -> None:
    """The request ends with the last body message; a body in chunks is counted whole."""
    from starlette.responses import StreamingResponse

    async def chunks(request: Request) -> Response:
        async def gen():  # type: ignore[no-untyped-def]
            for part in (b"a" * 10, b"b" * 20, b"c" * 30):
                yield part

        return StreamingResponse(gen())

    app = guard(
        Starlette(routes=[Route("/stream", chunks)]),
        Middleware(TracingMiddleware, body_sizes=True, **telemetry.providers),
    )
    async with client(app) as http:
        assert len((await http.get("/stream")).content) == 60
    (size,) = telemetry.points("http.server.response.body.size")
    assert size.sum == 60
    assert telemetry.span().name == "GET /stream"


@pytest.mark.usefixtures("close_stores")
async def test_a_store_breakers_transitions_are_counted_as_they_happen(
    telemetry: Telemetry, own_redis: RedisServer
) -> None:
    """The store's breaker is the core's: its transitions reach `apiguard.state.transitions`."""
    app = guard(
        Starlette(routes=[Route("/x", lambda r: PlainTextResponse("ok"))]),
        Middleware(TracingMiddleware, **telemetry.providers),
        Middleware(RateLimitMiddleware, name="ip", limit="100/minute", storage=own_redis.url),
    )
    with FrozenClock() as frozen:
        async with client(app) as http:
            assert (await http.get("/x")).status_code == 200
            own_redis.kill()
            for _ in range(4):  # three failures open it; the fourth is refused at once
                assert (await http.get("/x")).status_code == 200  # failing open
            own_redis.start()
            frozen.advance(0.5)
            assert (await http.get("/x")).status_code == 200  # the probe: the store is back
            await http.get("/x")
    store = redact(own_redis.url)[1:-1]
    counted = {
        (p.attributes["apiguard.state.previous"], p.attributes["apiguard.state"]): p.value
        for p in telemetry.points("apiguard.state.transitions")
        if p.attributes["apiguard.layer"] == "store" and p.attributes["apiguard.name"] == store
    }
    assert counted == {("closed", "open"): 1, ("open", "half-open"): 1, ("half-open", "closed"): 1}
