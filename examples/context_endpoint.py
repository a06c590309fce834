from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from apiguard import get_context, guard
from examples.custom_layer import MaintenanceMiddleware


async def endpoint(request: Request) -> JSONResponse:
    context = get_context(request.scope)
    return JSONResponse(
        {
            "route": context.route.key if context.route else None,
            "decisions": [[d.layer, d.outcome] for d in context.decisions],
        }
    )


app = guard(
    Starlette(routes=[Route("/orders/{order_id:int}", endpoint, methods=["GET", "DELETE"])]),
    Middleware(MaintenanceMiddleware, routes={"DELETE /orders/{order_id}": 1}),
)
