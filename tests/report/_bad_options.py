"""A module whose guard() refuses a layer's options at import."""

from starlette.applications import Starlette
from starlette.middleware import Middleware

from apiguard import RateLimitMiddleware, guard

app = guard(Starlette(), Middleware(RateLimitMiddleware, limit="ten a minute"))
