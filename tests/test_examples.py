"""The examples run: in process, and the demo under a real uvicorn."""

from __future__ import annotations

import httpx
import pytest

from tests._servers import Uvicorn

pytestmark = pytest.mark.anyio

ORDER = {
    "customer_email": "ada@example.com",
    "lines": [{"sku": "BOOK-1", "quantity": 2, "unit_price": "12.50"}],
}


async def test_orders_api_round_trip() -> None:
    """Create, read, list, cancel and delete an order through the ASGI app."""
    from examples.orders import create_app

    transport = httpx.ASGITransport(create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        created = await client.post("/orders", json=ORDER)
        assert created.status_code == 201
        order = created.json()
        assert order["total"] == "25.00"
        assert (await client.get(f"/orders/{order['id']}")).json()[
            "customer_email"
        ] == "ada@example.com"
        assert [o["id"] for o in (await client.get("/orders?state=open")).json()] == [order["id"]]
        assert (await client.post(f"/orders/{order['id']}/cancel")).json()["status"] == "cancelled"
        assert (await client.delete(f"/orders/{order['id']}")).status_code == 204
        assert (await client.get(f"/orders/{order['id']}")).status_code == 404
        assert (await client.post("/orders", json={"lines": []})).status_code == 422


WRITER = {"x-api-key": "demo-writer-4b8d1e6f"}
READER = {"x-api-key": "demo-reader-7f3a9c2e"}


async def test_demo_needs_an_api_key_with_the_route_scopes() -> None:
    """The demo's authentication: public health and docs, scopes per route."""
    from examples.orders import app

    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/openapi.json")).status_code == 200
        refused = await client.get("/orders")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == 'ApiKey realm="api"'
        assert (await client.get("/orders", headers=READER)).status_code == 200
        assert (await client.post("/orders", json=ORDER, headers=READER)).status_code == 403
        assert (await client.post("/orders", json=ORDER, headers=WRITER)).status_code == 201


@pytest.mark.slow
def test_demo_command_serves_the_orders_api() -> None:
    """What `make demo` runs: uvicorn examples.orders:app, lifespan on."""
    server = Uvicorn("examples.orders:app", "--lifespan", "on")
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=5) as client:
            assert client.get("/health").json() == {"status": "ok"}
            assert client.post("/orders", json=ORDER).status_code == 401
            created = client.post("/orders", json=ORDER, headers=WRITER)
            assert created.status_code == 201
            order_id = created.json()["id"]
            assert client.get(f"/orders/{order_id}", headers=READER).status_code == 200
    finally:
        output = server.stop()
    assert "Application startup complete" in output
