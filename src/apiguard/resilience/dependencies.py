"""What is left of the request's time, for the endpoint's own outbound calls."""

from __future__ import annotations

import asyncio

from starlette.requests import HTTPConnection

from apiguard.context import RequestContext, get_context

__all__ = ["Deadline", "request_deadline"]


class Deadline:
    """The request's deadline as the endpoint sees it: read when asked, never a snapshot.

    A view of the request context's
    [`deadline`][apiguard.context.RequestContext]: inside an inner
    `TimeoutMiddleware` (a per-attempt budget) it is that one's, and the
    outer one's again after it. Without a `TimeoutMiddleware` there is no
    deadline: `remaining()` is `None` and the bounds are the given timeouts.
    """

    __slots__ = ("_context",)

    def __init__(self, context: RequestContext) -> None:
        self._context = context

    @property
    def at(self) -> float | None:
        """When the time is up, on apiguard's monotonic clock; `None`: no deadline."""
        return self._context.deadline

    def remaining(self) -> float | None:
        """Seconds left (never below 0), or `None` without a deadline."""
        return self._context.remaining()

    def bound(self, timeout: float, *, reserve: float = 0.0) -> float:
        """`timeout`, or what is left (less `reserve`) when that is less; never below 0.

        For a client's `timeout=` option. `reserve` keeps time back for the
        endpoint to answer after the call gives up (a degraded answer rather
        than the layer's 504).

        Examples:
            >>> from apiguard.context import RequestContext
            >>> from apiguard.testing import FrozenClock
            >>> with FrozenClock(monotonic=100.0):
            ...     context = RequestContext()
            ...     context.deadline = 101.0
            ...     deadline = Deadline(context)
            ...     deadline.bound(5.0), deadline.bound(5.0, reserve=0.25), deadline.bound(0.5)
            (1.0, 0.75, 0.5)
        """
        left = self._context.remaining()
        if left is None:
            return timeout
        left -= reserve
        return max(min(timeout, left), 0.0)

    @property
    def expired(self) -> bool:
        """Whether the time is up already."""
        return self._context.remaining() == 0.0

    def timeout(self) -> asyncio.Timeout:
        """`asyncio.timeout(...)` for what is left (none without a deadline).

        Examples:
            >>> async def fetch(deadline):
            ...     async with deadline.timeout():
            ...         ...  # raises TimeoutError when the request's time runs out
        """
        return asyncio.timeout(self._context.remaining())

    def __repr__(self) -> str:
        return f"Deadline(remaining={self.remaining()!r})"


def request_deadline(connection: HTTPConnection) -> Deadline:
    """The request's [`Deadline`][apiguard.resilience.Deadline], for bounding outbound calls.

    Use as a FastAPI dependency
    (`deadline: Annotated[Deadline, Depends(request_deadline)]`) or call it
    with a Starlette `Request`. The same figure is in `request.state`:
    `request.state.apiguard.remaining()`.

    Examples:
        >>> from typing import Annotated
        >>> import httpx
        >>> from fastapi import Depends, FastAPI
        >>> app = FastAPI()
        >>> @app.get("/quote")
        ... async def quote(deadline: Annotated[Deadline, Depends(request_deadline)]):
        ...     async with httpx.AsyncClient(timeout=deadline.bound(2.0)) as client:
        ...         return (await client.get("https://rates.example/usd")).json()
    """
    return Deadline(get_context(connection.scope))
