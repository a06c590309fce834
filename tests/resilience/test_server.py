"""Timeouts and retries under a real uvicorn: on time, worker freed, thread pool bounded."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.middleware import Middleware

from apiguard import RetryMiddleware, TimeoutMiddleware, guard
from tests._servers import ThreadedUvicorn
from tests.resilience._apps import Act, Script, Watch, eventually, make_app

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TIMEOUT = 0.5
#: A bound no loaded machine reaches, far below what the endpoints would take.
ON_TIME = TIMEOUT + 8.0


def layer(app: Any) -> TimeoutMiddleware:
    stack = app.middleware_stack
    while not isinstance(stack, TimeoutMiddleware):
        stack = stack.app
    return stack


@pytest.fixture
def script() -> Iterator[Script]:
    script = Script()
    yield script
    script.release.set()  # let a stuck `def` endpoint's thread end


@pytest.fixture
def served(script: Script) -> Iterator[tuple[Any, str]]:
    app = make_app(script)
    guard(
        app,
        Middleware(RetryMiddleware, backoff=0.01),
        Middleware(TimeoutMiddleware, timeout=TIMEOUT),
    )
    # h11, uvicorn's own parser, whether or not httptools is installed: with
    # httptools, bytes after a body are parsed at once as a next request, and
    # the server answers that 400 before the app's answer to the first.
    with ThreadedUvicorn(app, timeout_graceful_shutdown=1, http="h11") as server:
        yield app, server.url
        script.release.set()


async def timed_get(http: httpx.AsyncClient, path: str) -> tuple[int, float]:
    clock = Watch()
    response = await http.get(path)
    return response.status_code, clock.elapsed


async def test_hanging_async_endpoints_get_504_on_time_and_free_the_worker(
    served: tuple[Any, str], script: Script
) -> None:
    _, url = served
    script.plan("/items", Act(hang=True))
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        hung = [asyncio.create_task(timed_get(http, "/items")) for _ in range(20)]
        await asyncio.sleep(0.05)
        assert (await http.get("/fast")).status_code == 200  # served meanwhile
        answers = await asyncio.gather(*hung)
    assert {status for status, _ in answers} == {504}
    assert max(elapsed for _, elapsed in answers) < ON_TIME
    # Each was cancelled, not left running: with retries, 3 attempts a request at most.
    assert script.cancelled["/items"] == script.calls["/items"]


async def test_stuck_def_endpoints_get_504_on_time_and_the_thread_pool_stays_bounded(
    served: tuple[Any, str], script: Script
) -> None:
    """Anyio's 40 tokens bound the stuck threads; async endpoints keep being served."""
    app, url = served
    async with httpx.AsyncClient(
        base_url=url, timeout=30, limits=httpx.Limits(max_connections=200)
    ) as http:
        baseline = (await http.get("/stats")).json()["threads"]
        hung = [asyncio.create_task(timed_get(http, "/sync/hang")) for _ in range(50)]
        answers = await asyncio.gather(*hung)
        assert {status for status, _ in answers} == {504}
        assert max(elapsed for _, elapsed in answers) < ON_TIME
        during = (await http.get("/stats")).json()["threads"]
        assert during - baseline <= 40
        # The pool is spent: a `def` endpoint waits for a token, and gets its 504 on time.
        status, elapsed = await timed_get(http, "/sync/fast")
        assert (status, elapsed < ON_TIME) == (504, True)
        assert (await http.get("/fast")).status_code == 200
        assert layer(app).overdue >= 1
        script.release.set()
        assert await eventually(lambda: layer(app).overdue == 0)
        assert (await http.get("/sync/fast")).status_code == 200
    # A stuck request is not retried: its thread would be waited for.
    assert script.calls["/sync/hang"] <= 40


async def test_a_def_endpoint_gets_its_504_while_its_thread_still_runs(
    served: tuple[Any, str], script: Script
) -> None:
    _, url = served
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        status, elapsed = await timed_get(http, "/sync/hang")
        assert (status, elapsed < ON_TIME) == (504, True)
        assert script.finished["/sync/hang"] == 0  # answered before the thread ended
        script.release.set()
        assert await eventually(lambda: script.finished["/sync/hang"] == 1)


async def test_a_cut_stream_is_seen_incomplete_by_the_client(
    served: tuple[Any, str], script: Script
) -> None:
    _, url = served
    script.plan("/items", Act(stream=True, stream_sleep=30))
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        clock = Watch()
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get("/items")
        assert clock.elapsed < ON_TIME
        assert (await http.get("/fast")).status_code == 200


async def raw(url: str, request: bytes, *, read: bool = True) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    data = b""
    if read:
        data = await asyncio.wait_for(reader.read(65536), 10)
    writer.close()
    await writer.wait_closed()
    return data


async def test_a_client_that_disconnects_while_the_app_runs(
    served: tuple[Any, str], script: Script
) -> None:
    """The app is cancelled at the deadline, not left hanging; the server goes on."""
    _, url = served
    script.plan("/items", Act(hang=True))
    await raw(url, b"GET /items HTTP/1.1\r\nHost: t\r\n\r\n", read=False)
    assert await eventually(lambda: script.cancelled["/items"] == 1, ON_TIME)
    assert script.calls["/items"] == 1  # never retried for a client that left
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        assert (await http.get("/fast")).status_code == 200


async def test_a_body_shorter_than_its_length_then_a_disconnect(
    served: tuple[Any, str], script: Script
) -> None:
    _, url = served
    head = b"PUT /items/1 HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n"
    await raw(url, head + b"only ten b", read=False)
    assert await eventually(lambda: script.calls["PUT /items/{item_id}"] > 0, ON_TIME)
    await asyncio.sleep(TIMEOUT * 2)
    assert script.calls["PUT /items/{item_id}"] <= 1  # a body cut short is not replayed
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        assert (await http.get("/fast")).status_code == 200


async def test_a_body_longer_than_its_length_is_read_as_declared(
    served: tuple[Any, str], script: Script
) -> None:
    """The server reads what Content-Length says; the rest is a malformed next request."""
    _, url = served
    script.plan("PUT /items/{item_id}", Act(status=503), Act())
    head = b"PUT /items/1 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n"
    answer = await raw(url, head + b"12345 and then garbage\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200")
    assert script.bodies[-2:] == [b"12345", b"12345"]  # retried with exactly what was read


async def test_500_concurrent_requests_through_uvicorn_keep_the_bound_and_spare_health() -> None:
    """The shedder under a real server: 20 in flight, 480 shed with Retry-After, probes served."""
    import threading
    from collections import Counter

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    from apiguard import ConcurrencyLimitMiddleware, HealthMiddleware

    gate = threading.Event()
    seen = {"running": 0, "most": 0}

    async def hold(request: Request) -> Response:
        seen["running"] += 1
        seen["most"] = max(seen["most"], seen["running"])
        try:
            # The server's loop runs in another thread: a threading.Event, polled.
            while not gate.is_set():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        finally:
            seen["running"] -= 1
        return PlainTextResponse("done")

    app = Starlette(routes=[Route("/work", hold)])
    guard(
        app,
        Middleware(ConcurrencyLimitMiddleware, max_in_flight=20),
        Middleware(HealthMiddleware),  # inside: its routes are critical to the shedder
    )
    limits = httpx.Limits(max_connections=600, max_keepalive_connections=600)
    with ThreadedUvicorn(app, backlog=2048) as server:
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as http:
            try:
                pending = [asyncio.ensure_future(http.get("/work")) for _ in range(500)]
                assert await eventually(lambda: sum(p.done() for p in pending) >= 480, 60)
                # A client of their own: a pooled connection idle past uvicorn's
                # keep-alive timeout (a slow machine) may be closed as it is reused.
                async with httpx.AsyncClient(base_url=server.url, timeout=60) as fresh:
                    probes = [await fresh.get(path) for path in ("/health/live", "/health/ready")]
            finally:
                gate.set()
            answered = await asyncio.gather(*pending)
    assert Counter(r.status_code for r in answered) == {200: 20, 503: 480}
    assert seen["most"] == 20
    assert {r.headers["retry-after"] for r in answered if r.status_code == 503} == {"1"}
    assert [p.status_code for p in probes] == [200, 200]
