"""Load shedding under overload: an app of fixed capacity, offered 3-5 times what it can serve.

`python -m benchmarks.shedding [--rate 800] [--duration 20] [--configs none,fixed-100,...]`

The app: 4 workers (an `asyncio.Semaphore(4)`), each request holding one for
20 ms, so it serves 200 requests a second at most, and a request's latency
grows with the queue in front of the semaphore (not a plain sleep). It is
served by uvicorn (uvloop, httptools, one worker) in a process of its own,
behind each configuration in turn:

- `none`: no shedder (the queue grows without bound);
- `fixed-100`: `ConcurrencyLimitMiddleware(max_in_flight=100)`, a bound
  set without measuring the app;
- `fixed-8`: `max_in_flight=8`, a bound tuned by hand (twice the workers);
- `adaptive`: `ConcurrencyLimitMiddleware(max_in_flight=100, adaptive=True)`.

An open-loop generator (arrivals at a fixed rate, whatever the answers:
Poisson, on keep-alive connections, a new one when none is idle) first
offers 50 requests a second for 3 s (the unloaded latency), then `--rate`
(800: 4 times the capacity) for `--duration` seconds. Reported per
configuration, over the overload after its first 2 s: the offered rate,
the admitted (200) and shed (503) rates, the admitted requests' p50 and
p99 latency against the unloaded ones, client timeouts (10 s) and
connection errors (over the whole overload), and for
the adaptive limit its median value. No timing assertion: figures, to
read.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks.server import free_port, stop, wait_for

CAPACITY_WORKERS = 4
SERVICE_SECONDS = 0.020
CONFIGS = ("none", "fixed-100", "fixed-8", "adaptive")
_TIMEOUT = 10.0
_SETTLE = 2.0


def make_app() -> Any:
    """The app of fixed capacity behind the configuration named by `APIGUARD_SHED_CONFIG`."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    from apiguard import ConcurrencyLimitMiddleware, guard

    workers = asyncio.Semaphore(CAPACITY_WORKERS)

    async def work(request: Request) -> Response:
        async with workers:
            await asyncio.sleep(SERVICE_SECONDS)
        return PlainTextResponse("done")

    async def limit(request: Request) -> Response:
        node: Any = request.app.middleware_stack
        while node is not None and not isinstance(node, ConcurrencyLimitMiddleware):
            node = getattr(node, "app", None)
        return JSONResponse({"limit": None if node is None else node.limit})

    app = Starlette(routes=[Route("/work", work), Route("/limit", limit)])
    config = os.environ.get("APIGUARD_SHED_CONFIG", "none")
    critical = {"priorities": {"/limit": "critical"}}
    if config == "adaptive":
        guard(
            app,
            Middleware(ConcurrencyLimitMiddleware, max_in_flight=100, adaptive=True, **critical),
        )
    elif config.startswith("fixed-"):
        bound = int(config.removeprefix("fixed-"))
        guard(app, Middleware(ConcurrencyLimitMiddleware, max_in_flight=bound, **critical))
    return app


def serve(config: str) -> tuple[Any, int]:
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "--factory", "benchmarks.shedding:make_app",
        "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop", "--http", "httptools",
        "--log-level", "warning", "--no-access-log", "--backlog", "4096",
    ]  # fmt: skip
    env = {**os.environ, "APIGUARD_SHED_CONFIG": config, "PYTHONPATH": str(root)}
    process = subprocess.Popen(command, cwd=root, env=env, start_new_session=True)
    wait_for(port)
    return process, port


@dataclass
class Result:
    """One request: when it was sent (s from the phase start), its latency and status."""

    sent: float
    seconds: float
    status: int


@dataclass
class Phase:
    """What one phase of load got."""

    results: list[Result] = field(default_factory=list)
    refused_connections: int = 0


class Connections:
    """Keep-alive HTTP/1.1 connections to the server, one request at a time each."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.open = 0

    async def get(self, path: str) -> int:
        if self.idle:
            reader, writer = self.idle.pop()
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            self.open += 1
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nhost: bench\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
        except BaseException:
            writer.close()
            self.open -= 1
            raise
        self.idle.append((reader, writer))
        return status

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


async def offer(connections: Connections, rate: float, seconds: float) -> Phase:
    """Send requests at `rate` a second (Poisson arrivals) for `seconds`; wait for every answer."""
    phase = Phase()
    loop = asyncio.get_running_loop()
    began = loop.time()
    tasks: list[asyncio.Task[None]] = []

    async def one(sent: float) -> None:
        try:
            async with asyncio.timeout(_TIMEOUT):
                status = await connections.get("/work")
        except TimeoutError:
            status = 0
        except (OSError, asyncio.IncompleteReadError, ValueError):
            phase.refused_connections += 1  # refused, reset or cut by the server
            return
        phase.results.append(Result(sent, loop.time() - began - sent, status))

    due = 0.0
    while due < seconds:
        now = loop.time() - began
        if due > now:
            await asyncio.sleep(due - now)
        tasks.append(loop.create_task(one(due)))
        due += random.expovariate(rate)
    await asyncio.gather(*tasks)
    return phase


async def watch_limit(connections: Connections, seconds: float, into: list[int]) -> None:
    """The adaptive limit, read once a second from the app."""
    import json

    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        await asyncio.sleep(1.0)
        try:
            async with asyncio.timeout(5):
                reader, writer = await asyncio.open_connection("127.0.0.1", connections.port)
            writer.write(b"GET /limit HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n")
            async with asyncio.timeout(5):
                data = await reader.read()
            writer.close()
            value = json.loads(data.partition(b"\r\n\r\n")[2]).get("limit")
            if value is not None:
                into.append(value)
        except (OSError, ValueError, TimeoutError):
            continue


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(int(share * len(ordered)), len(ordered) - 1)]


@dataclass
class Row:
    config: str
    offered: float
    admitted: float
    shed: float
    timeouts: int
    errors: int
    p50: float
    p99: float
    unloaded_p50: float
    unloaded_p99: float
    limit: float | None


async def measure(config: str, rate: float, duration: float) -> Row:
    process, port = serve(config)
    try:
        connections = Connections(port)
        unloaded = await offer(connections, 50.0, 3.0)
        limits: list[int] = []
        watcher = asyncio.ensure_future(watch_limit(connections, duration, limits))
        loaded = await offer(connections, rate, duration)
        await watcher
        connections.close()
    finally:
        stop(process)
    steady = [r for r in loaded.results if r.sent >= _SETTLE]
    span = duration - _SETTLE
    ok = [r.seconds * 1000 for r in steady if r.status == 200]
    calm = [r.seconds * 1000 for r in unloaded.results if r.status == 200]
    return Row(
        config,
        len(steady) / span,
        len(ok) / span,
        sum(r.status == 503 for r in steady) / span,
        sum(r.status == 0 for r in steady),
        loaded.refused_connections,
        _percentile(ok, 0.50),
        _percentile(ok, 0.99),
        _percentile(calm, 0.50),
        _percentile(calm, 0.99),
        statistics.median(limits[2:] or limits) if limits else None,
    )


def table(rows: list[Row], rate: float, duration: float) -> str:
    capacity = CAPACITY_WORKERS / SERVICE_SECONDS
    lines = [
        f"App: {CAPACITY_WORKERS} workers x {SERVICE_SECONDS * 1000:g} ms = {capacity:g} req/s; "
        f"offered {rate:g} req/s ({rate / capacity:g}x) for {duration:g} s, open loop; "
        f"figures over the overload after its first {_SETTLE:g} s.",
        "",
        "| configuration | offered req/s | admitted req/s | shed req/s | timeouts | errors "
        "| p50 ms | p99 ms | unloaded p50 / p99 ms | limit |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        limit = "" if row.limit is None else f"{row.limit:g}"
        lines.append(
            f"| {row.config} | {row.offered:.0f} | {row.admitted:.0f} | {row.shed:.0f} "
            f"| {row.timeouts} | {row.errors} | {row.p50:.1f} | {row.p99:.1f} "
            f"| {row.unloaded_p50:.1f} / {row.unloaded_p99:.1f} | {limit} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.shedding", description=__doc__)
    parser.add_argument("--rate", type=float, default=800.0, help="offered req/s (default 800)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of overload (<= 30)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="which, comma-separated")
    args = parser.parse_args(argv)
    duration = min(max(args.duration, _SETTLE + 1), 30.0)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - the bench extra brings it
        runner = asyncio.run
    rows = []
    for config in args.configs.split(","):
        print(f"running {config} ...", file=sys.stderr, flush=True)
        rows.append(runner(measure(config, args.rate, duration)))
        time.sleep(1.0)
    print(table(rows, args.rate, duration))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
