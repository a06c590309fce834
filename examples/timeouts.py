"""Time budgets per route, and the endpoint bounding its own calls by what is left."""

import asyncio
from typing import Annotated

from fastapi import Depends, FastAPI
from starlette.middleware import Middleware

from apiguard import TimeoutMiddleware, guard
from apiguard.resilience import Deadline, request_deadline

app = FastAPI()


# --8<-- [start:deadline]
@app.get("/quotes/{symbol}")
async def quote(
    symbol: str, deadline: Annotated[Deadline, Depends(request_deadline)]
) -> dict[str, object]:
    try:
        # An outbound call bounded by what is left of the request's time,
        # half a second kept back to answer something useful instead of a 504.
        async with asyncio.timeout(deadline.bound(2.0, reserve=0.5)):
            price = await fetch_price(symbol)
    except TimeoutError:
        return {"symbol": symbol, "price": None, "stale": True}
    return {"symbol": symbol, "price": price}


# --8<-- [end:deadline]


async def fetch_price(symbol: str) -> float:
    """A slow upstream (a stand-in for an HTTP call)."""
    await asyncio.sleep(10.0 if symbol == "SLOW" else 0.0)
    return 101.5


@app.get("/reports/{year}")
async def report(year: int) -> dict[str, int]:
    await asyncio.sleep(0.0)
    return {"year": year}


@app.get("/export")
def export() -> dict[str, str]:  # a `def` endpoint: FastAPI runs it in a thread
    return {"rows": "..."}


# --8<-- [start:layer]
guard(
    app,
    Middleware(
        TimeoutMiddleware,
        timeout=1.0,  # seconds, every route (15 s by default)
        routes={
            "GET /reports/{year}": 30.0,  # a slow report gets longer
            "GET /export": None,  # no budget at all
        },
    ),
)
# --8<-- [end:layer]
