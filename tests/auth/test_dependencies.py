"""The FastAPI dependencies that hand an endpoint the current principal."""

from __future__ import annotations

from typing import Annotated

import pytest
from fastapi import Depends, FastAPI, WebSocket
from starlette.middleware import Middleware

from apiguard import APIKeyAuth, AuthMiddleware, Principal, guard
from apiguard.auth import current_principal, optional_principal
from tests.auth._helpers import call, websocket

pytestmark = pytest.mark.anyio

KEY = "k-5e1d9c3b7a2f"


def fastapi_app(*, layer: bool = True) -> FastAPI:
    app = FastAPI()

    @app.get("/me")
    async def me(
        principal: Annotated[Principal, Depends(current_principal)],
    ) -> dict[str, str | None]:
        return {"id": principal.id, "plan": principal.plan}

    @app.get("/maybe")
    async def maybe(
        principal: Annotated[Principal | None, Depends(optional_principal)],
    ) -> dict[str, str]:
        return {"id": principal.id if principal else "anonymous"}

    @app.get("/public-me")
    async def public_me(
        principal: Annotated[Principal, Depends(current_principal)],
    ) -> dict[str, str]:
        return {"id": principal.id}

    @app.websocket("/ws")
    async def ws(
        socket: WebSocket, principal: Annotated[Principal, Depends(current_principal)]
    ) -> None:
        await socket.accept()
        await socket.send_text(principal.id)
        await socket.close()

    if not layer:
        return app
    return guard(
        app,
        Middleware(
            AuthMiddleware,
            authenticators=[APIKeyAuth(keys={KEY: Principal(id="partner", plan="pro")})],
            public=["GET /public-me"],
            optional=["GET /maybe"],
        ),
    )


async def test_current_principal_is_the_authenticated_caller() -> None:
    response = await call(fastapi_app(), "/me", {"x-api-key": KEY})
    assert response.json() == {"id": "partner", "plan": "pro"}


async def test_optional_principal_is_none_for_anonymous_callers() -> None:
    app = fastapi_app()
    assert (await call(app, "/maybe")).json() == {"id": "anonymous"}
    assert (await call(app, "/maybe", {"x-api-key": KEY})).json() == {"id": "partner"}


async def test_current_principal_refuses_where_the_layer_let_anonymous_through() -> None:
    response = await call(fastapi_app(), "/public-me")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_current_principal_refuses_without_the_layer() -> None:
    """Fail closed: a dependency on a principal never yields one the layer did not set."""
    assert (await call(fastapi_app(layer=False), "/me")).status_code == 401


async def test_current_principal_in_a_websocket_endpoint() -> None:
    sent = await websocket(fastapi_app(), [(b"x-api-key", KEY.encode())])
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["text"] == "partner"
    refused = await websocket(fastapi_app(layer=False), [])
    assert refused[0]["type"] == "websocket.close"
    assert refused[0]["code"] == 1008
