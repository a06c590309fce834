"""The layer kit: option checks in one form, and how every layer describes a route."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute

from apiguard import (
    APIKeyAuth,
    AuthMiddleware,
    CircuitBreakerMiddleware,
    ConcurrencyLimitMiddleware,
    ConfigError,
    HealthMiddleware,
    IPFilterMiddleware,
    JWTAuth,
    Principal,
    RateLimitMiddleware,
    RetryMiddleware,
    Rules,
    TimeoutMiddleware,
    ValidationMiddleware,
)
from apiguard.layer import Describes, Options, SecurityScheme, checked
from apiguard.routing import routes_of


class OrderIn(BaseModel):
    sku: str


async def endpoint(request: Any) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def live(websocket: Any) -> None:
    await websocket.close()


APP = Starlette(
    routes=[
        Route("/health", endpoint),
        Route("/orders", endpoint, methods=["GET", "POST"]),
        WebSocketRoute("/live", live),
    ]
)
KEYS = APIKeyAuth(keys={"k-1234567890": Principal(id="partner")})
JWT = JWTAuth(jwks_url="https://id.example/jwks.json", algorithms=["RS256"], audience="orders")


def test_every_layer_describes_itself() -> None:
    layers = [
        AuthMiddleware(APP, authenticators=[KEYS]),
        RateLimitMiddleware(APP, limit="10/minute"),
        ValidationMiddleware(APP),
        IPFilterMiddleware(APP),
        TimeoutMiddleware(APP),
        RetryMiddleware(APP),
        CircuitBreakerMiddleware(APP),
        ConcurrencyLimitMiddleware(APP),
        HealthMiddleware(Starlette()),  # it adds its routes to the app's router
    ]
    assert all(isinstance(layer, Describes) for layer in layers)
    for layer in layers:
        described = layer.describe("GET", "/orders")
        assert described.name == layer.name  # type: ignore[attr-defined]


def test_authentication_says_who_may_call_each_route() -> None:
    layer = AuthMiddleware(
        APP,
        authenticators=[JWT, KEYS],
        public=["GET /health"],
        scopes={"POST /orders": ["orders:write"]},
    )
    health = layer.describe("GET", "/health")
    assert (health.applies, health.security.mode, health.answers) == (False, "public", ())
    post = layer.describe("POST", "/orders")
    assert post.security is not None
    assert (post.security.mode, post.security.scopes) == ("required", ("orders:write",))
    assert post.security.schemes == (
        SecurityScheme("jwt", "http", scheme="bearer", bearer_format="JWT"),
        SecurityScheme("api_key", "apiKey", location="header", parameter="x-api-key"),
    )
    statuses = {answer.status: answer for answer in post.answers}
    assert sorted(statuses) == [400, 401, 403, 503]  # 503: the JWKS fetch can fail
    assert statuses[401].headers == ("WWW-Authenticate",)
    get = layer.describe("GET", "/orders")
    assert sorted(a.status for a in get.answers) == [400, 401, 503]
    assert layer.describe("WEBSOCKET", "/live").security.mode == "required"  # type: ignore[union-attr]


def test_the_rate_limiter_names_its_policies_and_its_refusals() -> None:
    layer = RateLimitMiddleware(
        APP,
        name="ip",
        limit="100/minute",
        routes={"POST /orders": "5/minute"},
        exempt=["/health"],
        on_store_error="fail-closed",
    )
    assert not layer.describe("GET", "/health").applies
    post = layer.describe("POST", "/orders")
    assert post.summary["policies"] == {"route": ["ip-1: 5 per 60 s"]}
    assert [(a.status, a.reason) for a in post.answers] == [
        (429, "quota-exceeded"),
        (503, "store-unavailable"),
    ]
    assert post.response_headers == ("RateLimit", "RateLimit-Policy")
    get = layer.describe("GET", "/orders")
    assert get.summary["policies"] == {"default": ["ip-0: 100 per 60 s"]}
    assert layer.describe("WEBSOCKET", "/live").applies


def test_validation_lists_what_a_route_accepts() -> None:
    layer = ValidationMiddleware(APP, routes={"POST /orders": Rules(body=OrderIn)})
    post = layer.describe("POST", "/orders")
    assert post.summary["body_model"] == "OrderIn"
    assert {413, 415, 422} <= {a.status for a in post.answers}
    get = layer.describe("GET", "/orders")
    assert get.summary["body"] == "none allowed"
    assert 415 not in {a.status for a in get.answers}
    assert not layer.describe("WEBSOCKET", "/live").applies


def test_every_route_of_an_app_can_be_described_without_a_request() -> None:
    layer = RateLimitMiddleware(APP, limit="10/minute")
    for route in routes_of(APP):
        for method in sorted(route.methods or {"GET"}):
            assert layer.describe(method, route.key).layer == "ratelimit"


def test_checked_names_the_owner_once() -> None:
    class Layer:
        @checked("Layer", name="x")
        def __init__(self, *, name: str = "x", tries: int = 3) -> None:
            with Options.of("Layer", name).checking():
                Options().integer("tries", tries, low=0, high=10)

    with pytest.raises(ConfigError, match=r"^Layer\[name='y'\]: tries 99 is not"):
        Layer(name="y", tries=99)


@pytest.mark.parametrize(
    ("check", "message"),
    [
        (lambda o: o.flag("shadow", "no"), "shadow 'no' is not True or False"),
        (lambda o: o.seconds("timeout", float("nan")), "timeout nan is not a number of seconds"),
        (lambda o: o.choice("mode", "x", ("a", "b")), "mode 'x' is not one of 'a', 'b'"),
        (lambda o: o.strings("public", "GET /a"), "public 'GET /a' is not a list of strings"),
        (lambda o: o.layer_name("a b"), "name 'a b' is not 1-64 letters"),
        (lambda o: o.fail("url", "redis://:pw@h", "is down"), r"url 'redis://:\*\*\*@h' is down"),
        (lambda o: o.fail("key", "k-secret", "is bad", secret=True), r"key \(hidden\) is bad"),
    ],
)
def test_option_errors_read_the_same_everywhere(check: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"^Owner\[name='n'\]: {message}"):
        check(Options.of("Owner", "n"))


@pytest.mark.anyio
async def test_an_answers_headers_come_with_the_real_refusal() -> None:
    """An API key's 403 carries no challenge (no RFC 6750 error codes): its answer says so."""
    import httpx

    keys = APIKeyAuth(keys={"k-reader-0001": Principal(id="reader", scopes=["read"])})
    layer = AuthMiddleware(APP, authenticators=[keys], scopes={"POST /orders": ["write"]})
    transport = httpx.ASGITransport(layer)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        refused = await client.post("/orders", headers={"x-api-key": "k-reader-0001"})
    assert refused.status_code == 403
    answers = [a for a in layer.describe("POST", "/orders").answers if a.status == 403]
    assert answers
    assert any(all(h.lower() in refused.headers for h in a.headers) for a in answers), (
        [a.headers for a in answers],
        dict(refused.headers),
    )
