"""Rate limiting: the memory store against the number of keys, the layer, Redis, slowapi.

1. Cost per hit of apiguard's memory store from 1 to 1,000,000 live keys,
   beside `limits`' async MemoryStorage (capped at 10,000 keys: it walks
   every key on each expiry pass, so it gets too slow to run beyond), with
   the event loop turning: each hit is followed by `asyncio.sleep(0)`, which
   lets scheduled tasks (limits' expiry task) run, as in a busy server.
2. The layer over the bare app with memory:// for each strategy, beside the
   `limits` primitive (`limits.aio.strategies.*.hit`) on limits' storage and
   on apiguard's.
3. The layer with redis:// on loopback for each strategy, with one quota and
   with two, on apiguard's RESP client (and with one quota on redis-py, as
   before it; `APIGUARD_BENCH_REDISPY=0` leaves those out), beside a PING on
   a raw asyncio socket, on apiguard's client and on redis-py, and `limits`'
   own fixed-window hit on its Redis storage. The round trips per request
   are counted (by the client, and by the server) and printed before the
   timing; `summary()` sets each overhead against the target: round trips x
   the client's PING + 10 µs.
4. slowapi's decorator on the same app, as the peer.

Redis: `APIGUARD_BENCH_REDIS=redis://...`, else a redis-server from PATH is
started on a free port for the run. That server, the connections the rows
open (`aclose()` closes them) and the Redis case kinds are in
`benchmarks._redis_cases`; the scripts' server time per call, which the
summary prints, in `benchmarks._script_costs`. Both are imported here.
"""

from __future__ import annotations

import asyncio
import os
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
from apiguard.storage._resp import PyReader, ReplyError
from benchmarks._redis_cases import (
    _OPENED,
    CountingCase,
    RawPingCase,
    _PingFirst,
    _redis_url,
    _store_of,
)
from benchmarks._redis_cases import aclose as aclose  # re-exported: tests, benchmarks.profile
from benchmarks._script_costs import server_costs
from benchmarks.apps import ORDER, starlette_app
from benchmarks.driver import ASGICase, Case, FuncCase, Result, paired_overhead, quick
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
#: Live keys in the store rows (the quick mode keeps the two smallest sizes).
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
    for n in APIGUARD_KEYS[:2] if quick() else APIGUARD_KEYS:
        keys = _keys(n)
        store = MemoryStorage(max_keys=2 * max(APIGUARD_KEYS))  # n live keys, none evicted
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
        for n in LIMITS_KEYS[:2] if quick() else LIMITS_KEYS:
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


def _hiredis_reader() -> Any:
    import hiredis

    return hiredis.Reader(replyError=ReplyError)


async def _ping_in_timeout(store: Any) -> Any:
    """What a per-call `asyncio.timeout` would add (the client has its own deadline timer)."""
    async with asyncio.timeout(0.25):
        return await store.client().execute(b"*1\r\n$4\r\nPING\r\n")


MULTI = "1000000/hour; 100000000/day"
#: A URI option apiguard's client leaves to redis-py: the same layer on redis-py, for comparison.
REDISPY = "?health_check_interval=0"


def _redis_cases() -> list[Case]:
    """3: the layer with redis:// on loopback, beside PINGs of three clients and limits' own hit."""
    import redis.asyncio

    from apiguard.storage import open_store

    url = _redis_url()
    ping_client = redis.asyncio.Redis.from_url(url)
    ours = open_store(url, timeout=1.0)
    limits_storage = storage_from_string("async+" + url, implementation="redispy")
    limits_redis = FixedWindowRateLimiter(limits_storage)
    _OPENED.extend(
        [ping_client.aclose, ours.aclose, lambda: limits_storage.bridge.get_connection().aclose()]
    )
    item = parse(HIGH)
    cases: list[Case] = [
        RawPingCase("PING: raw asyncio socket", url),
        FuncCase(
            "PING: apiguard client",
            lambda i: ours.client().execute(b"*1\r\n$4\r\nPING\r\n"),  # type: ignore[union-attr]
            is_async=True,
        ),
        FuncCase(
            "PING: apiguard client inside asyncio.timeout",
            lambda i: _ping_in_timeout(ours),
            is_async=True,
            baseline="PING: apiguard client",
        ),
        FuncCase("PING: redis-py", lambda i: ping_client.ping(), is_async=True),
        FuncCase(
            "primitive: limits fixed-window.hit on RedisStorage (redispy)",
            lambda i: _hit_primitive(limits_redis, item),
            is_async=True,
            unit="hit",
        ),
    ]
    # The reply parsers apiguard's client chooses between, on a script's reply.
    reply = b"*4\r\n:1\r\n:17\r\n:41234\r\n:-1\r\n"
    for label, make in (("hiredis", _hiredis_reader), ("pure Python", PyReader)):
        reader = make()
        cases.append(
            FuncCase(
                f"parse a 4-integer reply: {label}",
                lambda i, reader=reader: (reader.feed(reply), reader.gets()),
                unit="reply",
            )
        )
    # The floor of any layer that makes one round trip: the same PING, awaited
    # by a pass-through layer before the app. It costs more than PING + the
    # bare app: after waiting on the socket, the app's own work runs on
    # colder caches (measured here: ~+15 µs over the sum).
    cases.append(
        ASGICase(
            "+ a layer awaiting one PING (floor)",
            _PingFirst(starlette_app(), ours),
            GET,
            baseline="starlette GET",
        )
    )
    variants = [("", HIGH, url), (" 2 quotas", MULTI, url)]
    if os.environ.get("APIGUARD_BENCH_REDISPY", "1") == "1":
        variants.append((" (redis-py)", HIGH, url + REDISPY))
    for strategy in STRATEGIES:
        for label, limit, storage in variants:
            app = guard(
                starlette_app(),
                Middleware(RateLimitMiddleware, limit=limit, strategy=strategy, storage=storage),
            )
            _OPENED.append(lambda app=app: _store_of(app).aclose())
            cases.append(
                CountingCase(
                    f"+ ratelimit redis:// {strategy}{label}",
                    app,
                    GET,
                    baseline="starlette GET",
                    url=url,
                )
            )
    return cases


def summary(results: list[Result]) -> str:
    """The Redis path against its target: round trips x one PING + 10 µs."""
    by_name = {r.case.name: r for r in results}
    ping = by_name.get("PING: apiguard client")
    if ping is None:
        return ""
    floor = by_name["+ a layer awaiting one PING (floor)"]
    floor_overhead = paired_overhead(floor, by_name["starlette GET"])[0]
    lines = [
        "Target: overhead <= round trips x PING (apiguard client, "
        f"{ping.median:.1f} µs here) + 10 µs. Floor: a layer that only awaits "
        f"one PING adds {floor_overhead:.1f} µs.",
        "",
        "| case | round trips | target µs | overhead µs | margin µs | over the floor µs |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        case = result.case
        if isinstance(case, CountingCase) and case.baseline is not None:
            target = case.round_trips * ping.median + 10
            overhead = paired_overhead(result, by_name[case.baseline])[0]
            lines.append(
                f"| {case.name} | {case.round_trips:.2f} | {target:.1f} | {overhead:.1f} "
                f"| {target - overhead:+.1f} | {overhead - floor_overhead:+.1f} |"
            )
    return "\n".join(lines) + "\n\n" + server_costs(_redis_url(), calls=50 if quick() else 2000)


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
