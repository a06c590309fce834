"""An app whose layer names a route it does not have: it must not start."""

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from apiguard import guard
from tests._layers import TagLayer


async def health(request: object) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = guard(
    Starlette(routes=[Route("/health", health)]),
    Middleware(TagLayer, name="t", routes={"/helth": "x"}),
)
