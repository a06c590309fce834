"""Payments that run once: a required Idempotency-Key on POST /payments, keys per partner."""

import os

from fastapi import FastAPI, Request
from starlette.middleware import Middleware

from apiguard import APIKeyAuth, AuthMiddleware, IdempotencyMiddleware, Principal, guard
from apiguard.idempotency import RoutePolicy

app = FastAPI()
#: What the payment provider was asked to capture: one entry per charge made.
CHARGES: list[dict[str, object]] = []


@app.post("/payments", status_code=201)
async def pay(request: Request) -> dict[str, object]:
    payment = await request.json()
    CHARGES.append(payment)
    return {"id": f"pay_{len(CHARGES)}", "amount": payment["amount"], "status": "captured"}


@app.post("/orders", status_code=201)
async def create_order(request: Request) -> dict[str, object]:
    return {"id": len(CHARGES) + 1}


@app.post("/webhooks/provider", status_code=204)
async def provider_webhook() -> None:
    return None


# --8<-- [start:guard]
guard(
    app,
    Middleware(  # first: keys belong to the principal it establishes
        AuthMiddleware,
        authenticators=[
            APIKeyAuth(
                keys={
                    "pk-acme-7f3a9c2e4b1d": Principal(id="acme"),
                    "pk-globex-2c9f4e7a1b": Principal(id="globex"),
                }
            ),
        ],
    ),
    Middleware(
        IdempotencyMiddleware,
        # One store for every worker and host: a duplicate that reaches another
        # worker finds the claim there. memory:// serves one process only.
        storage=os.environ.get("IDEMPOTENCY_REDIS", "memory://"),
        routes={"POST /payments": RoutePolicy(required=True)},  # 400 without a key
        exempt=["POST /webhooks/provider"],  # the provider retries by its own event ids
        ttl=24 * 3600,  # seconds a response is replayed (POST /orders: a key is optional)
        on_store_error="fail-closed",  # the default: 503 rather than a second charge
    ),
)
# --8<-- [end:guard]
