"""No SDK: next to nothing; an SDK set up later: picked up on the next request."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import NoOpTracerProvider

from apiguard import ConfigError, TracingMiddleware
from tests.tracing._helpers import Telemetry

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_an_sdk_set_up_after_the_app_is_picked_up() -> None:
    """Global providers set after the app was built: the next request is traced."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.tracing._late_sdk"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {
        "unset": [True, True],
        "before": 200,
        "spans_before": 0,
        "agree": [True, True],
        "after": 200,
        "spans_after": ["GET /x/{n}"],
        "metrics_after": ["apiguard.requests", "http.server.request.duration"],
    }


def _app() -> object:
    async def app(scope: object, receive: object, send: object) -> None:
        return None

    return app


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tracer_provider": "global"}, "tracer_provider 'global' is not a TracerProvider"),
        ({"meter_provider": object()}, "meter_provider <object object at"),
        ({"query": "hide"}, "query 'hide' is not one of 'redact', 'drop'"),
        ({"consumer": "ip"}, "consumer 'ip' is not one of 'principal', 'plan'"),
        ({"max_consumers": 0}, "max_consumers 0 is not a whole number from 1 to 100000"),
        ({"http_metrics": True}, "http_metrics True is not one of 'auto', 'on', 'off'"),
        ({"audit_window": -1}, "audit_window -1 is not a number of seconds"),
        ({"audit_limit": 1.5}, "audit_limit 1.5 is not a whole number"),
        ({"audit_logger": ""}, "audit_logger '' is not a logger name"),
        ({"exclude": "GET /health"}, "exclude 'GET /health' is not a list of strings"),
        ({"trusted_proxies": ["nope"]}, "trusted proxy 'nope' is not an address"),
        ({"record_principal": "yes"}, "record_principal 'yes' is not True or False"),
        ({"name": "a b"}, "name 'a b' is not 1-64 letters"),
    ],
)
def test_bad_options_fail_at_start_up_naming_the_option(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=r"^TracingMiddleware") as raised:
        TracingMiddleware(_app(), **options)  # type: ignore[arg-type]
    assert message in str(raised.value)


@pytest.mark.anyio
async def test_an_unknown_excluded_route_fails_at_start_up() -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Route

    from apiguard import guard
    from tests._lifespan import startup

    app = guard(
        Starlette(routes=[Route("/health", lambda r: None)]),
        Middleware(TracingMiddleware, exclude=["GET /healthz"]),
    )
    answer = await startup(app)
    assert answer["type"] == "lifespan.startup.failed"
    assert "exclude: route 'GET /healthz' is not a route of the app" in answer["message"]


def test_it_describes_itself_for_the_policy_report() -> None:
    from starlette.applications import Starlette
    from starlette.routing import Route

    app = Starlette(routes=[Route("/health", lambda r: None), Route("/x", lambda r: None)])
    layer = TracingMiddleware(app, exclude=["GET /health"], consumer="plan")
    excluded = layer.describe("GET", "/health")
    traced = layer.describe("GET", "/x")
    assert (excluded.layer, excluded.name, excluded.applies) == ("tracing", "tracing", False)
    assert traced.applies
    assert traced.answers == ()  # it never answers in the app's place
    assert traced.summary["consumer"] == "plan"
    assert traced.summary["audit"] == "apiguard.audit"
    assert not layer.describe("WEBSOCKET", "/x").applies


def test_no_op_providers_are_noticed() -> None:
    layer = TracingMiddleware(
        _app(),  # type: ignore[arg-type]
        tracer_provider=NoOpTracerProvider(),
        meter_provider=NoOpMeterProvider(),
    )
    assert not layer._current().on
    telemetry = Telemetry()
    live = TracingMiddleware(_app(), **telemetry.providers)._current()  # type: ignore[arg-type]
    assert live.on
    assert live.tracer is not None
    assert live.instruments is not None
    telemetry.shutdown()
