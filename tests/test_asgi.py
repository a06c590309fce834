"""ASGI plumbing: raw headers, the response observer, the bounded body reader and replay."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from apiguard._asgi import (
    BodyTooLarge,
    CannedResponse,
    ClientDisconnected,
    ReplayReceive,
    ResponseObserver,
    get_header,
    get_headers,
    read_body,
)
from tests._servers import ThreadedUvicorn

pytestmark = pytest.mark.anyio


class BodyReadingLayer:
    """A minimal layer on the core: reads the body (bounded) and replays it."""

    def __init__(self, app: Any, limit: int = 1024) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            body = await read_body(receive, self.limit)
        except BodyTooLarge:
            await CannedResponse(413, [(b"content-type", b"text/plain")], b"too large").send(send)
            return
        except ClientDisconnected:
            return
        scope.setdefault("state", {})["body_seen"] = body
        await self.app(scope, ReplayReceive(body, receive), send)


def _scripted_receive(messages: list[dict[str, Any]], calls: list[str]) -> Any:
    """A server receive: the scripted messages, then blocks until cancelled."""
    queue = list(messages)
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        calls.append("receive")
        if queue:
            return queue.pop(0)
        await never.wait()
        raise AssertionError("unreachable")

    return receive


def test_headers_are_read_from_raw_pairs() -> None:
    scope = {"headers": [(b"x-a", b"1"), (b"x-b", b"2"), (b"x-a", b"3")]}
    assert get_header(scope, b"x-a") == b"1"
    assert get_header(scope, b"x-c") is None
    assert get_headers(scope, b"x-a") == [b"1", b"3"]


async def test_observer_records_status_and_adds_headers_without_mutating() -> None:
    """Extra headers go on a copy of the start message: a reused Response is not changed."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    original_headers = [(b"content-type", b"text/plain")]
    start = {"type": "http.response.start", "status": 201, "headers": original_headers}
    observer = ResponseObserver(send, [(b"ratelimit", b'"d";r=1')])
    assert not observer.started
    await observer(start)
    await observer({"type": "http.response.body", "body": b"a", "more_body": True})
    assert observer.status == 201
    assert not observer.complete
    await observer({"type": "http.response.body", "body": b"b"})
    assert observer.complete
    assert sent[0]["headers"] == [(b"content-type", b"text/plain"), (b"ratelimit", b'"d";r=1')]
    assert original_headers == [(b"content-type", b"text/plain")]


async def test_read_body_joins_chunks() -> None:
    calls: list[str] = []
    receive = _scripted_receive(
        [
            {"type": "http.request", "body": b"ab", "more_body": True},
            {"type": "http.request", "body": b"", "more_body": True},
            {"type": "http.request", "body": b"cd", "more_body": False},
        ],
        calls,
    )
    assert await read_body(receive, 4) == b"abcd"


async def test_read_body_stops_at_the_first_chunk_over_the_limit() -> None:
    """Reading stops as soon as the limit is crossed: later chunks are never asked for."""
    calls: list[str] = []
    chunks = [{"type": "http.request", "body": b"x" * 10, "more_body": True}] * 100
    receive = _scripted_receive(chunks, calls)
    with pytest.raises(BodyTooLarge) as info:
        await read_body(receive, 25)
    assert info.value.received == 30
    assert len(calls) == 3


async def test_read_body_reports_a_disconnect() -> None:
    calls: list[str] = []
    receive = _scripted_receive(
        [{"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.disconnect"}],
        calls,
    )
    with pytest.raises(ClientDisconnected):
        await read_body(receive, 100)


async def test_replayed_body_then_disconnect_reaches_the_app() -> None:
    """After the replayed body, the app's next receive is the server's: the disconnect arrives."""
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            seen.append(message)
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        seen.append(await receive())

    calls: list[str] = []
    receive = _scripted_receive(
        [
            {"type": "http.request", "body": b"hel", "more_body": True},
            {"type": "http.request", "body": b"lo", "more_body": False},
            {"type": "http.disconnect"},
        ],
        calls,
    )
    await BodyReadingLayer(app)({"type": "http", "headers": []}, receive, None)
    assert seen == [
        {"type": "http.request", "body": b"hello", "more_body": False},
        {"type": "http.disconnect"},
    ]


async def test_streaming_response_behind_a_body_reader_does_not_spin() -> None:
    """Starlette's disconnect listener blocks on the server's receive instead of looping."""
    chunks = 5

    async def stream() -> AsyncIterator[bytes]:
        for i in range(chunks):
            await asyncio.sleep(0.01)
            yield f"chunk {i}\n".encode()

    async def endpoint(request: Request) -> Response:
        return StreamingResponse(stream(), media_type="text/plain")

    app_receives: list[str] = []

    def counting(app: Any) -> Any:
        # Between the layer and the app: a spinning listener would call this
        # without ever yielding, so fail fast instead of hanging the loop.
        async def wrapped(scope: Any, receive: Any, send: Any) -> None:
            async def counted() -> Any:
                app_receives.append("receive")
                if len(app_receives) > 50:
                    raise AssertionError("the app's receive spins")
                return await receive()

            await app(scope, counted, send)

        return wrapped

    app = BodyReadingLayer(
        counting(Starlette(routes=[Route("/stream", endpoint, methods=["POST"])]))
    )
    calls: list[str] = []
    receive = _scripted_receive(
        [{"type": "http.request", "body": b"{}", "more_body": False}], calls
    )
    body = bytearray()

    async def send(message: dict[str, Any]) -> None:
        body.extend(message.get("body", b""))

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/stream",
        "root_path": "",
        "headers": [],
        "query_string": b"",
        "asgi": {"version": "3.0"},
    }  # spec 2.0: Starlette listens
    await asyncio.wait_for(app(scope, receive, send), timeout=5)
    assert body.decode().count("chunk") == chunks
    # One read of the body, then the listener's one blocking wait: no busy loop.
    assert len(calls) <= 2
    assert len(app_receives) <= 2


async def test_oversized_body_is_refused_before_the_app() -> None:
    """A bounded reader answers for the app when the body is over its limit."""
    called = []

    async def app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - must not run
        called.append(scope)

    transport = httpx.ASGITransport(BodyReadingLayer(app, limit=10))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post("/", content=b"x" * 11)
    assert response.status_code == 413
    assert not called


def test_disconnect_after_replayed_body_through_uvicorn() -> None:
    """Through a real server: the client hangs up after its body; the app sees http.disconnect."""
    body_read = threading.Event()
    disconnected = threading.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        message = await receive()
        assert message["body"] == b"hello"
        body_read.set()
        message = await receive()
        if message["type"] == "http.disconnect":
            disconnected.set()

    with ThreadedUvicorn(BodyReadingLayer(app)) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
            assert body_read.wait(5)
        assert disconnected.wait(5)


def test_canned_response_builds_fresh_messages() -> None:
    """Outer middleware may change a message in place; the canned one is rebuilt per send."""
    canned = CannedResponse(503, [(b"retry-after", b"1")], b"busy")
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.start":
            message["headers"].append((b"x-mutated", b"1"))

    asyncio.run(canned.send(send))
    asyncio.run(canned.send(send))
    assert sent[2]["headers"] == [
        (b"retry-after", b"1"),
        (b"content-length", b"4"),
        (b"x-mutated", b"1"),
    ]
    assert canned.headers == ((b"retry-after", b"1"), (b"content-length", b"4"))


async def test_plain_response_passes_through_the_reader() -> None:
    async def endpoint(request: Request) -> Response:
        return PlainTextResponse((await request.body()).decode())

    app = BodyReadingLayer(Starlette(routes=[Route("/", endpoint, methods=["POST"])]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
        response = await client.post("/", content=b"payload")
    assert response.text == "payload"


async def test_add_headers_of_two_layers_merge_into_one_wrapper_in_order() -> None:
    """An inner layer's headers come first, then the outer one's, as with two wrappers."""
    from apiguard._asgi import AddHeaders

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    outer = AddHeaders.around(send, [(b"x-outer", b"1")])
    inner = AddHeaders.around(outer, [(b"x-inner", b"2")])
    assert inner.send is send  # one wrapper, not two
    start = {"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"0")]}
    await inner(start)
    await inner({"type": "http.response.body", "body": b"", "more_body": False})
    assert sent[0]["headers"] == [(b"x-app", b"0"), (b"x-inner", b"2"), (b"x-outer", b"1")]
    assert start["headers"] == [(b"x-app", b"0")]  # the app's message is not changed
    assert sent[1]["type"] == "http.response.body"
