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


async def test_demo_validates_orders_before_fastapi() -> None:
    """The demo's validation layer answers bad orders in problem details."""
    from examples.orders import app

    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        created = await client.post("/orders", json=ORDER)
        refused = await client.post("/orders", json={"lines": []})
        too_big = await client.post("/orders", json={**ORDER, "note": "x" * 70_000})
        not_json = await client.post("/orders", content=b"lines=1")
    assert created.status_code == 201
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    assert {e["loc"][1] for e in refused.json()["errors"]} == {"customer_email", "lines"}
    assert too_big.status_code == 413
    assert not_json.status_code == 415


@pytest.mark.slow
def test_demo_command_serves_the_orders_api() -> None:
    """What `make demo` runs: uvicorn examples.orders:app, lifespan on."""
    server = Uvicorn("examples.orders:app", "--lifespan", "on")
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=5) as client:
            assert client.get("/health").json() == {"status": "ok"}
            created = client.post("/orders", json=ORDER)
            assert created.status_code == 201
            assert client.get(f"/orders/{created.json()['id']}").status_code == 200
            refused = client.post("/orders", json={"lines": []})
            assert refused.status_code == 422
            assert refused.headers["content-type"] == "application/problem+json"
    finally:
        output = server.stop()
    assert "Application startup complete" in output
