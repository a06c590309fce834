"""An app with an unguarded route and WebSocket: `apiguard routes --check` names both."""

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from apiguard import APIKeyAuth, AuthMiddleware, Principal, RateLimitMiddleware, guard


async def orders(request: Request) -> JSONResponse:
    return JSONResponse([])


async def feed(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.close()


routes = [Route("/orders", orders), Route("/metrics", orders), WebSocketRoute("/feed", feed)]

# Rate limited, but nothing decides who may call: every route is unguarded.
app = guard(Starlette(routes=routes), Middleware(RateLimitMiddleware, limit="100/minute"))

# --8<-- [start:fixed]
fixed = guard(
    Starlette(routes=routes),
    Middleware(RateLimitMiddleware, limit="100/minute"),
    Middleware(
        AuthMiddleware,
        authenticators=[APIKeyAuth(keys={"k-ops-0001": Principal(id="ops")})],
        public=["GET /metrics", "WEBSOCKET /feed"],  # a decision, written down
    ),
)
# --8<-- [end:fixed]
