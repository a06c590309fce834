"""A layer wrapped around an app that is then mounted in another: its keys still apply."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from apiguard import APIKeyAuth, AuthMiddleware, Principal


async def page(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"{request.url.path} for {request.user.display_name or 'anyone'}")


api = Starlette(routes=[Route("/admin/stats", page), Route("/public", page)])
protected = AuthMiddleware(
    api,
    authenticators=[
        APIKeyAuth(
            keys={
                "k-reader-000001": Principal(id="reader", scopes=["read"]),
                "k-admin-0000001": Principal(id="admin", scopes=["admin"]),
            }
        )
    ],
    # Keys name the routes of `api`, the app the layer wraps...
    public=["GET /public"],
    scopes={"GET /admin/stats": ["admin"]},
)
# ... and keep applying under /api: the layer resolves with api's router.
app = Starlette(routes=[Mount("/api", app=protected)])
