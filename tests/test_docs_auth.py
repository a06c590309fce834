"""The authentication and IP-filter guides' examples.

JWT from a real OpenID Connect key server, API keys, the providers' set-ups,
CORS outside authentication, tokens in tests; and filtering by the client
behind a proxy.
"""

from __future__ import annotations

import importlib
from typing import Any

import httpx
import pytest

from tests._docs import _client

pytestmark = pytest.mark.anyio


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


async def test_ipfilter_example_filters_by_the_client_behind_the_proxy() -> None:
    module = importlib.import_module("examples.ipfilter")

    async def status(peer: str, path: str, forwarded: str | None = None, post: bool = False) -> int:
        headers = {"x-forwarded-for": forwarded} if forwarded else {}
        transport = httpx.ASGITransport(module.app, client=(peer, 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            method = "POST" if post else "GET"
            return (await client.request(method, path, headers=headers)).status_code

    balancer = "10.0.0.7"
    assert await status(balancer, "/orders", "203.0.113.9") == 200
    assert await status(balancer, "/orders", "192.0.2.4") == 403  # on the blocklist
    assert await status(balancer, "/admin/stats", "10.20.3.4") == 200
    assert await status(balancer, "/admin/stats", "10.20.99.4") == 403  # guest Wi-Fi
    assert await status(balancer, "/admin/stats", "203.0.113.9") == 403
    assert await status(balancer, "/webhooks/payments", "198.51.100.20", post=True) == 200
    # Not the balancer: its X-Forwarded-For is ignored, and it is judged as itself.
    assert await status("203.0.113.9", "/admin/stats", "10.20.3.4") == 403
