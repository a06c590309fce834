"""Apps whose every route records, in the scope, the key it was dispatched as.

They are the oracle of the differential routing tests: a request resolves to
the key its endpoint wrote, or to none when no endpoint ran (404, 405,
redirect).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Host, Mount, Route, Router, WebSocketRoute
from starlette.websockets import WebSocket

MARK = "test.dispatched"


def endpoint(key: str) -> Any:
    async def handler(request: Request) -> Response:
        request.scope[MARK] = key
        return PlainTextResponse(key)

    handler.__name__ = "ep_" + "".join(c if c.isalnum() else "_" for c in key)
    return handler


def ws_endpoint(key: str) -> Any:
    async def handler(websocket: WebSocket) -> None:
        websocket.scope[MARK] = key
        await websocket.close()

    return handler


class MarkingApp:
    """A plain ASGI app (no routes) that marks the scope with its key."""

    def __init__(self, key: str) -> None:
        self.key = key

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        scope[MARK] = self.key
        if scope["type"] == "http":
            await PlainTextResponse(self.key)(scope, receive, send)
        else:
            await send({"type": "websocket.close", "code": 1000})


class Wrapper:
    """A pure-ASGI middleware around a mounted app (as a layer wrapped around it)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def starlette_app() -> Starlette:
    sub = Starlette(
        routes=[
            Route("/x/{id:int}", endpoint("/sub/x/{id}")),
            Route("/x/", endpoint("/sub/x/")),
        ]
    )
    return Starlette(
        routes=[
            Route("/", endpoint("/")),
            Route("/health", endpoint("/health"), methods=["GET"]),
            Route("/items", endpoint("/items"), methods=["GET", "POST"]),
            Route(
                "/items/{item_id:int}",
                endpoint("/items/{item_id}"),
                methods=["GET", "PUT", "DELETE"],
            ),
            Route("/items/{slug}", endpoint("/items/{slug}")),
            # Shadowed by /items/{slug}: Starlette takes the first match.
            Route("/items/new", endpoint("/items/new")),
            Route(
                "/users/{user_id}/orders/{order_id:uuid}",
                endpoint("/users/{user_id}/orders/{order_id}"),
                methods=["GET"],
            ),
            Route("/prices/{p:float}", endpoint("/prices/{p}")),
            Route("/files/{rest:path}", endpoint("/files/{rest}")),
            Route("/reports/{name}.csv", endpoint("/reports/{name}.csv")),
            Route("/trailing/", endpoint("/trailing/")),
            Route("/Case", endpoint("/Case")),
            Route("/any", MarkingApp("/any")),  # an ASGI endpoint: every method
            WebSocketRoute("/ws", ws_endpoint("/ws")),
            Mount(
                "/api",
                routes=[
                    Route("/", endpoint("/api/")),
                    Route("/users/{uid}", endpoint("/api/users/{uid}"), methods=["GET", "PATCH"]),
                    Mount(
                        "/v2", routes=[Route("/things/{tid:int}", endpoint("/api/v2/things/{tid}"))]
                    ),
                    WebSocketRoute("/ws", ws_endpoint("/api/ws")),
                ],
            ),
            Mount("/sub", app=sub),
            Mount(
                "/wrapped",
                app=Wrapper(
                    Starlette(
                        routes=[
                            Route("/w/{n:int}", endpoint("/wrapped/w/{n}"), methods=["GET"]),
                            WebSocketRoute("/ws", ws_endpoint("/wrapped/ws")),
                        ]
                    )
                ),
            ),
            Mount("/static", app=MarkingApp("/static/{path}")),
            Mount("/m/{tenant}", routes=[Route("/dash", endpoint("/m/{tenant}/dash"))]),
            Host(
                "api.example.com",
                app=Router(
                    [
                        Route("/h", endpoint("api.example.com/h")),
                        Route("/h/{x}", endpoint("api.example.com/h/{x}")),
                    ]
                ),
            ),
            Host(
                "{sub}.example.org",
                app=Router([Route("/tenant", endpoint("{sub}.example.org/tenant"))]),
            ),
            Route("/after-host", endpoint("/after-host")),
        ]
    )


def fastapi_app() -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.add_api_route("/health", endpoint("/health"), methods=["GET"])
    app.add_api_route("/items/{item_id:int}", endpoint("/items/{item_id}"), methods=["GET", "PUT"])

    lines = APIRouter(prefix="/{order_id}/lines")
    lines.add_api_route("/{line_no:int}", endpoint("*/lines/{line_no}"), methods=["GET"])

    orders = APIRouter(prefix="/orders")
    orders.add_api_route("/", endpoint("*/orders/"), methods=["GET", "POST"])
    orders.add_api_route("/{order_id}", endpoint("*/orders/{order_id}"), methods=["GET", "DELETE"])
    orders.include_router(lines)

    admin = APIRouter()
    admin.add_api_route("/stats", endpoint("/v1/x/stats"), methods=["GET"])
    admin.add_api_websocket_route("/live", ws_endpoint("/v1/x/live"))

    v1 = APIRouter(prefix="/v1")
    v1.include_router(orders)
    v1.include_router(admin, prefix="/x")
    app.include_router(v1)
    # The same router included twice, under another prefix.
    app.include_router(orders, prefix="/v2")

    legacy = Starlette(routes=[Route("/old/{n:int}", endpoint("/legacy/old/{n}"))])
    app.mount("/legacy", Wrapper(legacy))
    app.add_api_websocket_route("/ws", ws_endpoint("/ws"))
    return app


# The keys a shared endpoint of an included router stands for, by prefix.
def fastapi_key(marked: str, path: str) -> str:
    if not marked.startswith("*"):
        return marked
    for prefix in ("/v1", "/v2"):
        if path.startswith(prefix + "/"):
            rest = marked[1:]
            if rest.startswith("/lines"):
                return prefix + "/orders/{order_id}" + rest
            return prefix + rest
    raise AssertionError(f"{marked} reached through {path}")
