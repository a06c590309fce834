"""Options are checked at start-up; the layer describes each route for the report."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware

from apiguard import ConfigError, IdempotencyMiddleware, guard
from apiguard.idempotency import RoutePolicy
from apiguard.layer import Answer, Describes, HeaderInfo
from tests._lifespan import startup
from tests.idempotency._apps import Orders

pytestmark = pytest.mark.anyio


def _app() -> Any:
    return Starlette(routes=Orders().routes())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ttl": 0}, "ttl 0 is not a number of seconds in (0, 2.592e+06]"),
        ({"ttl": "1 day"}, "ttl '1 day' is not a number of seconds"),
        ({"lease": -1}, "lease -1 is not a number of seconds"),
        ({"store_timeout": 0}, "store_timeout 0 is not a number of seconds"),
        ({"max_body_bytes": 0}, "max_body_bytes 0 is not a whole number from 1 to"),
        ({"max_response_bytes": True}, "max_response_bytes True is not a whole number"),
        ({"required": "yes"}, "required 'yes' is not True or False"),
        ({"store_server_errors": 1}, "store_server_errors 1 is not True or False"),
        ({"on_store_error": "open"}, "on_store_error 'open' is not one of 'fail-open'"),
        ({"methods": "POST"}, "methods 'POST' is not a list of strings"),
        ({"methods": []}, "methods [] is empty"),
        ({"methods": ["post"]}, "methods 'post' is not an uppercase HTTP method"),
        ({"methods": ["GET"]}, "methods 'GET' is safe already"),
        ({"name": "a b"}, "name 'a b' is not 1-64 letters"),
        ({"routes": {"POST /orders": 3600}}, "routes['POST /orders'] 3600 is not RoutePolicy(...)"),
        (
            {"routes": {"POST /orders": RoutePolicy(ttl=-5)}},
            "routes['POST /orders'].ttl -5 is not a number of seconds",
        ),
        (
            {"routes": {"WEBSOCKET /live": RoutePolicy()}},
            "idempotency keys are for HTTP requests",
        ),
        (
            {"routes": {"POST /orders": RoutePolicy()}, "exempt": ["POST /orders"]},
            "exempt: route 'POST /orders' is in routes too",
        ),
        ({"storage": "ftp://x"}, "storage 'ftp://x' has an unknown scheme"),
        ({"trusted_proxies": ["not-an-address"]}, "trusted proxy 'not-an-address' is not"),
        ({"proxy_header": "X-Real-IP"}, "proxy_header 'X-Real-IP' is not"),
    ],
)
def test_a_bad_option_is_refused_naming_the_layer_and_the_value(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        guard(_app(), Middleware(IdempotencyMiddleware, **options))
    text = str(caught.value)
    assert text.startswith("IdempotencyMiddleware"), text
    assert message in text


def test_a_store_without_claims_is_refused() -> None:
    """The storages of `limits` itself (memcached, MongoDB, ...) have no key-value part."""
    with pytest.raises(ConfigError, match="storage 'async\\+memory://' has no atomic claims"):
        IdempotencyMiddleware(_app(), storage="async+memory://")


def test_a_store_password_is_never_shown() -> None:
    with pytest.raises(ConfigError) as caught:
        IdempotencyMiddleware(_app(), storage="redis://:hunter2@cache:6379/0", store_timeout=-1)
    assert "hunter2" not in str(caught.value)


async def test_a_route_the_app_lacks_fails_start_up() -> None:
    app = guard(
        _app(),
        Middleware(IdempotencyMiddleware, routes={"POST /payments": RoutePolicy(required=True)}),
    )
    answer = await startup(app)
    assert answer["type"] == "lifespan.startup.failed"
    assert "routes: route 'POST /payments' is not a route of the app" in answer["message"]


# --- describe -------------------------------------------------------------------------


def test_the_layer_describes_a_covered_route() -> None:
    layer = IdempotencyMiddleware(
        _app(),
        routes={"POST /orders": RoutePolicy(required=True, ttl=3600)},
        exempt=["POST /webhooks"],
    )
    assert isinstance(layer, Describes)
    post = layer.describe("POST", "/orders")
    assert (post.layer, post.name, post.applies) == ("idempotency", "idempotency", True)
    assert post.request_headers == (
        HeaderInfo("Idempotency-Key", True, post.request_headers[0].description),
    )
    assert post.response_headers == ("Idempotent-Replayed",)
    assert [(a.status, a.reason) for a in post.answers] == [
        (400, "missing-key"),
        (400, "malformed-key"),
        (409, "conflict"),
        (413, "content-too-large"),
        (422, "mismatch"),
        (503, "store-unavailable"),
    ]
    assert post.answers[-1] == Answer(
        503, "store-unavailable", ("Retry-After",), description=post.answers[-1].description
    )
    assert post.summary["ttl"] == 3600
    assert post.summary["required"] is True


@pytest.mark.parametrize(
    ("method", "key", "applies"),
    [
        ("PATCH", "/orders/{order_id}", True),
        ("patch", "/orders/{order_id}", True),
        ("PUT", "/orders/{order_id}", False),
        ("GET", "/orders", False),
        ("POST", "/webhooks", False),  # exempt
        ("WEBSOCKET", "/orders", False),
    ],
)
def test_the_layer_says_where_it_applies(method: str, key: str, applies: bool) -> None:
    layer = IdempotencyMiddleware(_app(), exempt=["POST /webhooks"])
    assert layer.describe(method, key).applies is applies


def test_fail_open_drops_the_503_and_an_optional_key_the_400_for_missing() -> None:
    layer = IdempotencyMiddleware(_app(), on_store_error="fail-open")
    answers = {(a.status, a.reason) for a in layer.describe("POST", "/orders").answers}
    assert (503, "store-unavailable") not in answers
    assert (400, "missing-key") not in answers
    assert layer.describe("POST", "/orders").request_headers[0].required is False
