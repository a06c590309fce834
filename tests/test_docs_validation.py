"""The validation and idempotency guides' examples.

Bodies, parameters and sizes checked before the endpoint; payments charged
once per key and partner, and a client that retries lost answers.
"""

from __future__ import annotations

import importlib
from typing import Any

import httpx
import pytest

from tests._docs import _client

pytestmark = pytest.mark.anyio


async def test_validation_example_validates_and_hands_over() -> None:
    order = {"customer_email": "ada@example.com", "lines": [{"sku": "BOOK-1", "quantity": 2}]}
    async with await _client("validation") as client:
        created = await client.post("/orders", json=order, headers={"x-tenant": "acme"})
        no_tenant = await client.post("/orders", json=order)
        listed = await client.get("/orders?state=open&sku=A&sku=B")
        unknown = await client.get("/orders?debug=1")
        photo = await client.post(
            "/orders/7/attachments",
            content=b"\x89PNG" * 50_000,
            headers={"content-type": "image/png"},
        )
        json_attachment = await client.post("/orders/7/attachments", json={"a": 1})
        cancel_with_body = await client.post("/orders/7/cancel", json={"why": "no"})
        cancelled = await client.post("/orders/7/cancel")
        too_big = await client.post(
            "/orders", json={**order, "note": "x" * 70_000}, headers={"x-tenant": "acme"}
        )
    assert created.status_code == 201
    assert created.json() == {"tenant": "acme", "lines": 1}
    assert no_tenant.status_code == 422
    assert no_tenant.json()["errors"][0]["loc"] == ["header", "x-tenant"]
    assert listed.json() == {"state": "open", "limit": 20, "sku": ["A", "B"]}
    assert unknown.status_code == 422
    assert photo.status_code == 201
    assert json_attachment.status_code == 415
    assert cancel_with_body.status_code == 413
    assert cancelled.status_code == 200
    assert too_big.status_code == 413


async def test_validation_fastapi_example_uses_the_layers_model() -> None:
    async with await _client("validation_fastapi") as client:
        created = await client.post("/orders", json={"customer_email": "a@b.c", "quantity": 3})
        refused = await client.post("/orders", json={"customer_email": "a@b.c", "quantity": 0})
        replaced = await client.put("/orders/9", json={"customer_email": "a@b.c", "quantity": 4})
    assert created.json() == {"quantity": 3}
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    assert replaced.json() == {"id": 9, "quantity": 4}


# --- idempotency ----------------------------------------------------------------------

ACME = {"x-api-key": "pk-acme-7f3a9c2e4b1d"}
GLOBEX = {"x-api-key": "pk-globex-2c9f4e7a1b"}


async def test_idempotency_example_charges_once_per_key_and_partner() -> None:
    server: Any = importlib.import_module("examples.idempotency")
    server.CHARGES.clear()
    key = {"idempotency-key": '"order-7-payment"'}
    async with await _client("idempotency") as client:
        missing = await client.post("/payments", json={"amount": 100}, headers=ACME)
        first = await client.post("/payments", json={"amount": 100}, headers={**ACME, **key})
        again = await client.post("/payments", json={"amount": 100}, headers={**ACME, **key})
        other = await client.post("/payments", json={"amount": 999}, headers={**ACME, **key})
        globex = await client.post("/payments", json={"amount": 100}, headers={**GLOBEX, **key})
        unkeyed_order = await client.post("/orders", json={}, headers=ACME)
    assert missing.status_code == 400
    assert first.json() == {"id": "pay_1", "amount": 100, "status": "captured"}
    assert (again.json(), again.headers["idempotent-replayed"]) == (first.json(), "true")
    assert other.status_code == 422
    assert globex.json()["id"] == "pay_2"  # the same key from another partner is its own
    assert unkeyed_order.status_code == 201  # a key is optional there
    assert len(server.CHARGES) == 2


class _LosesResponses(httpx.AsyncBaseTransport):
    """Delivers every request to the app, and loses its first `lost` answers on the way back."""

    def __init__(self, inner: httpx.AsyncBaseTransport, lost: int) -> None:
        self.inner = inner
        self.lost = lost
        self.sent = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        self.sent += 1
        if self.lost:
            self.lost -= 1
            await response.aclose()
            raise httpx.ReadError("connection reset by peer", request=request)
        return response


async def test_idempotency_client_retries_lost_answers_and_charges_once() -> None:
    server: Any = importlib.import_module("examples.idempotency")
    recipe: Any = importlib.import_module("examples.idempotency_client")
    server.CHARGES.clear()
    transport = _LosesResponses(httpx.ASGITransport(server.app), lost=2)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=ACME) as client:
        paid = await recipe.post_once(client, "/payments", {"amount": 100}, base=0.01)
    assert transport.sent == 3  # two answers lost, the third arrived
    assert paid.status_code == 201
    assert paid.headers["idempotent-replayed"] == "true"  # the first attempt's charge
    assert len(server.CHARGES) == 1


async def test_idempotency_client_gives_up_after_its_attempts() -> None:
    server: Any = importlib.import_module("examples.idempotency")
    recipe: Any = importlib.import_module("examples.idempotency_client")
    transport = _LosesResponses(httpx.ASGITransport(server.app), lost=10)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=ACME) as client:
        with pytest.raises(httpx.ReadError):
            await recipe.post_once(client, "/payments", {"amount": 5}, attempts=3, base=0.01)
    assert transport.sent == 3
