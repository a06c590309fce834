"""A breaker per route in front of a flaky dependency: the last good answer, else a 503."""

import logging

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from apiguard import CircuitBreakerMiddleware, StaleIfError, TimeoutMiddleware, guard
from apiguard.breaker import BreakerPolicy, Transition

logger = logging.getLogger("orders.breaker")


class Inventory:
    """A dependency the tests break and mend."""

    down = False


async def stock(request: Request) -> JSONResponse:
    if Inventory.down:
        return JSONResponse({"error": "inventory unreachable"}, status_code=502)
    return JSONResponse({"sku": request.path_params["sku"], "stock": 7})


async def payments(request: Request) -> JSONResponse:
    return JSONResponse({"paid": True}, status_code=201)


# --8<-- [start:on_transition]
def page_on_call(transition: Transition) -> None:
    """Each transition of the layer's breakers, as it happens (keep it quick)."""
    if transition.state == "open":
        logger.error("stop calling %s: %s", transition.key, transition.describe())


# --8<-- [end:on_transition]

# --8<-- [start:layers]
app = guard(
    Starlette(
        routes=[
            Route("/stock/{sku}", stock),
            Route("/payments", payments, methods=["POST"]),
        ]
    ),
    Middleware(
        CircuitBreakerMiddleware,
        # A breaker per route: 20 calls in the last 30 s, half of them failed.
        failure_rate=0.5,
        minimum_calls=20,
        open_seconds=5.0,  # then 3 probes; a failed one doubles it, up to 60 s
        open_growth=2.0,
        routes={
            # Payments: a stricter policy of their own, on consecutive failures.
            "POST /payments": BreakerPolicy(window=None, consecutive_failures=3),
        },
        # While a breaker is open: the last good GET, else 503 + Retry-After.
        fallback=StaleIfError(ttl=600),
        on_transition=page_on_call,
    ),
    Middleware(TimeoutMiddleware, timeout=2.0),  # a timeout inside counts as a failure
)
# --8<-- [end:layers]
