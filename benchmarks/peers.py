"""The peers: what a service uses instead of apiguard's layers, doing the same work.

Each builder returns the bare benchmark app (`GET /orders/{id}`, `POST
/orders`) behind one peer, configured as its documentation shows:

- slowapi's `@limiter.limit` decorator on both routes, and its pure-ASGI
  `SlowAPIASGIMiddleware` with a default limit, on `memory://` or Redis;
- Starlette's `AuthenticationMiddleware` with a backend that calls PyJWT's
  `jwt.decode` (HS256, audience and issuer checked) on every request;
- a rate limiter written by hand as a `BaseHTTPMiddleware` over `limits`'
  fixed window on its async memory storage (what a blog post shows);
- `opentelemetry-instrumentation-asgi`'s middleware, on the global
  providers or on the ones given.

The limits are never reached: the cost of counting, not of refusing.
"""

from __future__ import annotations

from typing import Any

import jwt
from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import FixedWindowRateLimiter
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from benchmarks.apps import BENCH_CLAIMS, HIGH_LIMIT, create_order, get_order, starlette_app


def slowapi_decorator(storage_uri: str = "memory://") -> Starlette:
    """The `@limiter.limit(...)` decorator of slowapi on each route: its documented use."""
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from slowapi.util import get_remote_address

    limiter = Limiter(key_func=get_remote_address, storage_uri=storage_uri)

    @limiter.limit(HIGH_LIMIT)
    async def limited_get(request: Request) -> Response:
        return await get_order(request)

    @limiter.limit(HIGH_LIMIT)
    async def limited_post(request: Request) -> Response:
        return await create_order(request)

    app = Starlette(
        routes=[
            Route("/orders/{order_id:int}", limited_get),
            Route("/orders", limited_post, methods=["POST"]),
        ]
    )
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
    return app


def slowapi_middleware(storage_uri: str = "memory://") -> Starlette:
    """The pure-ASGI middleware of slowapi, with a default limit for every route."""
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from slowapi.middleware import SlowAPIASGIMiddleware
    from slowapi.util import get_remote_address

    app = starlette_app()
    app.state.limiter = Limiter(
        key_func=get_remote_address, storage_uri=storage_uri, default_limits=[HIGH_LIMIT]
    )
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
    app.add_middleware(SlowAPIASGIMiddleware)
    return app


class PyJWTBackend(AuthenticationBackend):
    """What a hand-written Starlette backend does: `jwt.decode` on every request."""

    def __init__(self, key: Any, algorithm: str) -> None:
        self.key = key
        self.algorithm = algorithm

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        header = conn.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        claims = jwt.decode(
            token,
            self.key,
            algorithms=[self.algorithm],
            audience=BENCH_CLAIMS["aud"],
            issuer=BENCH_CLAIMS["iss"],
        )
        return AuthCredentials(claims.get("scope", "").split()), SimpleUser(claims["sub"])


def starlette_auth_pyjwt(secret: bytes) -> Starlette:
    """Starlette's `AuthenticationMiddleware` with a PyJWT HS256 backend."""
    app = starlette_app()
    app.add_middleware(AuthenticationMiddleware, backend=PyJWTBackend(secret, "HS256"))
    return app


class HandWrittenLimiter(BaseHTTPMiddleware):
    """A rate limiter as one writes it by hand: `limits`' fixed window, by client address."""

    def __init__(self, app: Any, *, limit: str = HIGH_LIMIT) -> None:
        super().__init__(app)
        self.item = parse(limit)
        self.limiter = FixedWindowRateLimiter(MemoryStorage())

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        key = request.client.host if request.client else "unknown"
        if not await self.limiter.hit(self.item, key):
            return JSONResponse({"detail": "Too many requests"}, status_code=429)
        return await call_next(request)


def basehttp_limiter() -> Starlette:
    """The bare app behind `HandWrittenLimiter`."""
    app = starlette_app()
    app.add_middleware(HandWrittenLimiter)
    return app


def otel_asgi(tracer_provider: Any = None, meter_provider: Any = None) -> Any:
    """`opentelemetry-instrumentation-asgi` around the bare app (global providers by default)."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    return OpenTelemetryMiddleware(
        starlette_app(), tracer_provider=tracer_provider, meter_provider=meter_provider
    )
