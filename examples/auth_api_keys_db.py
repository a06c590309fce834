"""API keys from a database: stored as digests, looked up asynchronously."""

import asyncio
import sqlite3

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from apiguard import APIKeyAuth, AuthMiddleware, Principal, guard
from apiguard.auth import key_digest

# --8<-- [start:store]
# The table holds the SHA-256 of each key, never the key itself.
database = sqlite3.connect(":memory:", check_same_thread=False)
database.execute("CREATE TABLE api_keys (digest TEXT PRIMARY KEY, owner TEXT, plan TEXT)")
database.execute(
    "INSERT INTO api_keys VALUES (?, ?, ?)", (key_digest("pk-live-7d1e3b9a5c2f"), "acme", "pro")
)


def _find(digest: str) -> tuple[str, str] | None:
    row = database.execute(
        "SELECT owner, plan FROM api_keys WHERE digest = ?", (digest,)
    ).fetchone()
    return None if row is None else (row[0], row[1])


async def find_key(key: str) -> Principal | None:
    """Called for keys not seen in the last minute; never blocks the event loop."""
    row = await asyncio.to_thread(_find, key_digest(key))
    return None if row is None else Principal(id=row[0], plan=row[1])


# --8<-- [end:store]


async def whoami(request: Request) -> JSONResponse:
    return JSONResponse({"id": request.user.identity, "plan": request.state.principal.plan})


# --8<-- [start:guard]
app = guard(
    Starlette(routes=[Route("/whoami", whoami)]),
    Middleware(
        AuthMiddleware,
        authenticators=[APIKeyAuth(lookup=find_key, timeout=1.0, cache_ttl=60)],
    ),
)
# --8<-- [end:guard]
