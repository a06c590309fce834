"""The fail-safe layers on the allowed path, each beside its primitive in the same run.

- `TimeoutMiddleware` beside a pure-ASGI layer that runs the app under
  `asyncio.timeout()` (the primitive a timeout layer is written with; the
  target is to cost no more than it);
- `RetryMiddleware` beside a hand-written retry loop (a scope copy and a
  `send` that checks the status), and `RetryBudget.deposit()`, the one
  call of its budget on every request;
- `TimeoutMiddleware` with `StaleIfError` keeping the responses, beside
  the memory store's `put` of a copy;
- `CircuitBreakerMiddleware` (a breaker per route, or one for the app),
  `ConcurrencyLimitMiddleware` (fixed, and adaptive) and
  `HealthMiddleware` (on a route that is not its own) on the allowed path;
- the refusals decided before any app work, an open breaker's 503 and a
  shed request's 503, each layer around a plain ASGI app it never calls,
  beside that app sending the same canned 503 itself; and the liveness
  answer.

The target of each layer alone is 3 µs over the bare app (the benchmark
issue), the timeout's the cost of `asyncio.timeout()` in the same run, and
a refusal's 3 µs over sending the canned 503.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.middleware import Middleware

from apiguard import (
    CircuitBreakerMiddleware,
    ConcurrencyLimitMiddleware,
    HealthMiddleware,
    RetryMiddleware,
    StaleIfError,
    TimeoutMiddleware,
    guard,
)
from apiguard.problems import Problem, ProblemResponse
from apiguard.resilience import RetryBudget
from apiguard.storage import MemoryKeyValue
from benchmarks.apps import PassThrough, starlette_app
from benchmarks.driver import ASGICase, Case, FuncCase, Request, Result, paired_overhead

TITLE = "resilience: µs per request over the bare app, and the primitives"

GET = Request("GET", "/orders/42")
BASE = "starlette GET"
_RETRYABLE = frozenset({502, 503, 504})
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class AsyncioTimeout:
    """The primitive: the app under `asyncio.timeout()`, nothing else."""

    def __init__(self, app: Any, *, timeout: float = 15.0) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        async with asyncio.timeout(self.timeout):
            await self.app(scope, receive, send)


class _Again(Exception):
    pass


class HandWrittenRetry:
    """The primitive: a retry loop as one writes it by hand (no budget, no body replay)."""

    def __init__(self, app: Any, *, attempts: int = 3) -> None:
        self.app = app
        self.attempts = attempts

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in _IDEMPOTENT:
            await self.app(scope, receive, send)
            return
        last = self.attempts - 1
        for attempt in range(self.attempts):

            async def checked(message: Any, attempt: int = attempt) -> None:
                if (
                    message["type"] == "http.response.start"
                    and message["status"] in _RETRYABLE
                    and attempt < last
                ):
                    raise _Again
                await send(message)

            try:
                await self.app(dict(scope), receive, checked)
            except _Again:
                continue
            return


CANNED = "canned 503, no layer (primitive)"
_RETRY_AFTER = [(b"retry-after", b"5")]


class Canned503:
    """The primitive of a refusal: a plain ASGI app sending a 503 built once."""

    def __init__(self) -> None:
        self.response = ProblemResponse(Problem(status=503, detail="Temporarily unavailable."))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.response.send(scope, send, _RETRY_AFTER)


class NeverCalled:
    """The app behind a layer that refuses: calling it is a bug."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the app was called")


def open_breaker() -> CircuitBreakerMiddleware:
    """A breaker for the whole app, open for a day."""
    layer = CircuitBreakerMiddleware(
        NeverCalled(),
        per="app",
        consecutive_failures=1,
        open_seconds=86_400,
        max_open_seconds=86_400,
    )
    layer._slot(layer.default, None).breaker.failure()
    return layer


def full_shedder() -> ConcurrencyLimitMiddleware:
    """A shedder whose one slot is taken for good."""
    layer = ConcurrencyLimitMiddleware(NeverCalled(), max_in_flight=1)
    assert layer.pool.try_acquire("normal")
    return layer


def _layered(name: str, *layers: Middleware) -> ASGICase:
    return ASGICase(name, guard(starlette_app(), *layers), GET, baseline=BASE)


def cases() -> list[Case]:
    budget = RetryBudget()
    store = MemoryKeyValue()
    copy = b"\x00" * 1024

    async def put(i: int) -> None:
        await store.put("stale:bench", copy, 300.0)

    return [
        ASGICase(BASE, starlette_app(), GET),
        _layered("+ pass-through GET", Middleware(PassThrough)),
        _layered("+ asyncio.timeout() layer GET (primitive)", Middleware(AsyncioTimeout)),
        _layered("+ TimeoutMiddleware GET", Middleware(TimeoutMiddleware)),
        _layered(
            "+ TimeoutMiddleware, per-route GET",
            Middleware(TimeoutMiddleware, routes={"GET /orders/{order_id}": 5.0}),
        ),
        _layered("+ hand-written retry loop GET (primitive)", Middleware(HandWrittenRetry)),
        _layered("+ RetryMiddleware GET", Middleware(RetryMiddleware)),
        _layered(
            "+ RetryMiddleware + TimeoutMiddleware GET",
            Middleware(RetryMiddleware),
            Middleware(TimeoutMiddleware),
        ),
        _layered(
            "+ TimeoutMiddleware with StaleIfError GET",
            Middleware(TimeoutMiddleware, fallback=StaleIfError()),
        ),
        _layered("+ CircuitBreakerMiddleware GET", Middleware(CircuitBreakerMiddleware)),
        _layered(
            "+ CircuitBreakerMiddleware, one for the app GET",
            Middleware(CircuitBreakerMiddleware, per="app"),
        ),
        _layered("+ ConcurrencyLimitMiddleware GET", Middleware(ConcurrencyLimitMiddleware)),
        _layered(
            "+ ConcurrencyLimitMiddleware, adaptive GET",
            Middleware(ConcurrencyLimitMiddleware, adaptive=True),
        ),
        _layered("+ HealthMiddleware GET", Middleware(HealthMiddleware)),
        ASGICase(
            "HealthMiddleware liveness answer",
            guard(starlette_app(), Middleware(HealthMiddleware)),
            Request("GET", "/health/live"),
        ),
        ASGICase(CANNED, Canned503(), GET, expect=503),
        ASGICase("open breaker: 503", open_breaker(), GET, expect=503, baseline=CANNED),
        ASGICase("shed: 503", full_shedder(), GET, expect=503, baseline=CANNED),
        FuncCase("RetryBudget.deposit() (primitive)", lambda i: budget.deposit()),
        FuncCase("MemoryKeyValue.put of a 1 KiB copy (primitive)", put, is_async=True),
    ]


#: The layers and what each is held to: `None` for the 3 µs target alone, or
#: the primitive whose cost it must not pass.
_TARGETS = {
    "+ TimeoutMiddleware GET": "+ asyncio.timeout() layer GET (primitive)",
    "+ TimeoutMiddleware, per-route GET": "+ asyncio.timeout() layer GET (primitive)",
    "+ RetryMiddleware GET": None,
    "+ TimeoutMiddleware with StaleIfError GET": None,
    "+ CircuitBreakerMiddleware GET": None,
    "+ CircuitBreakerMiddleware, one for the app GET": None,
    "+ ConcurrencyLimitMiddleware GET": None,
    "+ ConcurrencyLimitMiddleware, adaptive GET": None,
    "+ HealthMiddleware GET": None,
    "open breaker: 503": None,
    "shed: 503": None,
}


def summary(results: list[Result]) -> str:
    """Each layer against its target: 3 µs, and the timeout no dearer than asyncio.timeout()."""
    by_name = {r.case.name: r for r in results}
    lines = [
        "| layer | overhead µs | target µs | met |",
        "|---|---:|---:|:-:|",
    ]
    for name, primitive in _TARGETS.items():
        base = by_name[by_name[name].case.baseline or BASE]
        overhead = paired_overhead(by_name[name], base)[0]
        target = 3.0
        if primitive is not None:
            target = min(target, paired_overhead(by_name[primitive], base)[0])
        met = "yes" if overhead <= target else "no"
        lines.append(f"| {name} | {overhead:+.2f} | {target:.2f} | {met} |")
    return "\n".join(lines)
