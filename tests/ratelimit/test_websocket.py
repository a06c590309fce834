"""WebSocket handshakes are counted; a refused one is a 429 with Retry-After under uvicorn."""

from __future__ import annotations

import asyncio

import pytest
import websockets
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from apiguard import RateLimitMiddleware, guard
from tests._servers import ThreadedUvicorn

pytestmark = pytest.mark.anyio


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


def _app() -> Starlette:
    return guard(
        Starlette(routes=[WebSocketRoute("/live", echo)]),
        Middleware(RateLimitMiddleware, limit="2/hour"),
    )


async def test_a_handshake_over_the_limit_gets_429_with_retry_after() -> None:
    """The server sends the denial as an HTTP response (ASGI websocket.http.response)."""
    with ThreadedUvicorn(_app()) as server:
        url = server.url.replace("http://", "ws://") + "/live"
        for _ in range(2):
            async with websockets.connect(url) as connection:
                assert await asyncio.wait_for(connection.recv(), 10) == "hello"
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(url):
                pass
    response = refused.value.response
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["Content-Type"] == "application/problem+json"
    assert b"quota-exceeded" in response.body
