"""The whole stack: every layer built so far, in DESIGN's order, beside the peers.

Each row is a Starlette app serving `GET /orders/{id}` or `POST /orders`,
with, outermost first: a rate limit by client address, authentication (an
API key, or a repeat HS256 token), quotas by the principal's plan, and
validation (a pydantic model on the POST body). Beside it, in the same run:
the bare app, slowapi's `@limiter.limit` decorator (its only layer), and
`opentelemetry-instrumentation-asgi`'s middleware with no SDK configured.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from starlette.middleware import Middleware

from apiguard import (
    APIKeyAuth,
    AuthMiddleware,
    JWTAuth,
    Principal,
    RateLimitMiddleware,
    Rules,
    ValidationMiddleware,
    by_principal,
    guard,
)
from apiguard.testing import generate_key, mint_token
from benchmarks.apps import NEW_ORDER, OrderIn, starlette_app
from benchmarks.driver import ASGICase, Case, Request, post_json
from benchmarks.ratelimit import _slowapi_app

API_KEY = "k-partner-0123456789"
HIGH = "1000000/minute"  # never reached: the cost of counting, not of refusing


def _stack(authenticator: Any) -> Any:
    return guard(
        starlette_app(),
        Middleware(RateLimitMiddleware, name="ip", limit=HIGH),
        Middleware(AuthMiddleware, authenticators=[authenticator], public=["GET /health"]),
        Middleware(
            RateLimitMiddleware,
            name="plan",
            key=by_principal(),
            plans={"free": "100/minute", "pro": HIGH},
        ),
        Middleware(ValidationMiddleware, routes={"POST /orders": Rules(body=OrderIn)}),
    )


def cases() -> list[Case]:
    partner = Principal(id="partner", plan="pro")
    key = generate_key("HS256", kid="hs-1")
    claims = {"sub": "partner", "aud": "orders", "iss": "https://id.example/", "plan": "pro"}
    token = mint_token(key, claims, expires_in=3600)
    jwt_auth = JWTAuth(
        key=key.verification_key,
        algorithms=["HS256"],
        audience="orders",
        issuer="https://id.example/",
        principal=lambda p: dataclasses.replace(p, plan=p.claims["plan"]),
    )
    with_key = [(b"x-api-key", API_KEY.encode())]
    with_token = [(b"authorization", b"Bearer " + token.encode())]
    bare_get, bare_post = "starlette GET", "starlette POST"
    return [
        ASGICase(bare_get, starlette_app(), Request("GET", "/orders/42")),
        ASGICase(
            "apiguard stack, API key, GET",
            _stack(APIKeyAuth(keys={API_KEY: partner})),
            Request("GET", "/orders/42", with_key),
            baseline=bare_get,
        ),
        ASGICase(
            "apiguard stack, HS256 repeat token, GET",
            _stack(jwt_auth),
            Request("GET", "/orders/42", with_token),
            baseline=bare_get,
        ),
        ASGICase(
            "+ slowapi @limit (memory)",
            _slowapi_app(),
            Request("GET", "/orders/42"),
            baseline=bare_get,
        ),
        ASGICase(
            "+ opentelemetry-instrumentation-asgi (no SDK)",
            OpenTelemetryMiddleware(starlette_app()),
            Request("GET", "/orders/42"),
            baseline=bare_get,
        ),
        ASGICase(bare_post, starlette_app(), post_json("/orders", NEW_ORDER), expect=201),
        ASGICase(
            "apiguard stack, API key, POST with a body model",
            _stack(APIKeyAuth(keys={API_KEY: partner})),
            post_json("/orders", NEW_ORDER, with_key),
            expect=201,
            baseline=bare_post,
        ),
    ]


TITLE = "the whole stack: every layer, beside the bare app and the peers"
