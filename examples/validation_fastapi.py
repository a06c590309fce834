"""Validation in front of FastAPI: the endpoint receives the layer's model."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI
from pydantic import BaseModel, Field
from starlette.middleware import Middleware

from apiguard import Rules, ValidationMiddleware, guard
from apiguard.validation import validated_body


class OrderIn(BaseModel):
    customer_email: Annotated[str, Field(max_length=254)]
    quantity: Annotated[int, Field(gt=0, le=1000)]


app = FastAPI()


# --8<-- [start:dependency]
@app.post("/orders", status_code=201)
async def create_order(order: Annotated[OrderIn, Depends(validated_body)]) -> dict[str, int]:
    # Validated by the layer; FastAPI neither reads nor parses the body again.
    return {"quantity": order.quantity}


@app.put("/orders/{order_id}")
async def replace_order(order_id: int, order: OrderIn) -> dict[str, int]:
    # FastAPI's own model, as usual: it reads the original bytes, replayed.
    return {"id": order_id, "quantity": order.quantity}


# --8<-- [end:dependency]


guard(
    app,
    Middleware(
        ValidationMiddleware,
        routes={"POST /orders": Rules(body=OrderIn), "PUT /orders/{order_id}": Rules(body=OrderIn)},
    ),
)
