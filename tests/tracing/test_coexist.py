"""With FastAPI's native telemetry, otel-asgi or Starlette's middleware already tracing."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from opentelemetry.instrumentation import _semconv
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware as OtelASGI
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.opentelemetry import OpenTelemetryMiddleware as StarletteOtel
from starlette.routing import Route

from apiguard import APIKeyAuth, AuthMiddleware, Principal, TracingMiddleware, guard
from tests.tracing._helpers import Telemetry, attributes, client, get_order

pytestmark = pytest.mark.anyio

KEY = {"x-api-key": "k-fastapi-0001"}
DURATIONS = ("http.server.request.duration", "http.server.duration")


def _durations(telemetry: Telemetry) -> list[tuple[str, str, int]]:
    """(scope, metric, count) of every duration data point."""
    return [
        (scope, name, point.count)
        for (scope, name), points in telemetry.metrics().items()
        if name in DURATIONS
        for point in points
    ]


def _fastapi(telemetry: Telemetry, **telemetry_options: Any) -> FastAPI:
    app = FastAPI(
        telemetry={**telemetry.providers, **telemetry_options},
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )

    @app.get("/orders/{order_id}")
    async def read_order(order_id: int) -> dict[str, int]:
        return {"id": order_id}

    return guard(
        app,
        Middleware(TracingMiddleware, **telemetry.providers),
        Middleware(
            AuthMiddleware,
            authenticators=[APIKeyAuth(keys={KEY["x-api-key"]: Principal(id="p", plan="pro")})],
        ),
    )


async def test_fastapi_native_span_is_enriched_not_doubled(telemetry: Telemetry) -> None:
    """One SERVER span (FastAPI's), with apiguard's attributes; one duration measurement."""
    async with client(_fastapi(telemetry)) as http:
        assert (await http.get("/orders/42", headers=KEY)).status_code == 200
    span = telemetry.span()
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "fastapi"
    assert span.name == "GET /orders/{order_id}"
    got = attributes(span)
    assert got["http.route"] == "/orders/{order_id}"
    assert got["apiguard.auth.outcome"] == "allow"
    assert got["apiguard.outcome"] == "allow"
    assert _durations(telemetry) == [("fastapi", "http.server.request.duration", 1)]
    (usage,) = telemetry.points("apiguard.requests", scope="apiguard")
    assert usage.attributes["http.route"] == "/orders/{order_id}"


async def test_fastapi_span_of_a_refusal_before_routing_is_renamed(telemetry: Telemetry) -> None:
    """A 401 never reaches FastAPI's router: apiguard gives the span and the metric the route."""
    async with client(_fastapi(telemetry)) as http:
        assert (await http.get("/orders/42")).status_code == 401
    span = telemetry.span()
    assert span.name == "GET /orders/{order_id}"
    got = attributes(span)
    assert got["http.route"] == "/orders/{order_id}"
    assert got["apiguard.reject.reason"] == "missing_credential"
    assert got["http.response.status_code"] == 401
    (point,) = telemetry.points("http.server.request.duration")
    assert point.count == 1
    assert point.attributes["http.route"] == "/orders/{order_id}"


async def test_fastapi_with_metrics_off_leaves_them_to_apiguard(telemetry: Telemetry) -> None:
    async with client(_fastapi(telemetry, metrics=False)) as http:
        await http.get("/orders/42", headers=KEY)
    assert len(telemetry.server_spans()) == 1
    assert _durations(telemetry) == [("apiguard", "http.server.request.duration", 1)]


@pytest.fixture(params=["default", "http"])
def semconv(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """otel-asgi in its default (old) conventions, and with the stable ones opted in."""
    stability = _semconv._OpenTelemetrySemanticConventionStability
    monkeypatch.setattr(stability, "_initialized", False)
    monkeypatch.setattr(stability, "_OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING", {})
    if request.param == "http":
        monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    else:
        monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN", raising=False)
    return str(request.param)


def _starlette(telemetry: Telemetry) -> Starlette:
    return guard(
        Starlette(routes=[Route("/orders/{order_id:int}", get_order)]),
        Middleware(TracingMiddleware, **telemetry.providers),
        Middleware(
            AuthMiddleware,
            authenticators=[APIKeyAuth(keys={KEY["x-api-key"]: Principal(id="p")})],
        ),
    )


async def test_otel_asgi_outside_gets_one_span_renamed_by_route(
    telemetry: Telemetry, semconv: str
) -> None:
    """otel-asgi names its span by the raw path; apiguard renames it and adds the route."""
    app = OtelASGI(_starlette(telemetry), **telemetry.providers)
    async with client(app) as http:
        assert (await http.get("/orders/42?access_token=s3cret", headers=KEY)).status_code == 200
    (span,) = telemetry.server_spans()
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "opentelemetry.instrumentation.asgi"
    assert span.name == "GET /orders/{order_id}"
    got = attributes(span)
    assert got["http.route"] == "/orders/{order_id}"
    assert got["apiguard.auth.outcome"] == "allow"
    if semconv == "http":
        assert got["url.query"] == "access_token=REDACTED"
    expected = "http.server.request.duration" if semconv == "http" else "http.server.duration"
    assert _durations(telemetry) == [("opentelemetry.instrumentation.asgi", expected, 1)]


async def test_starlette_middleware_outside_records_no_metric_so_apiguard_does(
    telemetry: Telemetry,
) -> None:
    app = guard(
        Starlette(routes=[Route("/orders/{order_id:int}", get_order)]),
        Middleware(StarletteOtel, tracer_provider=telemetry.tracer_provider),
        Middleware(TracingMiddleware, **telemetry.providers),
        Middleware(
            AuthMiddleware,
            authenticators=[APIKeyAuth(keys={KEY["x-api-key"]: Principal(id="p")})],
        ),
    )
    async with client(app) as http:
        assert (await http.get("/orders/42")).status_code == 401
    (span,) = telemetry.server_spans()
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "starlette"
    assert span.kind is SpanKind.SERVER
    assert span.name == "GET /orders/{order_id}"
    assert attributes(span)["apiguard.reject.reason"] == "missing_credential"
    assert _durations(telemetry) == [("apiguard", "http.server.request.duration", 1)]


async def test_http_metrics_can_be_forced(telemetry: Telemetry) -> None:
    """`http_metrics="off"` never records them; `"on"` records them beside an outer one."""
    for mode, expected in (("off", 0), ("on", 1)):
        own = Telemetry()
        app = guard(
            Starlette(routes=[Route("/orders/{order_id:int}", get_order)]),
            Middleware(TracingMiddleware, http_metrics=mode, **own.providers),
        )
        async with client(app) as http:
            await http.get("/orders/1")
        assert len(own.points("http.server.request.duration", scope="apiguard")) == expected
        own.shutdown()


async def test_a_sampled_out_outer_span_gets_no_second_span(telemetry: Telemetry) -> None:
    """The outer instrumentation sampled the request out: no orphan span of apiguard's."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    outer_provider = TracerProvider(sampler=ALWAYS_OFF)
    meter_provider = telemetry.meter_provider
    app = OtelASGI(
        _starlette(telemetry), tracer_provider=outer_provider, meter_provider=meter_provider
    )
    async with client(app) as http:
        await http.get("/orders/42", headers=KEY)
    assert telemetry.spans() == []
    assert telemetry.points("http.server.request.duration", scope="apiguard") == []
