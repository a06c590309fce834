"""A layer of your own on apiguard's core: routes under maintenance answer 503."""

from collections.abc import Mapping

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from apiguard import ConfigError, Decision, get_context, guard
from apiguard.compose import checked_at_startup
from apiguard.problems import Problem, ProblemResponse
from apiguard.routing import RoutePolicies


class MaintenanceMiddleware:
    """Answers 503 + Retry-After on the routes under maintenance."""

    def __init__(self, app: ASGIApp, *, routes: Mapping[str, int], retry_after: int = 300) -> None:
        if not isinstance(retry_after, int) or retry_after <= 0:
            msg = f"MaintenanceMiddleware: retry_after {retry_after!r} is not a positive int"
            raise ConfigError(msg)
        # Route keys to a flag; checked against the app's routes at start-up.
        self.routes: RoutePolicies[int] = RoutePolicies("routes", routes, 0)
        self.app = checked_at_startup(app, lambda: self.routes.bind(app))
        # Built once: the rejection's bytes are reused for every request.
        self.rejection = ProblemResponse(
            Problem(status=503, detail="This resource is under maintenance."),
            [(b"retry-after", str(retry_after).encode())],
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = get_context(scope)
        if self.routes.lookup(scope):
            context.record(Decision("maintenance", "reject", reason="maintenance", status=503))
            await self.rejection.send(scope, send)
            return
        context.record(Decision("maintenance", "allow"))
        await self.app(scope, receive, send)


async def list_orders(request: Request) -> JSONResponse:
    return JSONResponse([])


app = guard(
    Starlette(routes=[Route("/orders", list_orders, methods=["GET", "POST"])]),
    Middleware(MaintenanceMiddleware, routes={"POST /orders": 1}),
)
