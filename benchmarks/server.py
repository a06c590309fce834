"""Through a real server: uvicorn (uvloop, httptools) under `wrk` on loopback.

`python -m benchmarks.server [--workers 1 2] [--duration 10] [--runs 3]
[--connections 32] [--apps bare,stack-memory,...] [--quick] [--json FILE]`
(or `python -m benchmarks server`, with the other suites).

Each app (see `benchmarks/server_apps.py`: bare, the full stack on memory
and on Redis, slowapi's middleware, otel-asgi) is served by uvicorn
(`uvicorn[standard]`: uvloop and httptools) in a process of its own and
loaded by `wrk -t2 -c<connections>` for `--duration` seconds after a short
warm-up; runs are interleaved (every app once, then again), so that drift
on a shared machine hits every app alike. Reported: requests/s (median over
runs), p50 and p99 latency, the ratio to the bare app, and the time each
app adds to a request, `1/rps - 1/rps(bare)` (with one worker, the server's
CPU time a request costs more).

`wrk` is installed by the set-up when missing (`apt-get install -y wrk`,
as root where apt exists); otherwise a Python load generator stands in (it
needs far more CPU: its figures are lower, and are marked so). With two
workers, server and load generator share the machine's cores: the runs are
reported as such. `--quick` starts every app with every worker count and
checks that it answers as expected, with no load.
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
from benchmarks.machine import describe, machine
from benchmarks.server_apps import APPS, DEFAULT_SECRET
from benchmarks.targets import Target, at_least, at_most

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


PYTHON_GENERATOR = "a Python load generator (wrk missing: figures not comparable with wrk's)"


def wrk_version() -> str | None:
    """`wrk 4.1.0`, or None where wrk is not on PATH."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    found = re.search(r"wrk\s+(\S+)", done.stdout + done.stderr)
    return f"wrk {found.group(1)}" if found else "wrk"


def ensure_wrk(*, install: bool = True) -> str:
    """The load generator: wrk, installed with apt-get when missing (as root), else Python's."""
    version = wrk_version()
    apt = shutil.which("apt-get")
    if version is None and install and os.geteuid() == 0 and apt is not None:
        print("  wrk is missing: apt-get install -y wrk", file=sys.stderr, flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        command = [apt, "install", "-y", "-qq", "wrk"]
        if subprocess.run(command, env=env, capture_output=True, check=False).returncode:
            # A fresh machine has no package lists yet.
            subprocess.run([apt, "update", "-qq"], env=env, capture_output=True, check=False)
            subprocess.run(command, env=env, capture_output=True, check=False)
        version = wrk_version()
    return version or PYTHON_GENERATOR


def server_versions() -> str:
    """`uvicorn[standard] 0.30 (uvloop 0.21, httptools 0.6)`: what served the requests."""
    import importlib.metadata as md

    found = {}
    for name in ("uvicorn", "uvloop", "httptools"):
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            found[name] = "missing"
    return (
        f"uvicorn[standard] {found['uvicorn']} "
        f"(uvloop {found['uvloop']}, httptools {found['httptools']})"
    )


def load(port: int, headers: dict[str, str], duration: int, connections: int) -> dict[str, Any]:
    if shutil.which("wrk"):
        return {**run_wrk(port, headers, duration, connections), "generator": wrk_version()}
    result = asyncio.run(_python_load(port, headers, duration, connections))
    return {**result, "generator": PYTHON_GENERATOR}


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


#: What each app is, in the tables and charts.
LABELS = {
    "bare": "bare Starlette",
    "stack-memory": "apiguard stack, memory://",
    "stack-redis": "apiguard stack, redis://",
    "slowapi-middleware": "slowapi middleware, memory",
    "otel-asgi": "otel-asgi, no SDK",
}


def table(summaries: list[Summary], generator: str) -> str:
    lines = [
        f"### under {server_versions()}, load by {generator}",
        "",
        "| app | workers | req/s | spread | p50 ms | p99 ms | vs bare | added µs/request |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        ratio = f"{s.ratio:.0%}" if s.ratio is not None else ""
        added = f"{s.added_us:+.1f}" if s.added_us is not None else ""
        spread = f"{min(s.samples):,.0f} … {max(s.samples):,.0f}"
        lines.append(
            f"| {LABELS.get(s.app, s.app)} | {s.workers} | {s.rps:,.0f} | {spread} "
            f"| {s.p50_ms:.2f} | {s.p99_ms:.2f} | {ratio} | {added} |"
        )
    if any(s.workers > 1 for s in summaries):
        lines += [
            "",
            f"Runs with more than one worker share the machine's {os.cpu_count()} cores "
            "with the load generator: they show how the layers scale, not the machine's ceiling.",
        ]
    return "\n".join(lines)


COMMAND = "python -m benchmarks server"
#: The issue's targets for one worker.
THROUGHPUT_SHARE = 0.80
ADDED_SHARE = 1 / 3


def targets(summaries: list[Summary]) -> list[Target]:
    """One worker: the stack keeps ≥ 80 % of bare, and adds ≤ ⅓ of slowapi middleware's time."""
    one = {s.app: s for s in summaries if s.workers == 1}
    stack, slowapi = one.get("stack-memory"), one.get("slowapi-middleware")
    found: list[Target] = []
    if stack is None or stack.ratio is None or stack.added_us is None:
        return found
    found.append(
        at_least(
            "under uvicorn, 1 worker: the stack's share of bare throughput",
            stack.ratio * 100,
            THROUGHPUT_SHARE * 100,
            "≥ 80 %",
            COMMAND,
        )
    )
    if slowapi is not None and slowapi.added_us:
        limit = slowapi.added_us * ADDED_SHARE
        found.append(
            at_most(
                "under uvicorn, 1 worker: the stack's added time a request",
                stack.added_us,
                limit,
                f"≤ ⅓ of slowapi middleware's {slowapi.added_us:+.1f} µs",
                COMMAND,
            )
        )
    return found


def _check_app(app: str, workers: int, env: dict[str, str]) -> str:
    """Serve `app`, send a few requests; the answer's status and whether it is as expected."""
    import http.client

    secret = env["APIGUARD_BENCH_SECRET"].encode()
    headers = {"Authorization": f"Bearer {bench_token(secret)}", "Accept": "application/json"}
    process, port = serve(app, workers, env)
    try:
        for _ in range(5):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", PATH, headers=headers)
            response = connection.getresponse()
            response.read()
            connection.close()
            if response.status != 200:
                return f"FAILED: {response.status}"
            if app.startswith("stack") and response.getheader("RateLimit") is None:
                return "FAILED: no RateLimit header"
    finally:
        stop(process)
    return "200" + (", RateLimit" if app.startswith("stack") else "")


def run_report(
    *,
    quick: bool = False,
    workers: list[int] | None = None,
    runs: int = 3,
    duration: int = 10,
    connections: int = 32,
    apps: list[str] | None = None,
    redis: str | None = None,
) -> dict[str, Any]:
    """The server runs (or, quick, a check of every app and worker count): markdown and data."""
    apps = apps or list(APPS)
    workers = workers or [1, 2]
    env = {"APIGUARD_BENCH_SECRET": DEFAULT_SECRET}
    if "stack-redis" in apps:
        from benchmarks._redis_cases import _redis_url

        env["APIGUARD_BENCH_REDIS"] = (
            redis or os.environ.get("APIGUARD_BENCH_REDIS") or _redis_url()
        )
    if quick:
        lines = [
            f"### under {server_versions()}: every app answers (quick mode, no load)",
            "",
            "| app | workers | answer |",
            "|---|---:|---|",
        ]
        failed = []
        for count in workers:
            for app in apps:
                answer = _check_app(app, count, env)
                lines.append(f"| {LABELS.get(app, app)} | {count} | {answer} |")
                if answer.startswith("FAILED"):
                    failed.append(f"{app} x{count}")
        markdown = "\n".join(lines)
        if failed:
            raise AssertionError(f"server apps answered wrongly: {failed}\n{markdown}")
        return {"markdown": markdown, "quick": True, "targets": []}
    generator = ensure_wrk()
    samples: list[Sample] = []
    for count in workers:
        samples += measure(apps, count, runs, duration, connections, env)
    summaries = summarise(samples)
    found = targets(summaries)
    from benchmarks.targets import render

    markdown = table(summaries, generator) + "\n\n" + render(found)
    return {
        "markdown": markdown,
        "server": server_versions(),
        "generator": generator,
        "connections": connections,
        "duration_s": duration,
        "runs": runs,
        "samples": [asdict(s) for s in samples],
        "summaries": [asdict(s) for s in summaries],
        "targets": found,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.server", description=__doc__)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--apps", default=",".join(APPS))
    parser.add_argument("--redis", help="Redis URI for stack-redis (else one is started)")
    parser.add_argument("--quick", action="store_true", help="check every app answers; no load")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    apps = args.apps.split(",")
    unknown = set(apps) - set(APPS)
    if unknown:
        parser.error(f"unknown apps {sorted(unknown)}; known: {sorted(APPS)}")
    info = machine()
    report = run_report(
        quick=args.quick,
        workers=args.workers,
        runs=args.runs,
        duration=args.duration,
        connections=args.connections,
        apps=apps,
        redis=args.redis,
    )
    print(f"# apiguard under a real server\n\n{describe(info)}\n")
    print(report["markdown"])
    if args.json:
        saved = {**report, "targets": [t.to_json() for t in report["targets"]]}
        document = {"environment": describe(info), "machine": info, "server": saved}
        args.json.write_text(json.dumps(document, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
