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


@pytest.mark.slow
def test_demo_command_serves_the_orders_api() -> None:
    """What `make demo` runs: uvicorn examples.orders:app, lifespan on."""
    server = Uvicorn("examples.orders:app", "--lifespan", "on")
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=5) as client:
            health = client.get("/health")
            assert health.json() == {"status": "ok"}
            assert "ratelimit" not in health.headers  # exempt
            created = client.post("/orders", json=ORDER)
            assert created.status_code == 201
            assert created.headers["ratelimit-policy"] == '"ip-1";q=20;w=60'
            assert created.headers["ratelimit"].startswith('"ip-1";r=19;t=')
            assert client.get(f"/orders/{created.json()['id']}").status_code == 200
    finally:
        output = server.stop()
    assert "Application startup complete" in output


async def test_demo_limits_writes_per_client() -> None:
    """The demo's rate limiter: 20 orders a minute per client address, then 429."""
    from examples.orders import app

    transport = httpx.ASGITransport(app, client=("198.51.100.77", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        statuses = [(await client.post("/orders", json=ORDER)).status_code for _ in range(21)]
        listed = await client.get("/orders")
    assert statuses == [201] * 20 + [429]
    assert listed.headers["ratelimit-policy"] == '"ip-0";q=100;w=60'
