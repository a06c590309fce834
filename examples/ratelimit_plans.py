"""Per-plan quotas after authentication, and a flood limit by address before it."""

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from apiguard import Principal, RateLimitMiddleware, by_ip, by_principal, get_context, guard

KEYS = {"k-free": Principal(id="alice", plan="free"), "k-pro": Principal(id="acme", plan="pro")}


class DemoAuth:
    """Stands in for the authentication layer: `X-API-Key` -> a principal with a plan."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"x-api-key" and value.decode() in KEYS:
                    get_context(scope).principal = KEYS[value.decode()]
        await self.app(scope, receive, send)


async def orders(request: Request) -> JSONResponse:
    return JSONResponse([])


# --8<-- [start:stack]
app = guard(
    Starlette(routes=[Route("/orders", orders)]),
    # Cheap refusal of floods, before authentication does any work.
    Middleware(RateLimitMiddleware, name="ip", limit="300/minute", key=by_ip()),
    Middleware(DemoAuth),  # your AuthMiddleware
    # Quotas by plan; one partner gets more; anonymous callers get `limit`.
    Middleware(
        RateLimitMiddleware,
        name="plan",
        key=by_principal(),
        limit="5/minute",
        plans={"free": "10/minute; 1000/day", "pro": "1000/minute"},
        overrides={"acme": "5000/minute"},
    ),
)
# --8<-- [end:stack]
