"""Through a real server: uvicorn (uvloop, httptools) under `wrk` on loopback.

`python -m benchmarks.server [--workers 1 2] [--duration 10] [--runs 2]
[--connections 32] [--apps bare,stack-memory,...] [--json FILE]`

Each app (see `benchmarks/server_apps.py`) is served by uvicorn in a process
of its own and loaded by `wrk -t2 -c<connections>` for `--duration` seconds
after a short warm-up; runs are interleaved (every app once, then again), so
that drift on a shared machine hits every app alike. Reported: requests/s
(median over runs), p50 and p99 latency, the ratio to the bare app, and the
time each app adds to a request, `1/rps - 1/rps(bare)` (with one worker, the
server's CPU time a request costs more). Where `wrk` is missing, a Python
load generator stands in (it needs far more CPU: its figures are lower, and
are marked so). With two workers, server and load generator share the two
cores: report those runs as such.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.apps import bench_token
from benchmarks.driver import environment
from benchmarks.server_apps import APPS, DEFAULT_SECRET

ROOT = Path(__file__).resolve().parent.parent
PATH = "/orders/42"


@dataclass
class Sample:
    """One load run against one app."""

    app: str
    workers: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    generator: str


@dataclass
class Summary:
    """The runs of one app, summarised."""

    app: str
    workers: int
    rps: float
    p50_ms: float
    p99_ms: float
    ratio: float | None = None
    added_us: float | None = None
    samples: list[float] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def serve(app: str, workers: int, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    """Start uvicorn serving `app`; its process and port."""
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "--factory", "benchmarks.server_apps:make",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--loop", "uvloop", "--http", "httptools", "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **env, "APIGUARD_BENCH_APP": app, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
    )
    wait_for(port)
    return process, port


def stop(process: subprocess.Popen[bytes]) -> None:
    import signal

    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip()).groups()  # type: ignore[union-attr]
    return float(value) * _UNITS[unit]


def run_wrk(port: int, headers: dict[str, str], duration: int, connections: int) -> dict[str, Any]:
    """One wrk run: requests/s, p50 and p99 latency, errors (non-2xx and socket errors)."""
    command = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    command.append(f"http://127.0.0.1:{port}{PATH}")
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = 0
    for pattern in (r"Non-2xx or 3xx responses: (\d+)", r"Socket errors: .*?(\d+)"):
        found = re.search(pattern, out)
        errors += int(found.group(1)) if found else 0
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "errors": errors}


async def _python_load(
    port: int, headers: dict[str, str], duration: int, connections: int
) -> dict[str, Any]:
    """A keep-alive HTTP/1.1 load generator, for machines without wrk."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}\r\n".encode()
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            writer.write(request)
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if not status.startswith(b"HTTP/1.1 2"):
                errors += 1
        writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    latencies.sort()
    return {
        "rps": len(latencies) / duration,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "errors": errors,
    }


def load(port: int, headers: dict[str, str], duration: int, connections: int) -> dict[str, Any]:
    if shutil.which("wrk"):
        return {**run_wrk(port, headers, duration, connections), "generator": "wrk"}
    result = asyncio.run(_python_load(port, headers, duration, connections))
    return {**result, "generator": "python (wrk missing)"}


def measure(
    apps: list[str], workers: int, runs: int, duration: int, connections: int, env: dict[str, str]
) -> list[Sample]:
    secret = env["APIGUARD_BENCH_SECRET"].encode()
    headers = {"Authorization": f"Bearer {bench_token(secret)}", "Accept": "application/json"}
    samples = []
    for run in range(runs):
        for app in apps:
            process, port = serve(app, workers, env)
            try:
                load(port, headers, 2, connections)  # warm-up
                result = load(port, headers, duration, connections)
            finally:
                stop(process)
            samples.append(Sample(app, workers, **result))
            print(
                f"  run {run + 1}/{runs} {app} x{workers}: {result['rps']:.0f} req/s",
                file=sys.stderr,
            )
    return samples


def summarise(samples: list[Sample]) -> list[Summary]:
    summaries: list[Summary] = []
    for workers in sorted({s.workers for s in samples}):
        group = [s for s in samples if s.workers == workers]
        bare = None
        for app in dict.fromkeys(s.app for s in group):
            runs = [s for s in group if s.app == app]
            summary = Summary(
                app,
                workers,
                statistics.median(s.rps for s in runs),
                statistics.median(s.p50_ms for s in runs),
                statistics.median(s.p99_ms for s in runs),
                samples=[s.rps for s in runs],
            )
            if app == "bare":
                bare = summary
            summaries.append(summary)
        if bare is not None:
            for summary in summaries:
                if summary.workers == workers:
                    summary.ratio = summary.rps / bare.rps
                    summary.added_us = (1 / summary.rps - 1 / bare.rps) * 1e6
    return summaries


def table(summaries: list[Summary], generator: str) -> str:
    lines = [
        f"### under uvicorn[standard] (uvloop, httptools), load by {generator}",
        "",
        "| app | workers | req/s | p50 ms | p99 ms | vs bare | added µs/request |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        ratio = f"{s.ratio:.0%}" if s.ratio is not None else ""
        added = f"{s.added_us:+.1f}" if s.added_us is not None else ""
        lines.append(
            f"| {s.app} | {s.workers} | {s.rps:,.0f} | {s.p50_ms:.2f} | {s.p99_ms:.2f} "
            f"| {ratio} | {added} |"
        )
    return "\n".join(lines)


def verdict(summaries: list[Summary]) -> str:
    """The targets of one worker: ≥ 80 % of bare, and ≤ 1/3 of slowapi middleware's added time."""
    one = {s.app: s for s in summaries if s.workers == 1}
    stack, slowapi = one.get("stack-memory"), one.get("slowapi-middleware")
    if stack is None or stack.ratio is None:
        return ""
    lines = [f"- full stack on memory keeps {stack.ratio:.0%} of bare throughput (target ≥ 80 %)"]
    if slowapi is not None and slowapi.added_us and stack.added_us is not None:
        share = stack.added_us / slowapi.added_us
        lines.append(
            f"- it adds {stack.added_us:.1f} µs a request, {share:.0%} of slowapi middleware's "
            f"{slowapi.added_us:.1f} µs (target ≤ 33 %)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.server", description=__doc__)
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--apps", default="bare,stack-memory,slowapi-middleware,otel-asgi")
    parser.add_argument("--redis", help="Redis URI for stack-redis (else one is started)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    apps = args.apps.split(",")
    unknown = set(apps) - set(APPS)
    if unknown:
        parser.error(f"unknown apps {sorted(unknown)}; known: {sorted(APPS)}")
    env = {"APIGUARD_BENCH_SECRET": DEFAULT_SECRET}
    if "stack-redis" in apps:
        from benchmarks.ratelimit import _redis_url

        env["APIGUARD_BENCH_REDIS"] = args.redis or _redis_url()
    samples: list[Sample] = []
    for workers in args.workers:
        samples += measure(apps, workers, args.runs, args.duration, args.connections, env)
    summaries = summarise(samples)
    generator = samples[0].generator if samples else "-"
    print(f"# apiguard under a real server\n\n{environment()}\n")
    print(table(summaries, generator))
    if 2 in args.workers:
        print("\nTwo workers share the machine's two cores with the load generator.")
    print()
    print(verdict(summaries))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "environment": environment(),
                    "samples": [asdict(s) for s in samples],
                    "summaries": [asdict(s) for s in summaries],
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
