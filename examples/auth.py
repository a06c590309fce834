"""The orders API behind bearer JWTs from an identity provider, and partner API keys."""

import os
from typing import Annotated

from fastapi import Depends, FastAPI
from starlette.middleware import Middleware

from apiguard import APIKeyAuth, AuthMiddleware, JWTAuth, Principal, guard
from apiguard.auth import current_principal

# The identity provider: its JWKS URL comes from OpenID Connect discovery.
ISSUER = os.environ.get("ORDERS_ISSUER", "https://id.example/")

app = FastAPI()


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/orders")
async def list_orders(
    principal: Annotated[Principal, Depends(current_principal)],
) -> dict[str, str | None]:
    return {"caller": principal.id, "plan": principal.plan, "via": principal.method}


@app.post("/orders", status_code=201)
async def create_order(
    principal: Annotated[Principal, Depends(current_principal)],
) -> dict[str, str]:
    return {"created_by": principal.id}


# --8<-- [start:guard]
guard(
    app,
    Middleware(
        AuthMiddleware,
        authenticators=[
            JWTAuth(issuer=ISSUER, audience="orders", algorithms=["RS256"]),
            APIKeyAuth(keys={"pk-2c9f4e7a1b8d3f6a": Principal(id="acme", plan="pro")}),
        ],
        public=["GET /health"],
        scopes={"POST /orders": ["orders:write"]},
    ),
)
# --8<-- [end:guard]
