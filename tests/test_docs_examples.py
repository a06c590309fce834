"""Every example in the docs is a file in examples/, and every one of them runs."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from apiguard import set_problem_formatter

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.anyio


def test_docs_have_no_inline_python() -> None:
    """Code blocks in the docs include example files, so that the tests run them."""
    offenders = [
        f"{page.relative_to(ROOT)}: {block.splitlines()[0]}"
        for page in (ROOT / "docs").rglob("*.md")
        for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
        if not block.strip().startswith('--8<-- "')
    ]
    assert offenders == []


def test_every_included_example_exists_and_is_tested() -> None:
    included = set()
    for page in (ROOT / "docs").rglob("*.md"):
        included |= {m.split(":")[0] for m in re.findall(r'--8<-- "([^"]+)"', page.read_text())}
    assert included
    source = Path(__file__).read_text()
    tested = {a or b for a, b in re.findall(r'examples\.(\w+)|_client\("(\w+)"\)', source)}
    assert {name.removesuffix(".py") for name in included} <= tested | {"orders"}


async def _client(module: str) -> httpx.AsyncClient:
    app = importlib.import_module(f"examples.{module}").app
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api.example.com")


async def test_quickstart() -> None:
    async with await _client("quickstart") as client:
        assert (await client.get("/orders/7")).json() == {"id": 7}
        assert (await client.get("http://evil.example/orders/7")).status_code == 400


def test_misconfigured() -> None:
    importlib.import_module("examples.misconfigured")  # asserts the message itself


async def test_compose_gives_one_stack_three_ways() -> None:
    module = importlib.import_module("examples.compose")
    stacks = []
    for app in (module.app, module.listed, module.added):
        stack = app.build_middleware_stack()
        names = []
        while hasattr(stack, "app"):
            names.append(type(stack).__name__)
            stack = stack.app
        stacks.append(names)
    assert stacks[0] == stacks[1] == stacks[2]
    assert stacks[0].index("TrustedHostMiddleware") < stacks[0].index("GZipMiddleware")


async def test_custom_layer_refuses_routes_under_maintenance() -> None:
    async with await _client("custom_layer") as client:
        assert (await client.get("/orders")).status_code == 200
        refused = await client.post("/orders")
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "300"
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["detail"] == "This resource is under maintenance."


async def test_context_endpoint_reads_decisions() -> None:
    async with await _client("context_endpoint") as client:
        response = await client.get("/orders/3")
    assert response.json() == {
        "route": "/orders/{order_id}",
        "decisions": [["maintenance", "allow"]],
    }


async def test_problem_formatter_applies_to_every_layer() -> None:
    from examples.custom_layer import app

    importlib.import_module("examples.problem_formatter")
    try:
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.post("/orders")
    finally:
        set_problem_formatter(None)
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "error": {
            "status": 503,
            "code": "Service Unavailable",
            "message": "This resource is under maintenance.",
            "path": "/orders",
        }
    }


def test_frozen_clock_example() -> None:
    module: Any = importlib.import_module("examples.frozen_clock")
    module.test_a_minute_passes_at_once()


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
