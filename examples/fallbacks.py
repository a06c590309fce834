"""What a timeout serves instead of a 504: the last good response, else a fixed one."""

import asyncio

from fastapi import FastAPI, Request
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, Response
from starlette.types import Scope, Send

from apiguard import (
    APIKeyAuth,
    AuthMiddleware,
    Fallback,
    Principal,
    StaleIfError,
    TimeoutMiddleware,
    guard,
)
from apiguard.resilience import FallbackReason, fallback_decision

app = FastAPI()
app.state.slow = False  # the tests flip it to make every endpoint too slow


async def slow_when_told(request: Request) -> None:
    if request.app.state.slow:
        await asyncio.sleep(10)


@app.get("/menu")
async def menu(request: Request) -> Response:
    await slow_when_told(request)
    return JSONResponse(
        {"dishes": ["soup", "pie"]},
        headers={"cache-control": "max-age=60, stale-if-error=3600"},
    )


@app.get("/me/orders")
async def my_orders(request: Request) -> Response:
    await slow_when_told(request)
    return JSONResponse({"owner": request.user.display_name, "orders": [1, 2]})


@app.get("/search")
async def search(request: Request) -> Response:
    await slow_when_told(request)
    return JSONResponse({"hits": ["soup"]})


# --8<-- [start:custom]
class Maintenance(Fallback):
    """A fallback of your own: only `serve` is needed."""

    name = "maintenance"
    body = b'{"hits": [], "degraded": true}'

    async def serve(self, scope: Scope, reason: FallbackReason, send: Send) -> bool:
        if not scope["path"].startswith("/search"):
            return False  # decline: the next fallback, or the layer's 504
        fallback_decision(scope, self.name, reason, 200, "maintenance")
        headers = [(b"content-type", b"application/json"), (b"content-length", b"30")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})
        return True


# --8<-- [end:custom]


KEYS = {"k-alice-7f3a9c2e": Principal(id="alice"), "k-bob-4b8d1e6f": Principal(id="bob")}

# --8<-- [start:layers]
guard(
    app,
    Middleware(AuthMiddleware, authenticators=[APIKeyAuth(keys=KEYS)], public=["GET /menu"]),
    Middleware(
        TimeoutMiddleware,
        timeout=0.3,
        fallback=[
            # The last good response to the same GET: per caller where the
            # route opts in, never across principals or Vary values.
            StaleIfError(ttl=300, authenticated=["GET /me/orders"]),
            Maintenance(),
        ],
    ),
)
# --8<-- [end:layers]
