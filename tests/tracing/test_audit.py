"""The audit log of refusals: one structured record each, no secret, flood-proof."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import NoOpTracerProvider

from apiguard.testing import FrozenClock
from tests.tracing._helpers import READER_KEY, WRITER_KEY, Telemetry, call, client, orders_app

pytestmark = pytest.mark.anyio

NO_SDK = {"tracer_provider": NoOpTracerProvider(), "meter_provider": NoOpMeterProvider()}
FIELDS = {
    "event",
    "time",
    "method",
    "route",
    "status",
    "layer",
    "layer_name",
    "reason",
    "policy",
    "client_address",
    "trace_id",
    "span_id",
}


class Records(logging.Handler):
    """Keeps the records of the audit logger."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        standard = set(vars(logging.makeLogRecord({})))
        return {k: v for k, v in vars(record).items() if k not in standard and k != "message"}


@pytest.fixture
def audit() -> Iterator[Records]:
    logger = logging.getLogger("apiguard.audit")
    handler = Records()
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


async def test_a_refusal_gets_one_structured_record(audit: Records, telemetry: Telemetry) -> None:
    """Time, route template, method, status, layer, reason, client, trace id: JSON-ready."""
    with FrozenClock(wall=1_700_000_000.25):
        async with client(orders_app(telemetry)) as http:
            await http.get("/orders/42")
    (record,) = audit.records
    fields = audit.fields(record)
    assert set(fields) == FIELDS
    span = telemetry.span()
    assert fields == {
        "event": "apiguard.refusal",
        "time": "2023-11-14T22:13:20.250+00:00",
        "method": "GET",
        "route": "/orders/{order_id}",
        "status": 401,
        "layer": "auth",
        "layer_name": "auth",
        "reason": "missing_credential",
        "policy": None,
        "client_address": "203.0.113.9",
        "trace_id": format(span.context.trace_id, "032x"),
        "span_id": format(span.context.span_id, "016x"),
    }
    json.dumps(fields)  # a JSON formatter can write it as it is
    assert (
        record.getMessage()
        == "refused GET /orders/{order_id}: 401 by auth[auth] (missing_credential)"
    )
    assert record.levelno == logging.INFO


async def test_no_sdk_still_writes_the_audit_log(audit: Records) -> None:
    async with client(orders_app(None, **NO_SDK)) as http:
        await http.get("/orders/42", headers={"x-api-key": "k-not-a-key"})
        await http.get("/orders/42", headers={"x-api-key": READER_KEY})
    (record,) = audit.records
    fields = audit.fields(record)
    assert (fields["reason"], fields["route"], fields["trace_id"]) == (
        "invalid_token",
        "/orders/{order_id}",
        None,
    )


async def test_no_secret_ever_reaches_the_audit_log(audit: Records, telemetry: Telemetry) -> None:
    """Keys, tokens, passwords, bodies, query values and causes stay out."""
    secrets = [
        "k-not-a-key-0xdeadbeef",
        "tok-secret-123",
        "hunter2-password",
        "body-secret-value",
        "query-secret-value",
    ]
    app = orders_app(telemetry, limit="1000/minute")
    async with client(app) as http:
        await http.get(
            f"/orders/1?access_token={secrets[1]}&q={secrets[4]}",
            headers={"x-api-key": secrets[0], "authorization": f"Basic {secrets[2]}"},
        )
        await http.post(
            f"/orders?password={secrets[2]}",
            json={"sku": secrets[3]},
            headers={"x-api-key": WRITER_KEY},
        )
        await http.post("/orders", content=secrets[3].encode(), headers={"x-api-key": READER_KEY})
    assert len(audit.records) == 3
    for record in audit.records:
        text = record.getMessage() + json.dumps(audit.fields(record), default=str)
        for secret in [*secrets, READER_KEY, WRITER_KEY, "unknown_key"]:
            assert secret not in text


async def test_the_principal_only_when_opted_in(audit: Records, telemetry: Telemetry) -> None:
    async with client(orders_app(telemetry, record_principal=True)) as http:
        await http.post("/orders", json={}, headers={"x-api-key": WRITER_KEY})
    async with client(orders_app(None, **NO_SDK)) as http:
        await http.post("/orders", json={}, headers={"x-api-key": WRITER_KEY})
    opted_in, default = (audit.fields(r) for r in audit.records)
    assert opted_in["principal"] == "grace"
    assert opted_in["reason"] == "invalid-body"
    assert "principal" not in default


async def test_a_flood_of_refusals_is_folded_into_a_summary(audit: Records) -> None:
    """A rate-limited client sends 100,000 requests in a burst: bounded records, one summary."""
    app = orders_app(None, limit="10/minute", audit_limit=10, audit_window=60.0, **NO_SDK)
    key = [(b"x-api-key", READER_KEY.encode())]
    with FrozenClock() as frozen:
        statuses = [await call(app, "GET", "/orders/42", key) for _ in range(100_000)]
        assert statuses.count(200) == 10
        assert statuses.count(429) == 99_990
        assert len(audit.records) == 10
        frozen.advance(61)
        assert await call(app, "GET", "/orders/42") == 401  # a refusal after the window
    events = [audit.fields(r)["event"] for r in audit.records]
    assert events == ["apiguard.refusal"] * 10 + ["apiguard.refusal.summary", "apiguard.refusal"]
    summary = audit.fields(audit.records[10])
    assert summary["folded"] == 99_980
    assert summary["logged"] == 10
    assert (summary["route"], summary["layer_name"], summary["reason"], summary["status"]) == (
        "/orders/{order_id}",
        "ip",
        "quota-exceeded",
        429,
    )
    assert "folded 99980 more refusals" in audit.records[10].getMessage()


async def test_keys_are_apart_per_route_and_reason(audit: Records) -> None:
    app = orders_app(None, audit_limit=2, **NO_SDK)
    with FrozenClock():
        for _ in range(5):
            await call(app, "GET", "/orders/42")
            await call(app, "GET", "/orders/42", [(b"x-api-key", b"k-wrong")])
            await call(app, "POST", "/orders")
    assert len(audit.records) == 6


async def test_summaries_are_written_at_shutdown(audit: Records) -> None:
    app = orders_app(None, audit_limit=1, **NO_SDK)
    async with LifespanManager(app):
        for _ in range(4):
            await call(app, "GET", "/orders/42")
        assert len(audit.records) == 1
    summary = audit.fields(audit.records[-1])
    assert summary["event"] == "apiguard.refusal.summary"
    assert summary["folded"] == 3


async def test_audit_can_be_turned_off(audit: Records) -> None:
    async with client(orders_app(None, audit=False, **NO_SDK)) as http:
        await http.get("/orders/42")
    assert audit.records == []


async def test_excluded_routes_are_not_audited(audit: Records) -> None:
    async with client(orders_app(None, exclude=["GET /orders/{order_id}"], **NO_SDK)) as http:
        await http.get("/orders/42")
        await http.post("/orders", json={})
    assert [audit.fields(r)["route"] for r in audit.records] == ["/orders"]


async def test_nothing_is_built_when_the_logger_is_off(telemetry: Telemetry) -> None:
    logger = logging.getLogger("apiguard.audit")
    assert not logger.isEnabledFor(logging.INFO)  # the default: WARNING from the root
    async with client(orders_app(telemetry)) as http:
        assert (await http.get("/orders/42")).status_code == 401
