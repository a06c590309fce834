"""An in-process ASGI benchmark driver: µs per request, interleaved rounds.

No server and no sockets: each request is a realistic scope handed straight
to the app, so what is measured is the app and its middleware. Realistic
means what uvicorn hands an app: the headers a client such as httpx sends
(host, user agent, accept, encodings, connection, a request id, a forwarded
protocol; a case adds its own, a bearer token or an API key), the client at
127.0.0.1, the ASGI extensions, and a per-request copy of the lifespan state
(what uvicorn makes for every request); and the event loop turns once in
every request, as it does between a server's reads. Cases run in rounds; each
round runs every case once, in a fresh random order, so that drift on a
shared, noisy machine hits every case alike. A case's overhead is the median
over rounds of its difference from its baseline *in the same round*.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

#: Set by `python -m benchmarks --quick` (and in the subprocesses it starts):
#: every case runs once or a few times, at the smallest sizes, to check it.
QUICK_ENV = "APIGUARD_BENCH_QUICK"


def quick() -> bool:
    """Whether this is the quick mode: suites then build their cases at small sizes."""
    return os.environ.get(QUICK_ENV) == "1"


BASE_HEADERS: list[tuple[bytes, bytes]] = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"python-httpx/0.28.1"),
    (b"accept", b"application/json"),
    (b"accept-encoding", b"gzip, deflate, br"),
    (b"connection", b"keep-alive"),
    (b"x-request-id", b"5b8b7f0e-6a43-4d0c-9d1c-3f2f4b0b9e21"),
    (b"x-forwarded-proto", b"http"),
]
#: What an app's lifespan put in its state (a pool, settings): uvicorn hands
#: every request a shallow copy of it.
LIFESPAN_STATE: dict[str, Any] = {"db": object(), "settings": {"debug": False}}


@dataclass
class Request:
    """One request to replay: method, path, extra headers, body."""

    method: str = "GET"
    path: str = "/orders/42"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    client: tuple[str, int] = ("127.0.0.1", 52144)
    query_string: bytes = b""
    #: The body's media type (sent with its length when there is a body).
    content_type: bytes = b"application/json"

    def scope(self) -> Scope:
        headers = [*BASE_HEADERS, *self.headers]
        if self.body:
            headers += [
                (b"content-type", self.content_type),
                (b"content-length", str(len(self.body)).encode()),
            ]
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": self.method,
            "scheme": "http",
            "path": self.path,
            "raw_path": self.path.encode(),
            "root_path": "",
            "query_string": self.query_string,
            "headers": headers,
            "client": self.client,
            "server": ("127.0.0.1", 8000),
            "extensions": {"http.response.trailers": {}},
        }


def post_json(path: str, payload: Any, headers: Sequence[tuple[bytes, bytes]] = ()) -> Request:
    """A POST request with a JSON body."""
    return Request("POST", path, list(headers), json.dumps(payload).encode())


class Case:
    """Something to time: `batch(n)` runs it n times and returns nanoseconds."""

    name: str
    baseline: str | None
    unit: str = "request"
    #: What the charts and tables need to place the case (group, label, x ...).
    meta: dict[str, Any] | None = None

    async def batch(self, n: int) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    async def check(self) -> None:
        """Run once before timing; raise if the case does not do what it claims."""


class ASGICase(Case):
    """Requests through an ASGI app; each must answer `expect`, with `expect_headers`.

    `expect_headers` are response header names (lowercase bytes) the check
    requires: `retry-after` on a 429, `www-authenticate` on a 401,
    `ratelimit` where a limiter admitted the request.
    """

    def __init__(
        self,
        name: str,
        app: ASGIApp,
        request: Request | Callable[[int], Request],
        *,
        expect: int = 200,
        baseline: str | None = None,
        variants: int = 1,
        expect_headers: Sequence[bytes] = (),
    ) -> None:
        self.name = name
        self.app = app
        self.baseline = baseline
        self.expect = expect
        self.expect_headers = tuple(expect_headers)
        make = request if callable(request) else (lambda _i, r=request: r)
        # Pre-built scopes, so that building them is not timed; `variants`
        # distinct requests (different tokens, keys, ids) are cycled through.
        requests = [make(i) for i in range(variants)]
        self.templates = [(r.scope(), r.body) for r in requests]

    async def _one(self, template: Scope, body: bytes) -> int:
        return (await self.answer(template, body))[0]

    async def answer(self, template: Scope, body: bytes) -> tuple[int, list[bytes]]:
        """One request: the response's status and its header names."""
        status = 0
        names: list[bytes] = []
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                names.extend(name.lower() for name, _ in message.get("headers", ()))

        scope = template.copy()
        scope["state"] = LIFESPAN_STATE.copy()
        await self.app(scope, receive, send)
        return status, names

    async def check(self) -> None:
        for template, body in self.templates:
            status, names = await self.answer(template, body)
            if status != self.expect:
                msg = f"{self.name}: expected status {self.expect}, got {status}"
                raise AssertionError(msg)
            missing = [h.decode() for h in self.expect_headers if h not in names]
            if missing:
                msg = f"{self.name}: the {status} lacks {', '.join(missing)}"
                raise AssertionError(msg)

    async def batch(self, n: int) -> int:
        templates = self.templates
        count = len(templates)
        app = self.app
        body_of = [b for _, b in templates]
        scopes = [t for t, _ in templates]
        sink = _Sink()
        state = LIFESPAN_STATE
        turn = asyncio.sleep
        start = time.perf_counter_ns()
        for i in range(n):
            k = i % count
            sink.delivered = False
            sink.body = body_of[k]
            scope = scopes[k].copy()
            scope["state"] = state.copy()
            await turn(0)  # the loop turns once a request, as under a server
            await app(scope, sink.receive, sink.send)
        return time.perf_counter_ns() - start


class _Sink:
    """receive/send for the timed loop: one body message, then disconnect; sends dropped."""

    __slots__ = ("body", "delivered")

    def __init__(self) -> None:
        self.body = b""
        self.delivered = False

    async def receive(self) -> dict[str, Any]:
        if not self.delivered:
            self.delivered = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        return None


class FuncCase(Case):
    """A plain or async callable timed per call (a primitive's own cost)."""

    def __init__(
        self,
        name: str,
        func: Callable[[int], Any],
        *,
        baseline: str | None = None,
        unit: str = "call",
        is_async: bool = False,
    ) -> None:
        self.name = name
        self.func = func
        self.baseline = baseline
        self.unit = unit
        self.is_async = is_async

    async def check(self) -> None:
        result = self.func(0)
        if self.is_async:
            await result

    async def batch(self, n: int) -> int:
        func = self.func
        start = time.perf_counter_ns()
        if self.is_async:
            for i in range(n):
                await func(i)
        else:
            for i in range(n):
                func(i)
        return time.perf_counter_ns() - start


@dataclass
class Result:
    """Per-round µs per request (or call) of one case."""

    case: Case
    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def spread(self) -> tuple[float, float]:
        return _iqr(self.samples)


def _iqr(values: Sequence[float]) -> tuple[float, float]:
    if len(values) < 4:
        return min(values), max(values)
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


async def run_cases(
    cases: Sequence[Case],
    *,
    rounds: int,
    requests: int,
    seed: int = 0,
    quiet: bool = False,
    warmup: bool | None = None,
) -> list[Result]:
    """Time every case `rounds` times, interleaved, `requests` calls a time.

    Every case is checked first (its status and headers), and its requests
    checked again after the last round, so that a case that changed path
    during the run (a limit reached, an entry evicted) fails rather than
    publish the wrong path's figure. `warmup=False` skips the untimed
    warm-up batch; by default the quick mode skips it.
    """
    if warmup is None:
        warmup = not quick()
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate case names: {names}")
    for case in cases:
        if case.baseline is not None and case.baseline not in names:
            raise ValueError(f"{case.name}: baseline {case.baseline!r} is not a case")
        await case.check()
        if warmup:
            await case.batch(max(requests // 5, 50))
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {c.name: [] for c in cases}
    order = list(cases)
    for round_no in range(rounds):
        rng.shuffle(order)
        for case in order:
            gc.collect()
            elapsed = await case.batch(requests)
            samples[case.name].append(elapsed / requests / 1000)
        if not quiet:
            print(f"\r  round {round_no + 1}/{rounds}", end="", file=sys.stderr, flush=True)
    if not quiet:
        print(file=sys.stderr)
    for case in cases:
        if isinstance(case, ASGICase):
            await ASGICase.check(case)  # the plain check: status and headers
    return [Result(c, samples[c.name]) for c in cases]


def paired_overhead(result: Result, base: Result) -> tuple[float, float, float]:
    """Median and IQR of the per-round difference from the baseline."""
    diffs = [a - b for a, b in zip(result.samples, base.samples, strict=True)]
    low, high = _iqr(diffs)
    return statistics.median(diffs), low, high


def table(results: Sequence[Result], title: str) -> str:
    """A markdown table: median, IQR, and overhead over the baseline."""
    by_name = {r.case.name: r for r in results}
    lines = [
        f"### {title}",
        "",
        "| case | µs/op median | IQR | over baseline (paired median, IQR) | ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for result in results:
        low, high = result.spread()
        over = ratio = ""
        base_name = result.case.baseline
        if base_name is not None:
            base = by_name[base_name]
            med, dlow, dhigh = paired_overhead(result, base)
            over = f"{med:+.2f} ({dlow:+.2f} … {dhigh:+.2f}) vs {base_name}"
            ratio = f"{result.median / base.median:.2f}"
        name, median = result.case.name, result.median
        lines.append(f"| {name} | {median:.2f} | {low:.2f} … {high:.2f} | {over} | {ratio} |")
    return "\n".join(lines)


def environment() -> str:
    """One line on what the figures were measured with."""
    import importlib.metadata as md

    versions = []
    for dist in ("starlette", "fastapi", "limits", "pyjwt", "pydantic"):
        with contextlib.suppress(md.PackageNotFoundError):
            versions.append(f"{dist} {md.version(dist)}")
    return (
        f"CPython {platform.python_version()} on {platform.machine()} {platform.system()}, "
        + ", ".join(versions)
    )


def to_json(results: Sequence[Result]) -> list[dict[str, Any]]:
    """The raw samples, for saving and comparing runs."""
    by_name = {r.case.name: r for r in results}
    out = []
    for result in results:
        entry: dict[str, Any] = {
            "case": result.case.name,
            "unit": result.case.unit,
            "median_us": result.median,
            "samples_us": result.samples,
        }
        if result.case.baseline is not None:
            med, low, high = paired_overhead(result, by_name[result.case.baseline])
            entry.update(
                baseline=result.case.baseline, overhead_us=med, overhead_iqr_us=[low, high]
            )
        meta = getattr(result.case, "meta", None)
        if meta:
            entry["meta"] = meta
        out.append(entry)
    return out


def run(cases: Sequence[Case], *, rounds: int, requests: int, title: str) -> list[Result]:
    """Run the cases on a fresh event loop and print their table."""
    results = asyncio.run(run_cases(cases, rounds=rounds, requests=requests))
    print(table(results, title))
    print()
    return results
