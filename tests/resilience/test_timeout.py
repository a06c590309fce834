"""TimeoutMiddleware in process: budgets, the deadline, 504s, cut streams, fallbacks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from apiguard import (
    CallableFallback,
    ConfigError,
    Fallback,
    ResponseFallback,
    TimeoutMiddleware,
    get_context,
    guard,
)
from apiguard.context import RequestContext
from tests._lifespan import startup
from tests.resilience._apps import Act, Script, Watch, client, make_app

pytestmark = pytest.mark.anyio


def decisions(app: Any) -> list[Any]:
    """The decisions of the last request, as the app's last seen context recorded them."""
    return app.state.last.decisions  # type: ignore[no-any-return]


class Keep:
    """A layer outside the timeout that keeps the request's context for the test to read."""

    def __init__(self, app: Any, *, into: list[RequestContext]) -> None:
        self.app = app
        self.into = into

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.into.append(get_context(scope))
        await self.app(scope, receive, send)


def timed(script: Script, contexts: list[RequestContext], **options: Any) -> Any:
    app = make_app(script)
    return guard(
        app,
        Middleware(Keep, into=contexts),
        Middleware(TimeoutMiddleware, **{"timeout": 0.3, **options}),
    )


async def test_an_answer_in_time_passes_and_is_recorded() -> None:
    script, contexts = Script(), []
    async with client(timed(script, contexts)) as http:
        response = await http.get("/items")
    assert response.status_code == 200
    (decision,) = contexts[-1].decisions_of("timeout")
    assert (decision.outcome, decision.reason) == ("allow", None)
    assert decision.attributes == {"timeout.seconds": 0.3}


async def test_a_hanging_endpoint_gets_504_on_time_and_is_cancelled() -> None:
    script, contexts = Script(), []
    script.plan("/items", Act(hang=True))
    async with client(timed(script, contexts)) as http:
        clock = Watch()
        response = await http.get("/items")
    assert clock.elapsed < 5  # the endpoint would hang an hour
    assert response.status_code == 504
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["title"] == "Gateway Timeout"
    assert script.cancelled["/items"] == 1
    (decision,) = contexts[-1].decisions_of("timeout")
    assert (decision.outcome, decision.reason, decision.status) == ("reject", "timeout", 504)
    assert decision.attributes["timeout.overdue"] is False


async def test_the_deadline_is_in_the_context_and_restored_after() -> None:
    """The endpoint sees what is left; the outer deadline comes back after an inner budget."""
    script, contexts = Script(), []
    app = make_app(script)
    guard(
        app,
        Middleware(Keep, into=contexts),
        Middleware(TimeoutMiddleware, name="request", timeout=30.0),
        Middleware(TimeoutMiddleware, name="attempt", timeout=0.5),
    )
    async with client(app) as http:
        assert (await http.get("/items")).status_code == 200
    left = script.seen[-1]["remaining"]
    assert left is not None
    assert 0 < left <= 0.5
    context = contexts[-1]
    assert context.deadline is None  # both layers restored what was there
    assert [d.name for d in context.decisions_of("timeout")] == ["attempt", "request"]


async def test_an_outer_earlier_deadline_wins() -> None:
    script, contexts = Script(), []
    app = make_app(script)
    guard(
        app,
        Middleware(Keep, into=contexts),
        Middleware(TimeoutMiddleware, name="request", timeout=0.3),
        Middleware(TimeoutMiddleware, name="attempt", timeout=60.0),
    )
    script.plan("/items", Act(hang=True))
    async with client(app) as http:
        response = await http.get("/items")
    assert response.status_code == 504
    inner, outer = contexts[-1].decisions_of("timeout")
    assert (inner.name, inner.reason) == ("attempt", "outer-deadline")
    assert (outer.name, outer.reason) == ("request", "timeout")


async def test_per_route_budgets_and_routes_without_one() -> None:
    script, contexts = Script(), []
    app = timed(
        script, contexts, routes={"GET /items/{item_id}": 5.0, "PUT /items/{item_id}": None}
    )
    script.plan("/items/{item_id}", Act(sleep=0.5))
    script.plan("PUT /items/{item_id}", Act(sleep=0.5))
    script.plan("/items", Act(sleep=0.5))
    async with client(app) as http:
        assert (await http.get("/items/1")).status_code == 200
        assert (await http.put("/items/1")).status_code == 200
        assert contexts[-1].decisions_of("timeout")[0].reason == "no-timeout"
        assert (await http.get("/items")).status_code == 504


async def test_a_started_response_is_cut_never_answered_twice() -> None:
    """Past the start, the stream ends where it is: no 504 after a 200."""
    script, contexts = Script(), []
    script.plan("/items", Act(stream=True, stream_sleep=5))
    messages: list[dict[str, Any]] = []
    app = timed(script, contexts)

    body = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if body:
            return body.pop()
        await asyncio.sleep(3600)
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/items",
        "raw_path": b"/items",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"t")],
        "client": ("127.0.0.1", 1),
        "server": ("t", 80),
    }
    clock = Watch()
    await app(scope, receive, send)
    assert clock.elapsed < 3
    assert [m["type"] for m in messages] == ["http.response.start", "http.response.body"]
    assert messages[0]["status"] == 200
    assert messages[-1]["more_body"] is True  # the last chunk never came
    (decision,) = contexts[-1].decisions_of("timeout")
    assert (decision.reason, decision.status) == ("timeout", 200)
    assert decision.attributes["timeout.stream_cut"] is True


async def test_background_tasks_after_the_response_are_not_cut() -> None:
    script, contexts = Script(), []
    script.plan("/items", Act(background=0.6))
    async with client(timed(script, contexts)) as http:
        assert (await http.get("/items")).status_code == 200
    assert script.background_done == 1


async def test_an_app_raising_after_its_start_is_its_own_error() -> None:
    script, contexts = Script(), []
    script.plan("/items", Act(fail_after_start=True))
    async with client(timed(script, contexts)) as http:
        with pytest.raises(RuntimeError, match="after the response started"):
            await http.get("/items")
    assert contexts[-1].decisions_of("timeout")[0].outcome == "allow"


@pytest.mark.parametrize(
    "fallback",
    [
        pytest.param(JSONResponse({"items": [], "partial": True}), id="response"),
        pytest.param(ResponseFallback(JSONResponse({"items": [], "partial": True})), id="fixed"),
        pytest.param(
            lambda request, reason: JSONResponse({"items": [], "partial": True}), id="function"
        ),
        pytest.param(
            [lambda request, reason: None, JSONResponse({"items": [], "partial": True})],
            id="chain",
        ),
    ],
)
async def test_a_fallback_answers_in_place_of_the_504(fallback: Any) -> None:
    script, contexts = Script(), []
    script.plan("/items", Act(hang=True))
    async with client(timed(script, contexts, fallback=fallback)) as http:
        response = await http.get("/items")
    assert (response.status_code, response.json()) == (200, {"items": [], "partial": True})
    served, timeout = contexts[-1].decisions[-2:]
    assert (served.layer, served.outcome, served.reason, served.status) == (
        "fallback",
        "allow",
        "timeout",
        200,
    )
    assert (timeout.layer, timeout.status) == ("timeout", None)
    assert timeout.attributes["timeout.fallback"] is True


async def test_an_async_fallback_function_gets_the_request_and_the_reason() -> None:
    seen: list[tuple[str, str]] = []

    async def degraded(request: Request, reason: str) -> PlainTextResponse:
        seen.append((request.url.path, reason))
        return PlainTextResponse("degraded", status_code=203)

    script, contexts = Script(), []
    script.plan("/items", Act(hang=True))
    app = timed(script, contexts, fallback=CallableFallback(degraded, statuses=[203]))
    async with client(app) as http:
        response = await http.get("/items")
    assert (response.status_code, response.text) == (203, "degraded")
    assert seen == [("/items", "timeout")]


class Broken(Fallback):
    name = "broken"

    async def serve(self, scope: Any, reason: Any, send: Any) -> bool:
        raise RuntimeError("a bug in a fallback")


@pytest.mark.parametrize(
    "fallback",
    [
        pytest.param(lambda request, reason: None, id="declines"),
        pytest.param(lambda request, reason: 1 / 0, id="raises"),
        pytest.param(lambda request, reason: "not a response", id="wrong-type"),
        pytest.param(Broken(), id="broken-fallback"),
    ],
)
async def test_a_fallback_that_declines_or_fails_leaves_the_504(fallback: Any) -> None:
    script, contexts = Script(), []
    script.plan("/items", Act(hang=True))
    async with client(timed(script, contexts, fallback=fallback)) as http:
        response = await http.get("/items")
    assert response.status_code == 504
    assert contexts[-1].decisions_of("timeout")[0].status == 504


async def test_websockets_and_lifespan_pass_through() -> None:
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hi")
        await websocket.close()

    app = guard(Starlette(routes=[WebSocketRoute("/ws", ws)]), Middleware(TimeoutMiddleware))
    assert (await startup(app))["type"] == "lifespan.startup.complete"
    incoming = [{"type": "websocket.connect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/ws", "raw_path": b"/ws", "root_path": "",
             "query_string": b"", "headers": [], "scheme": "ws", "subprotocols": [],
             "asgi": {"version": "3.0"}}  # fmt: skip
    await app(scope, receive, send)
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"timeout": 0}, "timeout 0 is not a number of seconds"),
        ({"timeout": "5"}, "timeout '5' is not a number of seconds"),
        ({"routes": {"GET /items": -1}}, "routes\\['GET /items'\\] -1 is not a number"),
        ({"routes": {"GET items": 1.0}}, "routes"),
        ({"fallback": 42}, "fallback 42 is not a fallback"),
        ({"fallback": []}, "the list of fallbacks is empty"),
        ({"name": "bad name"}, "name 'bad name' is not"),
    ],
)
def test_misconfiguration_fails_at_construction(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        guard(make_app(Script()), Middleware(TimeoutMiddleware, **options))


async def test_a_route_key_naming_no_route_fails_the_start() -> None:
    app = make_app(Script())
    guard(app, Middleware(TimeoutMiddleware, routes={"GET /nowhere": 1.0}))
    answer = await startup(app)
    assert answer["type"] == "lifespan.startup.failed"
    assert "TimeoutMiddleware[name='timeout']: routes: route 'GET /nowhere'" in answer["message"]


def test_describe_gives_the_budget_and_every_answer() -> None:
    layer = TimeoutMiddleware(
        make_app(Script()),
        timeout=2.0,
        routes={"GET /items": 9.0, "PUT /items/{item_id}": None},
        fallback=JSONResponse({}, status_code=200),
    )
    described = layer.describe("GET", "/items")
    assert described.applies
    assert described.summary == {"timeout": 9.0, "fallback": "response"}
    assert [a.status for a in described.answers] == [504, 200]
    assert layer.describe("POST", "/orders").summary["timeout"] == 2.0
    assert not layer.describe("PUT", "/items/{item_id}").applies
    assert not layer.describe("WEBSOCKET", "/items").applies
