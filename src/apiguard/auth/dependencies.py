"""FastAPI (and plain Starlette) helpers that hand an endpoint the current principal."""

from __future__ import annotations

from starlette.exceptions import HTTPException, WebSocketException
from starlette.requests import HTTPConnection
from starlette.status import WS_1008_POLICY_VIOLATION

from apiguard.context import get_context
from apiguard.principal import Principal

__all__ = ["current_principal", "optional_principal"]


def optional_principal(connection: HTTPConnection) -> Principal | None:
    """The caller, or `None` when anonymous (a public or optional route).

    Use as a FastAPI dependency
    (`Annotated[Principal | None, Depends(optional_principal)]`) or call it
    with a Starlette `Request` or `WebSocket`.
    """
    return get_context(connection.scope).principal


def current_principal(connection: HTTPConnection) -> Principal:
    """The caller, as [`AuthMiddleware`][apiguard.AuthMiddleware] established it.

    Use as a FastAPI dependency:
    `principal: Annotated[Principal, Depends(current_principal)]`.
    On a route where the layer let an anonymous caller through (listed in
    `public` or `optional`), or without the layer, it refuses the request:
    401 with a `WWW-Authenticate: Bearer` challenge (a WebSocket is closed
    with 1008).

    Raises:
        HTTPException: 401, no authenticated caller.
        WebSocketException: 1008, no authenticated caller on a WebSocket.

    Examples:
        >>> from typing import Annotated
        >>> from fastapi import Depends, FastAPI
        >>> app = FastAPI()
        >>> @app.get("/me")
        ... async def me(
        ...     principal: Annotated[Principal, Depends(current_principal)],
        ... ) -> dict[str, str]:
        ...     return {"id": principal.id}
    """
    principal = get_context(connection.scope).principal
    if principal is None:
        if connection.scope["type"] == "websocket":
            raise WebSocketException(code=WS_1008_POLICY_VIOLATION)
        raise HTTPException(401, "Not authenticated", headers={"WWW-Authenticate": "Bearer"})
    return principal
