"""IP filtering: a blocklist for every route, the admin API for the office only."""

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from apiguard import IPFilterMiddleware, guard
from apiguard.ipfilter import IPRules


async def orders(request: Request) -> JSONResponse:
    return JSONResponse([])


async def stats(request: Request) -> JSONResponse:
    return JSONResponse({"orders": 0})


async def webhook(request: Request) -> JSONResponse:
    return JSONResponse({"received": True})


# --8<-- [start:layer]
app = guard(
    Starlette(
        routes=[
            Route("/orders", orders),
            Route("/admin/stats", stats),
            Route("/webhooks/payments", webhook, methods=["POST"]),
        ]
    ),
    Middleware(
        IPFilterMiddleware,
        deny=["192.0.2.0/24", "2001:db8:bad::/48"],  # refused everywhere
        routes={
            # Only the office network, and never its guest Wi-Fi.
            "/admin/stats": IPRules(allow=["10.20.0.0/16"], deny=["10.20.99.0/24"]),
            # Only the payment provider's published ranges.
            "POST /webhooks/payments": IPRules(allow=["198.51.100.0/24"]),
        },
        # The load balancer's addresses: only their X-Forwarded-For is believed.
        trusted_proxies=["10.0.0.0/24"],
    ),
)
# --8<-- [end:layer]
