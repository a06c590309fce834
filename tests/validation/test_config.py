"""Configuration fails at start-up, naming the option and the value."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Route

from apiguard import ConfigError, Rules, ValidationMiddleware, guard
from tests._lifespan import startup
from tests.validation._apps import OrderIn

pytestmark = pytest.mark.anyio


async def ok(request: Any) -> JSONResponse:  # pragma: no cover
    return JSONResponse({})


def app() -> Starlette:
    return Starlette(
        routes=[
            Route("/orders", ok, methods=["GET", "POST"]),
            Route("/orders/{order_id:int}", ok, methods=["GET", "DELETE"]),
        ]
    )


class NotAModel:
    pass


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_body_bytes": -1}, r"max_body_bytes -1 is not an int of at least 0"),
        ({"max_body_bytes": "1mb"}, r"max_body_bytes '1mb'"),
        ({"max_body_bytes": True}, r"max_body_bytes True"),
        ({"max_json_depth": 0}, r"max_json_depth 0 is not an int of at least 1"),
        ({"max_json_depth": 500}, r"max_json_depth 500 is over 128"),
        ({"content_types": "application/json"}, r"content_types: expected a list"),
        ({"content_types": []}, r"content_types: the list of media types is empty"),
        ({"content_types": ["json"]}, r"'json' is not a media type"),
        ({"content_types": ["*/json"]}, r"'\*/json' is not a media range"),
        ({"content_types": ["application/json; charset=utf-8"]}, r"is not a media type"),
        ({"no_body_methods": "GET"}, r"no_body_methods 'GET' is not a list of methods"),
        ({"no_body_methods": ["get"]}, r"'get' is not an uppercase HTTP method"),
        ({"max_query_params": -5}, r"max_query_params -5"),
        ({"max_query_bytes": 1.5}, r"max_query_bytes 1.5"),
        ({"max_query_param_bytes": -1}, r"max_query_param_bytes -1"),
        ({"echo_input": "yes"}, r"echo_input 'yes' is not True or False"),
        ({"routes": ["POST /orders"]}, r"routes .* is not a mapping of route keys"),
        ({"routes": {"POST /orders": OrderIn}}, r"routes\['POST /orders'\] .* is not Rules"),
        ({"routes": {"post /orders": Rules()}}, r"route key"),
        (
            {"routes": {"POST /orders": Rules(body=OrderIn, content_types=["text/plain"])}},
            r"'POST /orders': a body model validates JSON",
        ),
        (
            {"content_types": ["*/*"], "routes": {"POST /orders": Rules(body=OrderIn)}},
            r"'POST /orders': .*inherited from the layer",
        ),
        (
            {"routes": {"DELETE /orders/{order_id}": Rules(body=OrderIn)}},
            r"DELETE requests carry no body .*no_body=False",
        ),
    ],
)
def test_bad_options_fail_when_guard_is_called(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        guard(app(), Middleware(ValidationMiddleware, **options))


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"max_body_bytes": -1}, r"Rules: max_body_bytes -1"),
        ({"max_json_depth": 129}, r"Rules: max_json_depth 129 is over 128"),
        ({"no_body": "yes"}, r"Rules: no_body 'yes'"),
        ({"body": OrderIn, "no_body": True}, r"contradict"),
        ({"body": 5}, r"Rules: body: pydantic cannot validate 5"),
        ({"query": NotAModel}, r"Rules: query: .*NotAModel.* is not a pydantic BaseModel"),
        ({"headers": dict}, r"Rules: headers: .*dict.* is not a pydantic BaseModel"),
        ({"content_types": ["nope"]}, r"Rules: content_types: 'nope'"),
    ],
)
def test_bad_rules_fail_when_built(rules: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Rules(**rules)


def test_rules_are_frozen_and_normalised() -> None:
    rules = Rules(content_types=["Application/JSON", "application/json"])
    assert rules.content_types == ("application/json",)
    with pytest.raises(AttributeError):
        rules.max_body_bytes = 5  # type: ignore[misc]
    assert Rules(max_body_bytes=5) == Rules(max_body_bytes=5)


def test_body_on_delete_is_allowed_when_said_so() -> None:
    guard(
        app(),
        Middleware(
            ValidationMiddleware,
            routes={"DELETE /orders/{order_id}": Rules(body=OrderIn, no_body=False)},
        ),
    )


async def test_unknown_route_key_fails_startup() -> None:
    """A route the app does not have: the server refuses to start, naming it."""
    guarded = guard(
        app(), Middleware(ValidationMiddleware, routes={"POST /order": Rules(body=OrderIn)})
    )
    answer = await startup(guarded)
    assert answer["type"] == "lifespan.startup.failed"
    assert "routes: route 'POST /order' is not a route of the app" in answer["message"]
    assert "did you mean '/orders'" in answer["message"]


async def test_both_methods_of_one_template_bind() -> None:
    """GET and POST /orders are two routes; each may have rules."""
    guarded = guard(
        app(),
        Middleware(
            ValidationMiddleware,
            routes={"POST /orders": Rules(body=OrderIn), "GET /orders": Rules(query=Q)},
        ),
    )
    assert (await startup(guarded))["type"] == "lifespan.startup.complete"


class Q(BaseModel):
    page: int = 1


async def test_plain_asgi_app_gets_rules_by_its_own_templates() -> None:
    """Without a Starlette router, the route keys' templates are matched against the path."""
    from tests.validation._apps import drive

    calls = []

    async def plain(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = guard(
        plain, Middleware(ValidationMiddleware, routes={"POST /orders": Rules(body=OrderIn)})
    )
    headers = [(b"content-type", b"application/json"), (b"content-length", b"2")]
    refused = await drive(app, "POST", "/orders", headers=headers, chunks=[b"{}"])
    passed = await drive(app, "POST", "/other", headers=headers, chunks=[b"{}"])
    assert refused.status == 422
    assert passed.status == 204
    assert calls == ["/other"]


@pytest.mark.parametrize("kind", ["websocket", "lifespan"])
async def test_other_scopes_pass_through_untouched(kind: str) -> None:
    seen = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))

    async def receive() -> dict[str, Any]:  # pragma: no cover - never called
        raise AssertionError

    async def send(message: Any) -> None:  # pragma: no cover - never called
        raise AssertionError

    scope = {"type": kind, "path": "/orders", "headers": [], "query_string": b"x" * 10_000}
    await ValidationMiddleware(inner)(scope, receive, send)
    assert seen == [(scope, receive, send)]
    assert "state" not in scope
