"""An app factory for `uvicorn --factory --workers 2` on one store: every strategy, policy, plan.

The store is `APIGUARD_TEST_STORE` (a Cluster or Sentinel URI), the limit
`APIGUARD_TEST_LIMIT` (`L/hour`), the store timeout
`APIGUARD_TEST_STORE_TIMEOUT`. One limiter per strategy, each counting the
requests under its own prefix (`/fixed-window/...`, `/moving-window/...`,
`/sliding-window-counter/...`) and keyed by `X-Client`:

- `/<strategy>/one`: the general policy, `L/hour`, or by plan (`X-Plan:
  pro` sets a principal with plan `pro`: `2L/hour`);
- `/<strategy>/two`: a two-quota policy, `L/hour; 4L/day`;
- `/<strategy>/cost`: the general policy, 5 units a request.
"""

from __future__ import annotations

import os
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from apiguard import Principal, RateLimitMiddleware, guard
from apiguard.context import set_principal
from apiguard.ratelimit import by_header
from tests.ratelimit._helpers import WorkerHeader

STRATEGIES = ("fixed-window", "moving-window", "sliding-window-counter")
COST = 5


async def ok(request: Request) -> JSONResponse:
    return JSONResponse({"pid": os.getpid()})


class PlanHeader:
    """Stands in for authentication: `X-Plan: pro` makes the caller a principal on that plan."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"x-plan":
                    set_principal(scope, Principal(id="caller", plan=value.decode()), ())
        await self.app(scope, receive, send)


class Under:
    """A key function: the `X-Client` header, for requests under one prefix only."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.header = by_header("x-client")

    def __call__(self, scope: Any) -> str | None:
        if not scope["path"].startswith(self.prefix):
            return None  # another limiter's request: not counted here
        return self.header(scope)


def _limiter(strategy: str, amount: int) -> Middleware:
    prefix = f"/{strategy}/"
    return Middleware(
        RateLimitMiddleware,
        name=strategy,
        limit=f"{amount}/hour",
        key=Under(prefix),
        storage=os.environ["APIGUARD_TEST_STORE"],
        strategy=strategy,
        routes={f"{prefix}two": f"{amount}/hour; {4 * amount}/day"},
        cost={f"{prefix}cost": COST},
        plans={"pro": f"{2 * amount}/hour"},
        store_timeout=float(os.environ.get("APIGUARD_TEST_STORE_TIMEOUT", "2.0")),
    )


def make() -> Starlette:
    """The app, limited as the environment says (uvicorn calls it in each worker)."""
    amount = int(os.environ["APIGUARD_TEST_LIMIT"].partition("/")[0])
    routes = [Route("/health", ok)]
    for strategy in STRATEGIES:
        routes += [Route(f"/{strategy}/{path}", ok) for path in ("one", "two", "cost")]
    return guard(
        Starlette(routes=routes),
        Middleware(WorkerHeader),
        Middleware(PlanHeader),
        *(_limiter(strategy, amount) for strategy in STRATEGIES),
    )
