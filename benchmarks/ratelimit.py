"""Rate limiting: the memory store against the number of keys, the layer, Redis, slowapi.

1. Cost per hit of apiguard's memory store from 1 to 1,000,000 live keys,
   beside `limits`' async MemoryStorage (capped at 10,000 keys: it walks
   every key on each expiry pass, so it gets too slow to run beyond), with
   the event loop turning: each hit is followed by `asyncio.sleep(0)`, which
   lets scheduled tasks (limits' expiry task) run, as in a busy server.
2. The layer over the bare app with memory:// for each strategy, beside the
   `limits` primitive (`limits.aio.strategies.*.hit`) on limits' storage and
   on apiguard's.
3. The layer with redis:// on loopback for each strategy, beside one PING,
   and `limits`' own fixed-window hit on its Redis storage; the round trips
   per request are counted and printed before the timing.
4. slowapi's decorator on the same app, as the peer.

Redis: `APIGUARD_BENCH_REDIS=redis://...`, else a redis-server from PATH is
started on a free port for the run.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import socket
import subprocess
import sys
import time
from typing import Any

from limits import parse
from limits.aio.storage import MemoryStorage as LimitsMemoryStorage
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)
from limits.storage import storage_from_string
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from apiguard import RateLimitMiddleware, guard
from apiguard.storage import MemoryStorage, Quota
from benchmarks.apps import ORDER, starlette_app
from benchmarks.driver import ASGICase, Case, FuncCase
from benchmarks.driver import Request as BenchRequest

TITLE = "ratelimit: µs per hit and per request"

GET = BenchRequest("GET", "/orders/42")
HIGH = "1000000/hour"  # never refused during a run: the allowed path is measured
STRATEGIES = ["fixed-window", "moving-window", "sliding-window-counter"]
LIMITERS = {
    "fixed-window": FixedWindowRateLimiter,
    "moving-window": MovingWindowRateLimiter,
    "sliding-window-counter": SlidingWindowCounterRateLimiter,
}
APIGUARD_KEYS = [1, 1_000, 100_000, 1_000_000]
LIMITS_KEYS = [1, 1_000, 10_000]


def _keys(n: int) -> list[str]:
    return [f"198.51.{i // 65536}.{i % 65536}" for i in range(n)]


async def _turn() -> None:
    await asyncio.sleep(0)


def _store_cases() -> list[Case]:
    """1: a hit on a live key among n, then a turn of the event loop."""
    cases: list[Case] = [FuncCase("loop turn (sleep(0))", lambda i: _turn(), is_async=True)]
    item = parse(HIGH)
    quotas = (Quota("q", 1_000_000, 3600),)
    for n in APIGUARD_KEYS:
        keys = _keys(n)
        store = MemoryStorage()
        now = time.time()
        for key in keys:
            store.fixed_window(key, quotas, 1, now)

        async def direct(i: int, store: MemoryStorage = store, keys: list[str] = keys) -> None:
            store.fixed_window(keys[i % len(keys)], quotas, 1, time.time())
            await asyncio.sleep(0)

        cases.append(
            FuncCase(
                f"apiguard memory, fixed window, {n:,} keys",
                direct,
                is_async=True,
                baseline="loop turn (sleep(0))",
                unit="hit",
            )
        )
    for strategy in ("fixed-window", "sliding-window-counter"):
        for n in LIMITS_KEYS:
            keys = _keys(n)
            limiter = LIMITERS[strategy](LimitsMemoryStorage())
            hits = [limiter.hit(item, key) for key in keys]  # filled when the run starts

            async def hit(
                i: int, limiter: Any = limiter, keys: list[str] = keys, fill: list[Any] = hits
            ) -> None:
                while fill:  # the first call fills the storage (untimed warm-up)
                    await fill.pop()
                await limiter.hit(item, keys[i % len(keys)])
                await asyncio.sleep(0)

            cases.append(
                FuncCase(
                    f"limits MemoryStorage, {strategy}, {n:,} keys",
                    hit,
                    is_async=True,
                    baseline="loop turn (sleep(0))",
                    unit="hit",
                )
            )
    return cases


async def _hit_primitive(limiter: Any, item: Any) -> None:
    await limiter.hit(item, "203.0.113.9")


def _layer_cases() -> list[Case]:
    """2: the layer with memory:// over the bare app, beside limits' primitive."""
    cases: list[Case] = [ASGICase("starlette GET", starlette_app(), GET)]
    item = parse(HIGH)
    for strategy in STRATEGIES:
        app = guard(starlette_app(), Middleware(RateLimitMiddleware, limit=HIGH, strategy=strategy))
        cases.append(
            ASGICase(f"+ ratelimit memory:// {strategy}", app, GET, baseline="starlette GET")
        )
        for label, storage in (
            ("limits MemoryStorage", LimitsMemoryStorage()),
            ("apiguard MemoryStorage", MemoryStorage()),
        ):
            limiter = LIMITERS[strategy](storage)
            cases.append(
                FuncCase(
                    f"primitive: {strategy}.hit on {label}",
                    lambda i, limiter=limiter: _hit_primitive(limiter, item),
                    is_async=True,
                    unit="hit",
                )
            )
    return cases


# --- Redis ---------------------------------------------------------------------------


def _redis_url() -> str:
    url = os.environ.get("APIGUARD_BENCH_REDIS")
    if url:
        return url
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("ratelimit benchmark: no redis-server on PATH; set APIGUARD_BENCH_REDIS")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    atexit.register(proc.kill)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.02)
    return f"redis://127.0.0.1:{port}/0"


class CountingCase(ASGICase):
    """An ASGICase that counts the Redis round trips of its requests first."""

    async def check(self) -> None:
        await super().check()
        import redis.asyncio

        sent: list[Any] = []
        original = redis.asyncio.Redis.execute_command

        async def counting(client: Any, *args: Any, **options: Any) -> Any:
            sent.append(args[0])
            return await original(client, *args, **options)

        redis.asyncio.Redis.execute_command = counting  # type: ignore[method-assign]
        try:
            for template, body in self.templates * 20:
                await self._one(template, body)
        finally:
            redis.asyncio.Redis.execute_command = original  # type: ignore[method-assign]
        print(
            f"  {self.name}: {len(sent) / 20:.2f} Redis round trips per request ({set(sent)})",
            file=sys.stderr,
        )


def _redis_cases() -> list[Case]:
    """3: the layer with redis:// on loopback, beside one PING and limits' own hit."""
    import redis.asyncio

    url = _redis_url()
    ping_client = redis.asyncio.Redis.from_url(url)
    limits_redis = FixedWindowRateLimiter(
        storage_from_string("async+" + url, implementation="redispy")
    )
    item = parse(HIGH)
    cases: list[Case] = [
        FuncCase("redis PING (one round trip)", lambda i: ping_client.ping(), is_async=True),
        FuncCase(
            "primitive: limits fixed-window.hit on RedisStorage (redispy)",
            lambda i: _hit_primitive(limits_redis, item),
            is_async=True,
            unit="hit",
        ),
    ]
    for strategy in STRATEGIES:
        app = guard(
            starlette_app(),
            Middleware(RateLimitMiddleware, limit=HIGH, strategy=strategy, storage=url),
        )
        cases.append(
            CountingCase(f"+ ratelimit redis:// {strategy}", app, GET, baseline="starlette GET")
        )
    return cases


# --- slowapi -------------------------------------------------------------------------


def _slowapi_app() -> Any:
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from slowapi.util import get_remote_address
    from starlette.applications import Starlette

    limiter = Limiter(key_func=get_remote_address, storage_uri="memory://")

    @limiter.limit(HIGH)
    async def get_order(request: Request) -> Response:
        return JSONResponse({**ORDER, "id": request.path_params["order_id"]})

    app = Starlette(routes=[Route("/orders/{order_id:int}", get_order)])
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
    return app


def cases() -> list[Case]:
    selected = os.environ.get("APIGUARD_BENCH_PARTS", "store,layer,redis,slowapi").split(",")
    out: list[Case] = []
    if "store" in selected:
        out += _store_cases()
    if "layer" in selected or "redis" in selected or "slowapi" in selected:
        out += (
            _layer_cases()
            if "layer" in selected
            else [ASGICase("starlette GET", starlette_app(), GET)]
        )
    if "redis" in selected:
        out += _redis_cases()
    if "slowapi" in selected:
        out.append(
            ASGICase("+ slowapi @limit (memory)", _slowapi_app(), GET, baseline="starlette GET")
        )
    return out
