"""Cost as the work grows: routes, live rate-limit keys, cached tokens, concurrency, sampling.

One interleaved run, every case over a bare baseline of its own shape:

- routes: the bare app and the stack with 10 to 1,000 routes, the request
  for one of the last (Starlette's router scans them in order; apiguard
  resolves each request once, with a cache);
- live keys: the IP limit on `memory://` holding 1 to 1,000,000 keys
  (filled by requests from as many client addresses before the timing,
  each window a day long so none expires during the run), the timed
  requests cycling through those clients with the event loop turning
  once a request; and the memory the keys hold (the process's resident
  set before and after the filling);
- tokens: the JWT layer with 1 to 100,000 distinct tokens in its cache,
  requests cycling through them (a hit), and requests with tokens never
  seen (a miss: verification, and the oldest entry evicted from a cache
  of that size);
- concurrency: 1 to 256 requests in flight at once (`asyncio.gather`
  batches) through the bare app and the stack;
- sampling: apiguard's tracing and otel-asgi on an SDK whose sampler keeps
  0, 1, 10 or 100 % of traces (batch processor, spans dropped), the
  providers given to the layers, so no global state is set.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from apiguard import AuthMiddleware, JWTAuth, RateLimitMiddleware, TracingMiddleware, guard
from apiguard.storage import MemoryStorage, Quota
from apiguard.testing import SigningKey, mint_token
from benchmarks import peers
from benchmarks._growth_cases import InFlight, ManyClients, ManyTokens
from benchmarks.apps import BENCH_CLAIMS, create_order, full_stack, get_order, starlette_app
from benchmarks.driver import ASGICase, Case, FuncCase, Result, paired_overhead, quick
from benchmarks.stack import SECRET, request

TITLE = "growth: µs per request as routes, keys, tokens, concurrency and sampling grow"
ROUNDS, REQUESTS = 11, 2000

ROUTES = (10, 100, 1_000)
KEYS = (1, 1_000, 10_000, 100_000, 1_000_000)
TOKENS = (1, 100, 10_000, 100_000)
IN_FLIGHT = (1, 16, 64, 256)
RATIOS = (0.0, 0.01, 0.1, 1.0)
#: Long windows: the keys filled before the timing stay live through the run.
KEY_LIMIT = "1000000/day"


def _sizes(full: tuple[int, ...], small: int) -> tuple[int, ...]:
    return full[:small] if quick() else full


def tagged(case: Case, figure: str, series: str, x: float) -> Case:
    """Mark a case for the charts: its figure, its line, its x."""
    case.meta = {"group": "growth", "figure": figure, "series": series, "x": x}
    return case


# --- routes ---------------------------------------------------------------------------


def routed_app(count: int) -> Starlette:
    """The bare app's routes last, behind `count - 3` others of realistic shapes."""

    async def endpoint(request: Any) -> PlainTextResponse:
        return PlainTextResponse("")

    fillers = [
        Route(f"/res{i // 2}" + ("/{item_id:int}" if i % 2 else ""), endpoint)
        for i in range(count - 3)
    ]
    return Starlette(
        routes=[
            *fillers,
            Route("/health", endpoint),
            Route("/orders/{order_id:int}", get_order),
            Route("/orders", create_order, methods=["POST"]),
        ]
    )


def _route_cases() -> list[Case]:
    out: list[Case] = []
    for count in _sizes(ROUTES, 2):
        bare = f"routes: bare, {count:,}"
        out += [
            tagged(ASGICase(bare, routed_app(count), request("GET")), "routes", "bare app", count),
            tagged(
                ASGICase(
                    f"routes: stack, {count:,}",
                    full_stack(secret=SECRET, app=routed_app(count)),
                    request("GET"),
                    baseline=bare,
                ),
                "routes",
                "the stack",
                count,
            ),
        ]
    return out


# --- live keys ------------------------------------------------------------------------


async def _turn(i: int) -> None:
    await asyncio.sleep(0)


def _store_hits(count: int) -> Case:
    """The layer's store call alone, on `count` live keys in turn, then a turn of the loop."""
    store = MemoryStorage(max_keys=2 * max(KEYS))
    acquire = store.limiter("fixed-window")
    quotas = (Quota("ip-0", 1_000_000, 86_400),)
    keys = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(count)]
    for key in keys:
        acquire(key, quotas, 1)

    async def hit(i: int) -> None:
        acquire(keys[i % count], quotas, 1)
        await asyncio.sleep(0)

    return FuncCase(
        f"keys: store hit alone, {count:,} live", hit, is_async=True, baseline="keys: loop turn"
    )


def _key_cases() -> list[Case]:
    bare = "keys: bare, 1,000 clients"
    out: list[Case] = [
        tagged(ManyClients(bare, starlette_app(), clients=1000), "keys", "bare", -1),
        tagged(FuncCase("keys: loop turn", _turn, is_async=True), "keys", "loop turn", -1),
    ]
    for count in _sizes(KEYS, 2):
        out.append(tagged(_store_hits(count), "keys", "its store alone", count))
        store = MemoryStorage(max_keys=2 * max(KEYS))
        app = guard(
            starlette_app(),
            Middleware(RateLimitMiddleware, name="ip", limit=KEY_LIMIT, storage=store),
        )
        case = ManyClients(
            f"keys: IP limit, {count:,} live",
            app,
            clients=count,
            store=store,
            baseline=bare,
            expect_headers=[b"ratelimit"],
        )
        out.append(tagged(case, "keys", "IP limit, memory", count))
    return out


# --- tokens ---------------------------------------------------------------------------


def _tokens(count: int, tag: str) -> list[str]:
    key = SigningKey("HS256", None, SECRET)
    return [
        mint_token(key, {**BENCH_CLAIMS, "jti": f"{tag}-{i}"}, expires_in=86_400)
        for i in range(count)
    ]


def _jwt_app(cache_size: int) -> Any:
    auth = JWTAuth(
        key=SECRET,
        algorithms=["HS256"],
        audience=BENCH_CLAIMS["aud"],
        issuer=BENCH_CLAIMS["iss"],
        cache_size=cache_size,
    )
    return guard(starlette_app(), Middleware(AuthMiddleware, authenticators=[auth]))


def _token_cases() -> list[Case]:
    bare = "tokens: bare, 1,000 tokens"
    out: list[Case] = [
        tagged(ManyTokens(bare, starlette_app(), _tokens(1000, "bare")), "tokens", "bare", -1)
    ]
    for count in _sizes(TOKENS, 2):
        cached = _tokens(count, f"hit{count}")
        # Never seen, more of them than the cache holds: each one is evicted
        # before it comes round again, so every request verifies its token.
        fresh = _tokens(max(count + 1, 1000), f"miss{count}")
        out += [
            tagged(
                ManyTokens(
                    f"tokens: JWT hit, {count:,} cached",
                    _jwt_app(count),
                    cached,
                    prefill=cached,
                    baseline=bare,
                ),
                "tokens",
                "JWT, cache hit",
                count,
            ),
            tagged(
                ManyTokens(
                    f"tokens: JWT miss, {count:,} cached",
                    _jwt_app(count),
                    fresh,
                    prefill=cached,
                    baseline=bare,
                ),
                "tokens",
                "JWT, cache miss (verified)",
                count,
            ),
        ]
    return out


# --- concurrency ----------------------------------------------------------------------


def _concurrency_cases() -> list[Case]:
    out: list[Case] = []
    for k in _sizes(IN_FLIGHT, 2):
        bare = f"in flight: bare, {k}"
        out += [
            tagged(InFlight(bare, starlette_app(), in_flight=k), "in-flight", "bare app", k),
            tagged(
                InFlight(
                    f"in flight: stack, {k}",
                    full_stack(secret=SECRET),
                    in_flight=k,
                    baseline=bare,
                ),
                "in-flight",
                "the stack",
                k,
            ),
        ]
    return out


# --- sampling -------------------------------------------------------------------------


def _providers(ratio: float) -> tuple[Any, Any]:
    """An SDK tracer provider keeping `ratio` of traces (spans dropped), a meter provider."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)))
    tracer_provider.add_span_processor(BatchSpanProcessor(Discard()))
    return tracer_provider, MeterProvider(metric_readers=[InMemoryMetricReader()])


def _sampling_cases() -> list[Case]:
    bare = "sampling: bare"
    out: list[Case] = [
        tagged(ASGICase(bare, starlette_app(), request("GET")), "sampling", "bare", -1)
    ]
    for ratio in RATIOS:
        tracer, meter = _providers(ratio)
        ours = guard(
            starlette_app(),
            Middleware(TracingMiddleware, tracer_provider=tracer, meter_provider=meter),
        )
        theirs = peers.otel_asgi(*_providers(ratio))
        out += [
            tagged(
                ASGICase(f"sampling: apiguard, {ratio:.0%}", ours, request("GET"), baseline=bare),
                "sampling",
                "apiguard tracing",
                ratio * 100,
            ),
            tagged(
                ASGICase(
                    f"sampling: otel-asgi, {ratio:.0%}", theirs, request("GET"), baseline=bare
                ),
                "sampling",
                "otel-asgi",
                ratio * 100,
            ),
        ]
    return out


PARTS = {
    "routes": lambda: _route_cases(),
    "keys": lambda: _key_cases(),
    "tokens": lambda: _token_cases(),
    "in-flight": lambda: _concurrency_cases(),
    "sampling": lambda: _sampling_cases(),
}


def cases() -> list[Case]:
    """Every part, or those `APIGUARD_BENCH_GROWTH` names (`routes,keys`)."""
    chosen = os.environ.get("APIGUARD_BENCH_GROWTH", ",".join(PARTS)).split(",")
    unknown = set(chosen) - set(PARTS)
    if unknown:
        raise ValueError(f"APIGUARD_BENCH_GROWTH: no parts {sorted(unknown)}; known: {list(PARTS)}")
    return [case for part in chosen for case in PARTS[part]()]


#: "Flat": the largest figure of a series minus its smallest, at most this (µs):
#: twice the noise floor `benchmarks.compare` ignores.
FLAT_US = 1.0


def summary(results: list[Result]) -> str:
    """How each series moves from its smallest size to its largest, and the memory held."""
    from benchmarks.targets import render

    lines = []
    series: dict[tuple[str, str], list[tuple[float, float]]] = {}
    by = {r.case.name: r for r in results}
    for result in results:
        meta, base = result.case.meta or {}, result.case.baseline
        if base is None:
            continue
        over = paired_overhead(result, by[base])[0]
        series.setdefault((meta["figure"], meta["series"]), []).append((meta["x"], over))
    for (figure, name), points in series.items():
        points.sort()
        low, high = min(p[1] for p in points), max(p[1] for p in points)
        lines.append(
            f"- {figure}, {name}: {points[0][1]:+.2f} µs at {points[0][0]:,g} → "
            f"{points[-1][1]:+.2f} µs at {points[-1][0]:,g} (spread {high - low:.2f} µs)"
        )
    for result in results:
        meta = result.case.meta or {}
        if "memory_bytes" in meta and meta.get("live_keys"):
            per_key = meta["memory_bytes"] / meta["live_keys"]
            lines.append(
                f"- memory held by {meta['live_keys']:,} live keys: "
                f"{meta['memory_bytes'] / 1e6:.1f} MB ({per_key:.0f} B a key); "
                f"fewest live during the run: {meta.get('live_keys_min', 0):,}"
            )
    verdicts = render(targets(results))
    return "How each series moves:\n" + "\n".join(lines) + "\n\n" + verdicts


def targets(results: list[Result]) -> list[Any]:
    """The limiter on memory: flat from 1 to 1,000,000 live keys."""
    from benchmarks.targets import at_most

    by = {r.case.name: r for r in results}
    points = [
        paired_overhead(r, by[r.case.baseline])[0]
        for r in results
        if (r.case.meta or {}).get("series") == "IP limit, memory"
    ]
    if len(points) < 2:
        return []
    keys = [
        r.case.meta["x"] for r in results if (r.case.meta or {}).get("series") == "IP limit, memory"
    ]  # type: ignore[index]
    return [
        at_most(
            f"the IP limit on memory, flat from {min(keys):,} to {max(keys):,} live keys",
            max(points) - min(points),
            FLAT_US,
            f"spread ≤ {FLAT_US:g} µs",
            "python -m benchmarks growth",
        )
    ]
