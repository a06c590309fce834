"""Tracing: the layer's cost with no SDK, with the SDK (always on, 1 % ratio), beside the peers.

Each configuration runs in a process of its own (`python -m benchmarks.tracing
--config NAME`), because setting the global providers cannot be undone;
`python -m benchmarks tracing` runs them one after the other and prints one
table. In each process, interleaved rounds as everywhere else: the bare
Starlette and FastAPI apps, apiguard's `TracingMiddleware`,
`opentelemetry-instrumentation-asgi`'s middleware, Starlette's
`OpenTelemetryMiddleware` and FastAPI's native telemetry (alone, and with
apiguard enriching its span), all on the global providers of the
configuration: a `BatchSpanProcessor` with an exporter that drops the spans,
and a metric reader that is never collected.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware as OtelASGI
from starlette.middleware import Middleware
from starlette.middleware.opentelemetry import OpenTelemetryMiddleware as StarletteOtel

from apiguard import TracingMiddleware, guard
from benchmarks.apps import NEW_ORDER, ORDER, OrderIn, starlette_app
from benchmarks.driver import ASGICase, Case, Request, Result, post_json, run_cases, to_json

TITLE = "tracing: no SDK, SDK always on, SDK 1 % ratio; beside otel-asgi, Starlette's, FastAPI's"
CONFIGS = ("no-sdk", "sdk", "sdk-1pct")
ROOT = Path(__file__).resolve().parent.parent
BARE, BARE_FASTAPI = "starlette GET", "fastapi GET (telemetry off)"
BARE_POST, BARE_FASTAPI_POST = "starlette POST", "fastapi POST (telemetry off)"
APIGUARD, OTEL_ASGI = "+ apiguard TracingMiddleware", "+ opentelemetry-instrumentation-asgi"

#: Targets of the benchmark issue: no SDK <= 2 us; with the SDK <= half of otel-asgi.
NO_SDK_TARGET_US = 2.0


def _configure(config: str) -> None:
    """Set the global providers of a configuration (once per process)."""
    if config == "no-sdk":
        return
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    sampler = ALWAYS_ON if config == "sdk" else ParentBased(TraceIdRatioBased(0.01))
    tracer_provider = TracerProvider(sampler=sampler)
    tracer_provider.add_span_processor(BatchSpanProcessor(Discard()))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


def _fastapi(**telemetry: Any) -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, telemetry=telemetry)

    @app.get("/orders/{order_id}")
    async def read_order(order_id: int) -> dict[str, Any]:
        return {**ORDER, "id": order_id}

    @app.post("/orders", status_code=201)
    async def new_order(order: OrderIn) -> dict[str, Any]:
        return {"id": 43, "lines": len(order.lines)}

    return app


def config_cases() -> list[Case]:
    """The cases of one configuration, on whatever global providers are set.

    GET `/orders/42`, and POST `/orders` with the 302-byte order (names
    ending in `, POST`).
    """
    off = {"tracing": False, "metrics": False, "logs": False}
    out: list[Case] = []
    for req, suffix, ok, bare, bare_fastapi in (
        (Request("GET", "/orders/42"), "", 200, BARE, BARE_FASTAPI),
        (post_json("/orders", NEW_ORDER), ", POST", 201, BARE_POST, BARE_FASTAPI_POST),
    ):
        out += [
            ASGICase(bare, starlette_app(), req, expect=ok),
            ASGICase(
                APIGUARD + suffix,
                guard(starlette_app(), Middleware(TracingMiddleware)),
                req,
                expect=ok,
                baseline=bare,
            ),
            ASGICase(OTEL_ASGI + suffix, OtelASGI(starlette_app()), req, expect=ok, baseline=bare),
            ASGICase(
                "+ starlette OpenTelemetryMiddleware" + suffix,
                guard(starlette_app(), Middleware(StarletteOtel)),
                req,
                expect=ok,
                baseline=bare,
            ),
            ASGICase(bare_fastapi, _fastapi(**off), req, expect=ok),
            ASGICase(
                "+ FastAPI native telemetry" + suffix,
                _fastapi(),
                req,
                expect=ok,
                baseline=bare_fastapi,
            ),
            ASGICase(
                "+ FastAPI native + apiguard (enriching its span)" + suffix,
                guard(_fastapi(), Middleware(TracingMiddleware)),
                req,
                expect=ok,
                baseline=bare_fastapi,
            ),
        ]
    return out


def cases() -> list[Case]:
    """The no-SDK configuration, in this process (what the test suite runs once)."""
    return config_cases()


@dataclass
class _Measured(Case):
    """A case measured in another process: its name and samples only."""

    name: str
    baseline: str | None
    unit: str = "request"


def run_suite(*, rounds: int, requests: int) -> list[Result]:
    """Every configuration in a process of its own; their results, names prefixed."""
    results: list[Result] = []
    for config in CONFIGS:
        results += run_config(config, rounds=rounds, requests=requests)
    return results


def run_config(config: str, *, rounds: int, requests: int) -> list[Result]:
    """One configuration in a process of its own; its results, names prefixed `[config]`."""
    results: list[Result] = []
    print(f"  {config} ...", file=sys.stderr, flush=True)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.tracing",
            "--config",
            config,
            "--rounds",
            str(rounds),
            "--requests",
            str(requests),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"benchmarks.tracing --config {config} failed:\n{done.stderr}")
    for entry in json.loads(done.stdout):
        baseline = entry.get("baseline")
        case = _Measured(
            f"[{config}] {entry['case']}", f"[{config}] {baseline}" if baseline else None
        )
        results.append(Result(case, entry["samples_us"]))
    return results


def summary(results: list[Result]) -> str:
    """The figures against the targets."""
    from benchmarks.driver import paired_overhead

    by_name = {r.case.name: r for r in results}

    def over(config: str, name: str) -> float | None:
        result = by_name.get(f"[{config}] {name}")
        if result is None or result.case.baseline is None:
            return None
        return paired_overhead(result, by_name[result.case.baseline])[0]

    lines = ["Targets:"]
    no_sdk = over("no-sdk", APIGUARD)
    if no_sdk is not None:
        verdict = "met" if no_sdk <= NO_SDK_TARGET_US else "MISSED"
        lines.append(f"- no SDK: {no_sdk:+.2f} µs (target ≤ {NO_SDK_TARGET_US} µs): {verdict}")
    for config in ("sdk", "sdk-1pct"):
        ours, theirs = over(config, APIGUARD), over(config, OTEL_ASGI)
        if ours is not None and theirs is not None:
            verdict = "met" if ours <= theirs / 2 else "MISSED"
            lines.append(
                f"- {config}: {ours:+.2f} µs against otel-asgi's {theirs:+.2f} µs "
                f"(target ≤ {theirs / 2:.2f} µs): {verdict}"
            )
    return "\n".join(lines) if len(lines) > 1 else ""


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tracing")
    parser.add_argument("--config", choices=CONFIGS, required=True)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args(argv)
    _configure(args.config)
    results = asyncio.run(
        run_cases(config_cases(), rounds=args.rounds, requests=args.requests, quiet=True)
    )
    print(json.dumps(to_json(results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
