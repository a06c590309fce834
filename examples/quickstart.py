from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware

from apiguard import guard

app = FastAPI()


@app.get("/orders/{order_id}")
async def get_order(order_id: int) -> dict[str, int]:
    return {"id": order_id}


guard(
    app,  # layers listed outermost first
    Middleware(TrustedHostMiddleware, allowed_hosts=["api.example.com", "localhost"]),
    Middleware(GZipMiddleware, minimum_size=1000),
)
