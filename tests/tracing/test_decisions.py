"""Every guard's decision on the span, by one rule; refusals by each guard."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.trace import StatusCode
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from apiguard import Decision, TracingMiddleware, get_context, guard
from tests._servers import free_port
from tests.tracing._helpers import READER_KEY, WRITER_KEY, Telemetry, attributes, client, orders_app

pytestmark = pytest.mark.anyio


def _guard_attributes(telemetry: Telemetry) -> dict[str, Any]:
    return {k: v for k, v in attributes(telemetry.span()).items() if k.startswith("apiguard.")}


async def test_an_allowed_request_shows_every_layer(telemetry: Telemetry) -> None:
    async with client(orders_app(telemetry)) as http:
        await http.get("/orders/7", headers={"x-api-key": READER_KEY})
    got = _guard_attributes(telemetry)
    reset = got.pop("apiguard.ratelimit.ip.reset_after")
    assert 0 < reset <= 60
    assert got == {
        "apiguard.outcome": "allow",
        "apiguard.ratelimit.ip.outcome": "allow",
        "apiguard.ratelimit.ip.policy": "ip-0",
        "apiguard.ratelimit.ip.limit": 1000,
        "apiguard.ratelimit.ip.remaining": 999,
        "apiguard.auth.outcome": "allow",
        "apiguard.auth.method": "api_key",
        "apiguard.validation.outcome": "allow",
        "apiguard.principal.plan": "free",
    }


READER = {"x-api-key": READER_KEY}
WRITER = {"x-api-key": WRITER_KEY}
BAD_TYPE = {**WRITER, "content-type": "text/plain"}
JSON = {**WRITER, "content-type": "application/json"}
POST = {"url": "/orders", "method": "POST"}
WRONG = {"x-api-key": "k-wrong"}
V = "validation"


@pytest.mark.parametrize(
    ("request_args", "status", "layer", "name", "reason"),
    [
        ({"url": "/orders/7"}, 401, "auth", "auth", "missing_credential"),
        ({"url": "/orders/7", "headers": WRONG}, 401, "auth", "auth", "invalid_token"),
        ({**POST, "json": {}, "headers": READER}, 403, "auth", "auth", "insufficient_scope"),
        ({**POST, "content": b"x" * 300, "headers": JSON}, 413, V, V, "content-too-large"),
        ({**POST, "content": b"a=1", "headers": BAD_TYPE}, 415, V, V, "unsupported-media-type"),
        ({**POST, "json": {"sku": "A"}, "headers": WRITER}, 422, V, V, "invalid-body"),
    ],
)  # fmt: skip
async def test_each_refusal_names_its_layer_and_reason(
    telemetry: Telemetry,
    request_args: dict[str, Any],
    status: int,
    layer: str,
    name: str,
    reason: str,
) -> None:
    """Refusals by authentication and validation: on the span, never an error."""
    args = {"method": "GET", **request_args}
    async with client(orders_app(telemetry)) as http:
        response = await http.request(**args)
    assert response.status_code == status
    span = telemetry.span()
    got = attributes(span)
    assert got["http.response.status_code"] == status
    assert span.status.status_code is StatusCode.UNSET
    assert got["apiguard.outcome"] == "reject"
    assert (got["apiguard.reject.layer"], got["apiguard.reject.name"]) == (layer, name)
    assert got["apiguard.reject.reason"] == reason
    prefix = f"apiguard.{layer}"
    assert got[f"{prefix}.outcome"] == "reject"
    assert got[f"{prefix}.status"] == status
    (refusal,) = telemetry.points("apiguard.refusals")
    assert dict(refusal.attributes) == {
        "apiguard.layer": layer,
        "apiguard.name": name,
        "apiguard.reason": reason,
        "http.request.method": args["method"],
        "http.response.status_code": status,
        "http.route": "/orders" if args["url"] == "/orders" else "/orders/{order_id}",
    }


async def test_a_rate_limit_refusal_shows_its_policy(telemetry: Telemetry) -> None:
    async with client(orders_app(telemetry, limit="1/minute")) as http:
        await http.get("/orders/7", headers={"x-api-key": READER_KEY})
        refused = await http.get("/orders/7", headers={"x-api-key": READER_KEY})
    assert refused.status_code == 429
    span = telemetry.server_spans()[-1]
    got = attributes(span)
    assert got["apiguard.reject.layer"] == "ratelimit"
    assert got["apiguard.reject.name"] == "ip"
    assert got["apiguard.reject.reason"] == "quota-exceeded"
    assert got["apiguard.ratelimit.ip.limit"] == 1
    assert got["apiguard.ratelimit.ip.remaining"] == 0
    assert got["apiguard.ratelimit.ip.policy"] == "ip-0"
    assert "apiguard.auth.outcome" not in got  # authentication never ran


@pytest.mark.parametrize(("mode", "status"), [("fail-open", 200), ("fail-closed", 503)])
async def test_store_errors_are_shown_and_counted(
    telemetry: Telemetry, mode: str, status: int
) -> None:
    """A Redis nobody listens on: the fail mode's outcome, the failures, one store error."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    app = orders_app(telemetry, storage=dead, on_store_error=mode)
    async with client(app) as http:
        response = await http.get("/orders/7", headers={"x-api-key": READER_KEY})
    assert response.status_code == status
    got = attributes(telemetry.span())
    assert got["apiguard.ratelimit.ip.reason"] == "store-unavailable"
    assert got["apiguard.ratelimit.ip.store.failures"] >= 1
    assert got["apiguard.ratelimit.ip.store.breaker"] in {"closed", "open", "half-open"}
    (error,) = telemetry.points("apiguard.store.errors")
    outcome = "allow" if mode == "fail-open" else "reject"
    assert dict(error.attributes) == {
        "apiguard.layer": "ratelimit",
        "apiguard.name": "ip",
        "apiguard.outcome": outcome,
    }
    if mode == "fail-closed":
        assert got["error.type"] == "503"


class Breaker:
    """A stand-in for a layer still to come: it reports a state, retries and a replay."""

    def __init__(self, app: Any, *, states: list[str]) -> None:
        self.app = app
        self.states = states

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = self.states.pop(0)
        get_context(scope).record(
            Decision(
                "breaker",
                "allow",
                "upstream",
                policy="GET /x",
                state=state,
                retries=2,
                attributes={"breaker.failure_rate": 0.5, "fallback.served": False},
            )
        )
        await self.app(scope, receive, send)


async def test_decisions_of_layers_still_to_come_need_no_change(telemetry: Telemetry) -> None:
    """Any layer's state, retries and attributes, and its state transitions, by the same rule."""
    app = guard(
        Starlette(routes=[Route("/x", lambda r: PlainTextResponse("ok"))]),
        Middleware(TracingMiddleware, **telemetry.providers),
        Middleware(Breaker, states=["closed", "closed", "open", "half-open", "closed"]),
    )
    async with client(app) as http:
        for _ in range(5):
            await http.get("/x")
    got = attributes(telemetry.server_spans()[2])
    assert {k: v for k, v in got.items() if k.startswith("apiguard.breaker")} == {
        "apiguard.breaker.upstream.outcome": "allow",
        "apiguard.breaker.upstream.policy": "GET /x",
        "apiguard.breaker.upstream.state": "open",
        "apiguard.breaker.upstream.retries": 2,
        "apiguard.breaker.upstream.failure_rate": 0.5,
        "apiguard.breaker.upstream.fallback.served": False,
    }
    transitions = {
        (p.attributes["apiguard.state.previous"], p.attributes["apiguard.state"]): p.value
        for p in telemetry.points("apiguard.state.transitions")
    }
    assert transitions == {
        ("closed", "open"): 1,
        ("open", "half-open"): 1,
        ("half-open", "closed"): 1,
    }


async def test_the_principal_id_only_when_opted_in(telemetry: Telemetry) -> None:
    async with client(orders_app(telemetry)) as http:
        await http.get("/orders/7", headers={"x-api-key": READER_KEY})
    assert "apiguard.principal.id" not in attributes(telemetry.span())
    other = Telemetry()
    async with client(orders_app(other, record_principal=True)) as http:
        await http.get("/orders/7", headers={"x-api-key": READER_KEY})
    assert attributes(other.span())["apiguard.principal.id"] == "ada"
    other.shutdown()


async def test_two_limiters_keep_apart(telemetry: Telemetry) -> None:
    from apiguard import RateLimitMiddleware

    app = guard(
        Starlette(routes=[Route("/x", lambda r: PlainTextResponse("ok"))]),
        Middleware(TracingMiddleware, **telemetry.providers),
        Middleware(RateLimitMiddleware, name="ip", limit="5/minute"),
        Middleware(RateLimitMiddleware, name="burst", limit="7/second"),
    )
    async with client(app) as http:
        await http.get("/x")
    got = attributes(telemetry.span())
    assert got["apiguard.ratelimit.ip.limit"] == 5
    assert got["apiguard.ratelimit.burst.limit"] == 7
