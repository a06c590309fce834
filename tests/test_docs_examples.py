"""Every example in the docs is a file in examples/, and every one of them runs."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

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
    key = {"x-api-key": "k-partner-0001"}
    async with await _client("quickstart") as client:
        assert (await client.get("/orders/7")).status_code == 401
        read = await client.get("/orders/7", headers=key)
        assert read.json() == {"id": 7}
        assert read.headers.get_list("ratelimit-policy") == [
            '"plan-1";q=1000;w=60',
            '"ip-0";q=100;w=60',
        ]
        created = await client.post("/orders", json={"sku": "A-1", "quantity": 2}, headers=key)
        assert created.status_code == 201
        refused = await client.post("/orders", json={"sku": "A-1"}, headers=key)
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["loc"] == ["body", "quantity"]


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


async def test_mounted_app_keeps_the_wrapped_apps_policies() -> None:
    async with await _client("mounted_app") as client:
        public = await client.get("/api/public")
        reader = await client.get("/api/admin/stats", headers={"x-api-key": "k-reader-000001"})
        admin = await client.get("/api/admin/stats", headers={"x-api-key": "k-admin-0000001"})
    assert (public.status_code, public.text) == (200, "/api/public for anyone")
    assert reader.status_code == 403
    assert (admin.status_code, admin.text) == (200, "/api/admin/stats for admin")


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


@pytest.mark.usefixtures("mid_window_wall_clock")  # counts within one window
async def test_ratelimit_basic_limits_routes_and_exempts_health() -> None:
    async with await _client("ratelimit_basic") as client:
        assert (await client.get("/health")).status_code == 200
        assert "ratelimit" not in (await client.get("/health")).headers
        report = await client.get("/reports")
        assert report.headers["ratelimit"].startswith('"ip-0";r=90;')
        for _ in range(10):
            assert (await client.post("/orders")).status_code == 200
        refused = await client.post("/orders")
    assert refused.status_code == 429
    assert refused.json()["violated-policies"] == ["ip-1"]


async def test_ratelimit_plans_gives_each_plan_its_quota() -> None:
    async with await _client("ratelimit_plans") as client:
        free = await client.get("/orders", headers={"x-api-key": "k-free"})
        pro = await client.get("/orders", headers={"x-api-key": "k-pro"})
        anonymous = await client.get("/orders")
    assert free.headers["ratelimit-policy"].count('"plan-') == 2  # 10/minute; 1000/day
    assert '"plan-4";q=5000;w=60' in pro.headers["ratelimit-policy"]  # the override
    assert '"plan-0";q=5;w=60' in anonymous.headers["ratelimit-policy"]


@pytest.mark.usefixtures("mid_window_wall_clock")  # counts within one window
async def test_ratelimit_shadow_reports_without_refusing() -> None:
    async with await _client("ratelimit_shadow") as client:
        answers = [(await client.get("/orders")) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.json()["would_refuse"] for a in answers] == [False, False, True]


async def test_ratelimit_redis_example_uses_the_redis_it_is_given(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, close_stores: list[object]
) -> None:
    import sys

    monkeypatch.setenv("RATELIMIT_REDIS", redis_url)
    sys.modules.pop("examples.ratelimit_redis", None)
    async with await _client("ratelimit_redis") as client:
        # The first request opens the connection and loads the script within
        # the example's 0.25 s budget, which a starved CI machine can exceed
        # (the layer then fails open, by design): judge the second.
        await client.get("/orders")
        response = await client.get("/orders")
    sys.modules.pop("examples.ratelimit_redis", None)
    assert response.status_code == 200
    assert response.headers["ratelimit-policy"] == '"ip-0";q=10;w=1, "ip-1";q=1000;w=3600'
    assert response.headers["ratelimit"].startswith('"ip-0";r=')
    keys = redis.Redis.from_url(redis_url)
    try:
        assert keys.dbsize() > 0  # the counters are in the Redis it was given
    finally:
        keys.close()


# --- authentication -------------------------------------------------------------------


@pytest.fixture(scope="module")
def identity_provider() -> Any:
    """A real OpenID Connect key server on loopback, as the auth examples' issuer."""
    from apiguard.testing import generate_key
    from tests.auth._keyserver import KeyServer

    server = KeyServer(generate_key("RS256", kid="idp-1")).start()
    yield server
    server.stop()


async def test_auth_example_jwt_api_key_public_and_scopes(
    identity_provider: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setenv("ORDERS_ISSUER", identity_provider.issuer)
    sys.modules.pop("examples.auth", None)
    module = importlib.import_module("examples.auth")
    [key] = identity_provider.keys
    claims = {"sub": "ada", "aud": "orders", "iss": identity_provider.issuer}
    reader = {"authorization": f"Bearer {key.token({**claims, 'scope': 'orders:read'})}"}
    writer = {"authorization": f"Bearer {key.token({**claims, 'scope': 'orders:write'})}"}
    partner = {"x-api-key": "pk-2c9f4e7a1b8d3f6a"}
    transport = httpx.ASGITransport(module.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/orders")).status_code == 401
        assert (await client.get("/orders", headers=reader)).json() == {
            "caller": "ada",
            "plan": None,
            "via": "jwt",
        }
        assert (await client.get("/orders", headers=partner)).json()["plan"] == "pro"
        assert (await client.post("/orders", headers=reader)).status_code == 403
        assert (await client.post("/orders", headers=writer)).status_code == 201
    assert identity_provider.discoveries == 1


def test_auth_providers_are_configured_without_fetching() -> None:
    from apiguard import JWTAuth
    from apiguard.auth.jwks import RemoteKeys

    module = importlib.import_module("examples.auth_providers")
    for name in ("auth0", "keycloak", "entra", "cognito"):
        auth = getattr(module, name)
        assert isinstance(auth, JWTAuth)
        assert isinstance(auth.keys, RemoteKeys)
        assert auth.keys.fetches == 0


def test_auth_provider_hooks_map_claims() -> None:
    from apiguard import Principal

    module = importlib.import_module("examples.auth_providers")
    keycloak = module.keycloak_roles(
        Principal(id="ada", scopes=["profile"], claims={"realm_access": {"roles": ["admin"]}})
    )
    assert keycloak.scopes == {"profile", "role:admin"}
    access = {"token_use": "access", "client_id": "4q7o1ad2example"}
    assert module.cognito_access_tokens(Principal(id="app", claims=access)) is not None
    id_token = {**access, "token_use": "id"}
    assert module.cognito_access_tokens(Principal(id="app", claims=id_token)) is None


async def test_auth_api_keys_from_a_database() -> None:
    async with await _client("auth_api_keys_db") as client:
        found = await client.get("/whoami", headers={"x-api-key": "pk-live-7d1e3b9a5c2f"})
        assert found.json() == {"id": "acme", "plan": "pro"}
        assert (await client.get("/whoami", headers={"x-api-key": "pk-live-0"})).status_code == 401


async def test_auth_cors_outside_authentication() -> None:
    origin = {"origin": "https://shop.example"}
    async with await _client("auth_cors") as client:
        preflight = await client.options(
            "/orders", headers={**origin, "access-control-request-method": "POST"}
        )
        assert preflight.status_code == 200
        refused = await client.post("/orders", headers=origin)
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == "https://shop.example"


async def test_auth_testing_example() -> None:
    module: Any = importlib.import_module("examples.auth_testing")
    await module.test_a_token_works_until_it_expires()


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


def test_readme_snippet_builds() -> None:
    """The README's wrapping example is real code against the real API."""
    block = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block is not None
    namespace: dict[str, Any] = {}
    exec(  # noqa: S102 - our own README, run as the docs promise
        "from fastapi import FastAPI\n"
        "from pydantic import BaseModel\n"
        "from starlette.middleware import Middleware\n"
        "from apiguard import *\n"
        "class OrderIn(BaseModel):\n    sku: str\n" + block.group(1),
        namespace,
    )
    app = namespace["app"]
    assert [m.cls.__name__ for m in app.user_middleware] == [
        "RateLimitMiddleware",
        "AuthMiddleware",
        "RateLimitMiddleware",
        "ValidationMiddleware",
    ]
    assert sum(1 for line in block.group(1).splitlines() if line.strip()) < 15
