"""Roll a limit out in shadow mode: it counts and records, and refuses nothing."""

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from apiguard import RateLimitMiddleware, get_context, guard


# --8<-- [start:endpoint]
async def orders(request: Request) -> JSONResponse:
    decision = get_context(request.scope).decisions_of("ratelimit")[-1]
    # reason is "shadow" where enforcing would have answered 429
    return JSONResponse({"would_refuse": decision.reason == "shadow"})


app = guard(
    Starlette(routes=[Route("/orders", orders)]),
    Middleware(RateLimitMiddleware, name="trial", limit="2/minute", shadow=True),
)
# --8<-- [end:endpoint]
