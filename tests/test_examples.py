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


async def test_demo_validates_orders_before_fastapi() -> None:
    """The demo's validation layer answers bad orders in problem details."""
    from examples.orders import app

    transport = httpx.ASGITransport(app, client=("192.0.2.40", 5000))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://t", headers=WRITER
    ) as client:
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
            health = client.get("/health")
            assert health.json() == {"status": "ok"}
            assert "ratelimit" not in health.headers  # exempt from the IP limit, and public
            assert client.post("/orders", json=ORDER).status_code == 401
            created = client.post("/orders", json=ORDER, headers=WRITER)
            assert created.status_code == 201
            # The IP limiter is outside authentication: the 401 counted too.
            # The plan limiter, inside, adds its own list members (pro: 600/minute).
            policies = created.headers.get_list("ratelimit-policy")
            assert policies == ['"plan-1";q=600;w=60', '"ip-1";q=20;w=60']
            states = created.headers.get_list("ratelimit")
            assert states[0].startswith('"plan-1";r=599;t=')
            assert states[1].startswith('"ip-1";r=18;t=')
            order_id = created.json()["id"]
            assert client.get(f"/orders/{order_id}", headers=READER).status_code == 200
            refused = client.post("/orders", json={"lines": []}, headers=WRITER)
            assert refused.status_code == 422
            assert refused.headers["content-type"] == "application/problem+json"
    finally:
        output = server.stop()
    assert "Application startup complete" in output


@pytest.mark.usefixtures("mid_window_wall_clock")  # 21 requests within one window
async def test_demo_limits_writes_per_client() -> None:
    """The demo's rate limiters: 20 orders a minute per address, and quotas per plan."""
    from examples.orders import app

    transport = httpx.ASGITransport(app, client=("198.51.100.77", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        statuses = [
            (await client.post("/orders", json=ORDER, headers=WRITER)).status_code
            for _ in range(21)
        ]
        listed = await client.get("/orders", headers=READER)
    assert statuses == [201] * 20 + [429]
    # The reader's key is on the free plan: 60 a minute, beside the address's 100.
    assert listed.headers.get_list("ratelimit-policy") == [
        '"plan-0";q=60;w=60',
        '"ip-0";q=100;w=60',
    ]


async def test_demo_serves_prometheus_metrics() -> None:
    """The demo's /metrics: request durations by route template, refusals by layer, usage."""
    from examples.orders import app

    transport = httpx.ASGITransport(app, client=("192.0.2.41", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/orders/12345", headers=READER)).status_code == 404
        assert (await client.get("/orders")).status_code == 401
        scraped = await client.get("/metrics")
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    text = scraped.text
    assert 'http_route="/orders/{order_id}"' in text
    assert "http_server_request_duration_seconds_bucket" in text
    assert 'apiguard_reason="missing_credential"' in text
    assert 'apiguard_consumer="free"' in text
    assert "/orders/12345" not in text  # templates, never paths
    assert 'http_route="/metrics"' not in text  # excluded


@pytest.mark.slow
def test_demo_prints_its_traces_on_request() -> None:
    """`APIGUARD_DEMO_TRACES=console make demo`: each request's span on the console."""
    server = Uvicorn(
        "examples.orders:app", "--lifespan", "on", env={"APIGUARD_DEMO_TRACES": "console"}
    )
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=5) as client:
            assert client.get("/orders", headers=READER).status_code == 200
            assert client.get("/orders/7").status_code == 401
            scraped = client.get("/metrics").text
    finally:
        output = server.stop()
    assert '"name": "GET /orders"' in output
    assert '"name": "GET /orders/{order_id}"' in output
    assert '"apiguard.reject.reason": "missing_credential"' in output
    assert "http_server_request_duration_seconds_count" in scraped
