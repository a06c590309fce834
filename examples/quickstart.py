from fastapi import FastAPI
from pydantic import BaseModel
from starlette.middleware import Middleware

from apiguard import (
    APIKeyAuth,
    AuthMiddleware,
    Principal,
    RateLimitMiddleware,
    Rules,
    ValidationMiddleware,
    by_principal,
    guard,
)


class OrderIn(BaseModel):
    sku: str
    quantity: int


app = FastAPI()


@app.get("/orders/{order_id}")
async def get_order(order_id: int) -> dict[str, int]:
    return {"id": order_id}


@app.post("/orders", status_code=201)
async def create_order(order: OrderIn) -> OrderIn:
    return order


KEYS = {"k-partner-0001": Principal(id="partner", scopes=["orders:write"], plan="pro")}

guard(
    app,  # layers listed outermost first
    Middleware(RateLimitMiddleware, name="ip", limit="100/minute"),
    Middleware(
        AuthMiddleware,
        authenticators=[APIKeyAuth(keys=KEYS)],
        scopes={"POST /orders": ["orders:write"]},
    ),
    Middleware(
        RateLimitMiddleware,
        name="plan",
        key=by_principal(),
        plans={"free": "10/minute", "pro": "1000/minute"},
    ),
    Middleware(ValidationMiddleware, routes={"POST /orders": Rules(body=OrderIn)}),
)
