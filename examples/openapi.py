"""A FastAPI app whose OpenAPI schema documents its guards."""

from fastapi import FastAPI
from pydantic import BaseModel
from starlette.middleware import Middleware

from apiguard import APIKeyAuth, AuthMiddleware, Principal, RateLimitMiddleware, guard
from apiguard.openapi import guarded_openapi


class Note(BaseModel):
    text: str


app = FastAPI(title="Notes")


@app.get("/notes")
async def notes() -> list[Note]:
    return []


@app.post("/notes", status_code=201)
async def add(note: Note) -> Note:
    return note


# --8<-- [start:wire]
guard(
    app,
    Middleware(RateLimitMiddleware, name="ip", limit="100/minute"),
    Middleware(
        AuthMiddleware,
        authenticators=[APIKeyAuth(keys={"k-notes-0001": Principal(id="ada", scopes=["write"])})],
        public=["GET /openapi.json", "GET /docs"],  # the schema and its viewer
        scopes={"POST /notes": ["write"]},
    ),
)
app.openapi = guarded_openapi(app)  # type: ignore[method-assign]
# --8<-- [end:wire]
