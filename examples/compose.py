from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware

from apiguard import guard

# --8<-- [start:guard]
app = guard(
    Starlette(),
    Middleware(TrustedHostMiddleware, allowed_hosts=["api.example.com"]),  # outermost
    Middleware(GZipMiddleware, minimum_size=1000),  # innermost
)
# --8<-- [end:guard]

# --8<-- [start:listed]
listed = Starlette(
    middleware=[
        Middleware(TrustedHostMiddleware, allowed_hosts=["api.example.com"]),  # outermost
        Middleware(GZipMiddleware, minimum_size=1000),  # innermost
    ]
)
# --8<-- [end:listed]

# --8<-- [start:added]
added = Starlette()
added.add_middleware(GZipMiddleware, minimum_size=1000)  # innermost: added first
added.add_middleware(TrustedHostMiddleware, allowed_hosts=["api.example.com"])  # outermost
# --8<-- [end:added]
