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
started on a free port for the run.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
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


@functools.cache
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


class _RawPing(asyncio.Protocol):
    """The floor: `PING` on a bare asyncio socket, no parser, no timeout, nothing else."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.waiter is not None
        assert data == b"+PONG\r\n", data
        self.waiter.set_result(data)

    async def ping(self) -> bytes:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(b"PING\r\n")
        return await self.waiter


class RawPingCase(FuncCase):
    """A raw-socket PING, connected on first use in the benchmark's event loop."""

    def __init__(self, name: str, url: str) -> None:
        super().__init__(name, self._ping, is_async=True)
        self.url = url
        self.protocol: _RawPing | None = None

    async def _ping(self, i: int) -> bytes:
        if self.protocol is None:
            from urllib.parse import urlsplit

            parts = urlsplit(self.url)
            protocol = _RawPing()
            await asyncio.get_running_loop().create_connection(
                lambda: protocol, parts.hostname, parts.port
            )
            self.protocol = protocol
            _OPENED.append(self._close)
        return await self.protocol.ping()

    async def _close(self) -> None:
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.close()
            await asyncio.sleep(0)  # let the transport finish closing
        self.protocol = None


class CountingCase(ASGICase):
    """An ASGICase that counts the Redis round trips of its requests first.

    On apiguard's client, the commands it wrote (and the server's EVALSHA
    count); on redis-py, the commands sent through `execute_command`.
    """

    def __init__(self, *args: Any, url: str, **options: Any) -> None:
        super().__init__(*args, **options)
        self.url = url
        self.round_trips = 0.0

    async def check(self) -> None:
        await super().check()
        import redis.asyncio

        store = _store_of(self.app)
        sent: list[Any] = []
        original = redis.asyncio.Redis.execute_command

        async def counting(client: Any, *args: Any, **options: Any) -> Any:
            sent.append(args[0])
            return await original(client, *args, **options)

        before = _server_calls(self.url)
        written = store._client.sent if store._client is not None else 0
        redis.asyncio.Redis.execute_command = counting  # type: ignore[method-assign]
        try:
            for template, body in self.templates * 20:
                await self._one(template, body)
        finally:
            redis.asyncio.Redis.execute_command = original  # type: ignore[method-assign]
        if store._client is not None:
            commands = store._client.sent - written
            what = "apiguard client"
        else:
            commands = len(sent)
            what = f"redis-py {set(sent)}"
        self.round_trips = commands / 20
        server = (_server_calls(self.url) - before) / 20
        print(
            f"  {self.name}: {self.round_trips:.2f} Redis round trips per request ({what}); "
            f"server counted {server:.2f} EVALSHA/EVAL",
            file=sys.stderr,
        )


def _store_of(app: Any) -> Any:
    """The RedisStore of the (built) rate-limit layer in a guarded app."""
    layer = app.middleware_stack
    while not isinstance(layer, RateLimitMiddleware):
        layer = layer.app
    return layer.store


def _server_calls(url: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return sum(int(stats.get(f"cmdstat_{c}", {"calls": 0})["calls"]) for c in ("evalsha", "eval"))


def _hiredis_reader() -> Any:
    import hiredis

    return hiredis.Reader(replyError=ReplyError)


async def _ping_in_timeout(store: Any) -> Any:
    """What a per-call `asyncio.timeout` would add (the client has its own deadline timer)."""
    async with asyncio.timeout(0.25):
        return await store.client().execute(b"*1\r\n$4\r\nPING\r\n")


class _PingFirst:
    """A pure-ASGI pass-through layer that awaits one PING on apiguard's client first."""

    def __init__(self, app: Any, store: Any) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.store.client().execute(b"*1\r\n$4\r\nPING\r\n")
        await self.app(scope, receive, send)


MULTI = "1000000/hour; 100000000/day"
#: A URI option apiguard's client leaves to redis-py: the same layer on redis-py, for comparison.
REDISPY = "?health_check_interval=0"


#: What the Redis rows opened, closed by `aclose()` (a run in a longer-lived loop: the tests).
_OPENED: list[Callable[[], Awaitable[Any]]] = []


async def aclose() -> None:
    """Close every Redis connection the cases opened."""
    while _OPENED:
        await _OPENED.pop()()


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


def server_costs(url: str, calls: int = 2000) -> str:
    """Server time per call of each script, before (issue 5) and now: INFO commandstats.

    Calls one after the other, as the layer makes them, on a fresh key
    each window; `usec_per_call` is what the server spent running the
    command (the script's own commands included), not the round trip.
    """
    import redis

    from apiguard.storage import _scripts
    from benchmarks import _scripts_issue5 as before

    client = redis.Redis.from_url(url)
    hour = 3_600_000
    big = 10**9

    def per_call(command: str, run: Any) -> float:
        """Server µs per `run()`: the sum over the commands it sends (space-separated)."""
        client.config_resetstat()
        for _ in range(calls):
            run()
        stats = client.info("commandstats")
        return sum(float(stats[f"cmdstat_{c}"]["usec_per_call"]) for c in command.split())

    def script(text: str, keys: list[str], args: list[int]) -> float:
        sha = client.script_load(text)
        return per_call("evalsha", lambda: client.evalsha(sha, len(keys), *keys, *args))

    from apiguard.storage._keys import tag
    from apiguard.storage._scripts import _fixed_keys, _sliding_args, _ttl_ms

    rows = []
    for strategy in STRATEGIES:
        old, new = before.SCRIPTS[strategy], _scripts.SCRIPTS[strategy]
        for count in (1, 2):
            quotas = [Quota(f"q{i}", big, 3600) for i in range(count)]
            old_keys = [f"{{k}}:old:{i}" for i in range(count)]
            client.flushdb()
            was = script(old, old_keys, [1] + [big, hour] * count)
            now = time.time()
            if strategy == "fixed-window" and count == 1:
                # No script: SET ... PX ... NX and INCRBY, in one write.
                name = _fixed_keys(tag("k"), quotas, now)[0][0]

                def hit(name: str = name) -> None:
                    client.set(name, 0, px=hour, nx=True)
                    client.incrby(name, 1)

                cost = per_call("set incrby", hit)
                what = "SET NX + INCRBY, no script"
            elif strategy == "fixed-window":
                keys, resets = _fixed_keys(tag("k"), quotas, now)
                args = [1]
                for quota, reset in zip(quotas, resets, strict=True):
                    args += (quota.amount, _ttl_ms(reset))
                cost, what = script(new, keys, args), "EVALSHA"
            elif strategy == "sliding-window-counter":
                cost, what = script(new, *_sliding_args(tag("k"), quotas, 1, now)), "EVALSHA"
            else:
                keys = [f"{{k}}:new:{i}" for i in range(count)]
                cost, what = script(new, keys, [1] + [big, hour] * count), "EVALSHA"
            rows.append(f"| {strategy} | {count} | {was:.2f} | {cost:.2f} ({what}) |")
    ping = per_call("ping", client.ping)
    client.flushdb()
    client.close()
    return "\n".join(
        [
            f"Server time per call (INFO commandstats usec_per_call, {calls} calls one after "
            f"the other; PING {ping:.2f} µs):",
            "",
            "| strategy | quotas | issue 5 µs | now µs |",
            "|---|---:|---:|---:|",
            *rows,
        ]
    )


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
