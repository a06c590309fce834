"""Liveness and readiness, with a check of the app's own and its store shown, not failing."""

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from apiguard import (
    APIKeyAuth,
    AuthMiddleware,
    HealthMiddleware,
    Principal,
    RateLimitMiddleware,
    guard,
)


class Database:
    """Stands for a connection pool; the tests take it down."""

    up = True

    @classmethod
    async def ping(cls) -> bool:
        return cls.up


async def orders(request: Request) -> JSONResponse:
    return JSONResponse({"orders": []})


KEYS = {"k-ops-2c4e6a8b": Principal(id="ops")}

# --8<-- [start:layers]
app = guard(
    Starlette(routes=[Route("/orders", orders)]),
    Middleware(
        HealthMiddleware,  # answers /health/live and /health/ready before the layers below
        checks={"database": Database.ping},  # each within check_timeout (1 s)
        stores="warn",  # ping the limiter's store: shown, but readiness stays 200
        version="2.3.0",
    ),
    Middleware(RateLimitMiddleware, limit="100/minute", storage="memory://"),
    Middleware(AuthMiddleware, authenticators=[APIKeyAuth(keys=KEYS)]),
)
# --8<-- [end:layers]
