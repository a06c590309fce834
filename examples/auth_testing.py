"""Testing an app behind JWTAuth: mint tokens, freeze the clock."""

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from apiguard import AuthMiddleware, JWTAuth, guard
from apiguard.testing import FrozenClock, generate_key


async def me(request: Request) -> JSONResponse:
    return JSONResponse({"id": request.user.identity, "scopes": request.auth.scopes})


def create_app(keys: dict[str, object]) -> Starlette:
    """The app's factory; production passes the identity provider's keys (or a jwks_url)."""
    return guard(
        Starlette(routes=[Route("/me", me)]),
        Middleware(
            AuthMiddleware,
            authenticators=[JWTAuth(key=keys, audience="orders", algorithms=["ES256"])],
        ),
    )


# A test key pair, made once: tokens are minted with its private half.
KEY = generate_key("ES256", kid="test-key")


async def test_a_token_works_until_it_expires() -> None:
    app = create_app({"test-key": KEY.verification_key})
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with FrozenClock() as clock:
            token = KEY.token({"sub": "ada", "aud": "orders", "scope": "orders:read"})
            headers = {"Authorization": f"Bearer {token}"}
            response = await client.get("/me", headers=headers)
            assert response.json() == {"id": "ada", "scopes": ["orders:read"]}
            clock.advance(306)  # past exp (minted for 300 s) and the 5 s leeway
            response = await client.get("/me", headers=headers)
            assert response.status_code == 401
