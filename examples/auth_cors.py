"""CORS outside authentication: preflights and refusals both get CORS headers."""

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from apiguard import APIKeyAuth, AuthMiddleware, Principal, guard


async def orders(request: Request) -> JSONResponse:
    return JSONResponse([])


app = guard(
    Starlette(routes=[Route("/orders", orders, methods=["GET", "POST"])]),
    # Outermost: answers preflights and adds CORS headers to every response,
    # the 401s included, so the browser lets the page read them.
    Middleware(
        CORSMiddleware,
        allow_origins=["https://shop.example"],
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "X-API-Key", "Content-Type"],
    ),
    Middleware(
        AuthMiddleware,
        authenticators=[APIKeyAuth(keys={"pk-2c9f4e7a1b8d3f6a": Principal(id="acme")})],
    ),
)
