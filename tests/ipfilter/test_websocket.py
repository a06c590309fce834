"""WebSocket handshakes are filtered like requests, under a real uvicorn."""

from __future__ import annotations

import asyncio

import pytest
import websockets
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from apiguard import IPFilterMiddleware, guard
from apiguard.ipfilter import IPRules
from tests._servers import ThreadedUvicorn

pytestmark = pytest.mark.anyio


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


async def page(request: object) -> PlainTextResponse:
    return PlainTextResponse("page")


def _app() -> Starlette:
    # uvicorn's peer is 127.0.0.1: the feed is for another network, the page is open.
    return guard(
        Starlette(routes=[Route("/live", page), WebSocketRoute("/live", echo)]),
        Middleware(
            IPFilterMiddleware,
            routes={"WEBSOCKET /live": IPRules(allow=["10.0.0.0/8"])},
        ),
    )


async def test_a_refused_handshake_gets_403_problem_details() -> None:
    with ThreadedUvicorn(_app()) as server:
        url = server.url.replace("http://", "ws://") + "/live"
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(url):
                pass
        page_status = await asyncio.to_thread(_get, server.url + "/live")
    response = refused.value.response
    assert response.status_code == 403
    assert response.headers["Content-Type"] == "application/problem+json"
    assert b'"status":403' in response.body
    assert page_status == 200  # the HTTP route on the same path has no rule


async def test_an_allowed_handshake_connects() -> None:
    app = guard(
        Starlette(routes=[WebSocketRoute("/live", echo)]),
        Middleware(IPFilterMiddleware, allow=["127.0.0.0/8", "::1"]),
    )
    with ThreadedUvicorn(app) as server:
        url = server.url.replace("http://", "ws://") + "/live"
        async with websockets.connect(url) as connection:
            assert await asyncio.wait_for(connection.recv(), 10) == "hello"


def _get(url: str) -> int:
    import httpx

    return httpx.get(url, timeout=10).status_code
