"""by_principal() through the real authentication layer: namespaces that cannot collide."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from apiguard import APIKeyAuth, AuthMiddleware, JWTAuth, Principal, guard
from apiguard.ratelimit import RateLimitMiddleware, by_principal
from apiguard.testing import generate_key

pytestmark = pytest.mark.anyio

SIGNER = generate_key("HS256", kid=None)


async def _feed(request: Request) -> Response:
    return PlainTextResponse("ok")


def _app(**options: object) -> Starlette:
    keys = {
        "k-attacker-000001": Principal(id="ip:203.0.113.9"),
        "k-acme-0000000001": Principal(id="acme"),
    }
    return guard(
        Starlette(routes=[Route("/feed", _feed)]),
        Middleware(
            AuthMiddleware,
            authenticators=[
                APIKeyAuth(keys=keys),
                JWTAuth(key=SIGNER.private_key, algorithms=["HS256"], audience="api"),
            ],
            optional=["/feed"],
        ),
        Middleware(RateLimitMiddleware, key=by_principal(), **options),
    )


def _client(app: Starlette, peer: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app, client=(peer, 4000))
    return httpx.AsyncClient(transport=transport, base_url="http://api")


def _bearer(subject: str) -> dict[str, str]:
    return {"authorization": "Bearer " + SIGNER.token({"sub": subject, "aud": "api"})}


async def test_a_principal_named_like_an_address_cannot_use_up_its_anonymous_bucket() -> None:
    """Review finding 11: principal id 'ip:203.0.113.9' shared that address's bucket."""
    app = _app(limit="5/minute")
    async with _client(app, "198.51.100.1") as attacker, _client(app, "203.0.113.9") as victim:
        codes = [
            (await attacker.get("/feed", headers={"x-api-key": "k-attacker-000001"})).status_code
            for _ in range(6)
        ]
        assert codes == [200] * 5 + [429]
        assert (await victim.get("/feed")).status_code == 200


async def test_a_token_subject_equal_to_an_api_key_principal_has_its_own_bucket() -> None:
    app = _app(limit="2/minute")
    async with _client(app, "198.51.100.1") as http:
        for _ in range(2):
            assert (await http.get("/feed", headers=_bearer("acme"))).status_code == 200
        assert (await http.get("/feed", headers=_bearer("acme"))).status_code == 429
        assert (await http.get("/feed", headers={"x-api-key": "k-acme-0000000001"})).is_success


async def test_overrides_name_principals_by_id_and_anonymous_callers_by_address() -> None:
    app = _app(
        limit="1/minute",
        overrides={"acme": "3/minute", "ip:203.0.113.9": "2/minute"},
    )
    async with _client(app, "198.51.100.1") as other, _client(app, "203.0.113.9") as anon:
        acme = [
            (await other.get("/feed", headers={"x-api-key": "k-acme-0000000001"})).status_code
            for _ in range(4)
        ]
        assert acme == [200, 200, 200, 429]
        # the address's override is not the principal's, though its id reads the same
        spoof = [
            (await other.get("/feed", headers={"x-api-key": "k-attacker-000001"})).status_code
            for _ in range(2)
        ]
        assert spoof == [200, 429]
        assert [(await anon.get("/feed")).status_code for _ in range(3)] == [200, 200, 429]
