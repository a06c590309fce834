"""The headline run: the stack, each layer alone, each refusal, the peers, the primitives.

One interleaved run (see `benchmarks.driver`), every request with the
realistic scope: the seven uvicorn-style headers, a bearer token, client
127.0.0.1, a copy of the lifespan state, a turn of the event loop; GET
`/orders/42`, and POST `/orders` with the 302-byte JSON order. In it:

- the bare Starlette app, and the recommended stack (`benchmarks.apps.
  stack_layers`) over it;
- each layer of the stack alone (the principal limit behind the JWT layer
  it needs, its cost the difference), and the layers measured apart: API
  key, IP filter, idempotency without a key and replayed; `asyncio.timeout`
  as a layer, the timeout's yardstick;
- each refusal decided before any store call, signature check or body
  parse, against a layer that answers the same status canned (no token,
  malformed token, unknown `kid`, 413 by `Content-Length`, 415); and those
  that must cost no more than the same request's allowed path (429, 422,
  a bad signature with the token cache off);
- the IP limit on Redis beside the floor: a layer that awaits one `PING`;
- the peers doing the same work (`benchmarks.peers`), GET and POST;
- the primitives: `limits`' hit per strategy and the store hit the layer
  makes, PyJWT's decode per algorithm, pydantic's `model_validate_json` of
  the order, a Redis round trip.

The global-provider peers (otel-asgi with the SDK's batch processor,
FastAPI's native telemetry, Starlette's `OpenTelemetryMiddleware`, and
apiguard's tracing beside them) run in a process of their own:
`benchmarks.tracing`'s `sdk` configuration, prefixed `[sdk]`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
from typing import Any

import jwt as pyjwt
from limits import parse
from limits.aio.storage import MemoryStorage as LimitsMemory
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)
from starlette.middleware import Middleware

from apiguard import (
    APIKeyAuth,
    AuthMiddleware,
    IdempotencyMiddleware,
    IPFilterMiddleware,
    JWTAuth,
    Principal,
    RateLimitMiddleware,
    ValidationMiddleware,
    guard,
)
from apiguard._asgi import CannedResponse
from apiguard.storage import MemoryStorage, Quota, open_store
from apiguard.testing import SigningKey, generate_key, mint_token
from benchmarks import peers
from benchmarks._redis_cases import _OPENED, RawPingCase, _PingFirst, _redis_url, aclose
from benchmarks.apps import (
    BENCH_CLAIMS,
    HIGH_LIMIT,
    NEW_ORDER,
    NEW_ORDER_BYTES,
    OrderIn,
    bench_token,
    full_stack,
    stack_layers,
    starlette_app,
)
from benchmarks.driver import ASGICase, Case, FuncCase, Request, Result, run_cases
from benchmarks.ipfilter import _blocklist
from benchmarks.resilience import AsyncioTimeout, full_shedder, open_breaker
from benchmarks.server_apps import DEFAULT_SECRET

TITLE = "the stack, each layer alone, each refusal, the peers and the primitives, in one run"
#: Defaults for this suite when `--rounds`/`--requests` are not given: tight IQRs.
ROUNDS, REQUESTS = 21, 3000

SECRET = DEFAULT_SECRET.encode()
API_KEY = "k-partner-0123456789"
BARE = {"GET": "bare GET", "POST": "bare POST"}
METHODS = ("GET", "POST")
_PROBLEM = [(b"content-type", b"application/problem+json")]


@functools.cache
def _token() -> str:
    return bench_token(SECRET)


def request(method: str, headers: list[tuple[bytes, bytes]] | None = None) -> Request:
    """GET /orders/42 or POST /orders with the order, with a bearer token unless told."""
    token = [(b"authorization", f"Bearer {_token()}".encode())]
    extra = token if headers is None else headers
    if method == "GET":
        return Request("GET", "/orders/42", extra)
    return Request("POST", "/orders", extra, NEW_ORDER_BYTES)


def tagged(case: Case, group: str, label: str, method: str = "") -> Case:
    """Mark a case for the charts and tables: its group, its label, its method."""
    case.meta = {"group": group, "label": label, "method": method}
    return case


class Canned:
    """The floor of a refusal: a layer answering a canned problem, doing nothing else."""

    def __init__(self, app: Any, *, status: int) -> None:
        self.app = app
        self.response = CannedResponse(status, _PROBLEM, b'{"status":%d}' % status)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.response.send(send)


class Primed(ASGICase):
    """A case whose first request is spent before the check.

    A limit of 1: the rest are 429s; an idempotency key: the rest replay.
    """

    primed = False

    async def check(self) -> None:
        if not self.primed:
            template, body = self.templates[0]
            await self.answer(template, body)
            self.primed = True
        await super().check()


def _expect(method: str) -> int:
    return 200 if method == "GET" else 201


def _layer_cases() -> list[Case]:
    """The bare app, the stack, each of its layers alone; the layers measured apart."""
    cases: list[Case] = []
    layers = stack_layers(secret=SECRET)
    for method in METHODS:
        ok, bare, req = _expect(method), BARE[method], request(method)
        cases += [
            tagged(ASGICase(bare, starlette_app(), req, expect=ok), "bare", "bare app", method),
            tagged(
                ASGICase(
                    f"stack {method}",
                    full_stack(secret=SECRET),
                    req,
                    expect=ok,
                    baseline=bare,
                    expect_headers=[b"ratelimit", b"ratelimit-policy"],
                ),
                "stack",
                f"the stack ({len(layers)} layers)",
                method,
            ),
        ]
        for name, layer in layers.items():
            only = {name} if layer.after is None else {name, layer.after}
            base = bare if layer.after is None else f"{layers[layer.after].label} {method}"
            cases.append(
                tagged(
                    ASGICase(
                        f"{layer.label} {method}",
                        full_stack(secret=SECRET, only=only),
                        req,
                        expect=ok,
                        baseline=base,
                    ),
                    "layer",
                    layer.label,
                    method,
                )
            )
        apart = {
            "API key": (
                guard(
                    starlette_app(),
                    Middleware(
                        AuthMiddleware,
                        authenticators=[APIKeyAuth(keys={API_KEY: Principal(id="p", plan="pro")})],
                    ),
                ),
                request(method, [(b"x-api-key", API_KEY.encode())]),
            ),
            "IP filter, 100 networks denied": (
                guard(starlette_app(), Middleware(IPFilterMiddleware, deny=_blocklist(100))),
                req,
            ),
            "idempotency, no key": (
                guard(starlette_app(), Middleware(IdempotencyMiddleware)),
                req,
            ),
        }
        for label, (app, this) in apart.items():
            cases.append(
                tagged(
                    ASGICase(f"{label} {method}", app, this, expect=ok, baseline=bare),
                    "apart",
                    label,
                    method,
                )
            )
        cases.append(
            tagged(
                ASGICase(
                    f"asyncio.timeout() layer {method}",
                    guard(starlette_app(), Middleware(AsyncioTimeout)),
                    req,
                    expect=ok,
                    baseline=bare,
                ),
                "primitive-layer",
                "asyncio.timeout() as a layer",
                method,
            )
        )
    replay = request("POST", [(b"idempotency-key", b'"8e03978e-40d5-43e8-bc93-6894a57f9324"')])
    cases.append(
        tagged(
            Primed(  # the first request runs the app and stores; the rest replay
                "idempotency, replayed POST",
                guard(starlette_app(), Middleware(IdempotencyMiddleware)),
                replay,
                expect=201,
                baseline=BARE["POST"],
                expect_headers=[b"idempotent-replayed"],
            ),
            "apart",
            "idempotency, replayed",
            "POST",
        )
    )
    return cases


def _jwt_layer(key: Any = SECRET, cache_size: int = 10_000) -> Middleware:
    auth = JWTAuth(
        key=key,
        algorithms=["HS256"],
        audience=BENCH_CLAIMS["aud"],
        issuer=BENCH_CLAIMS["iss"],
        cache_size=cache_size,
    )
    return Middleware(AuthMiddleware, authenticators=[auth])


def _refusal_cases() -> list[Case]:
    """Each refusal, beside a layer answering its status canned, and the allowed paths."""
    cases: list[Case] = []
    floors = ((401, "GET"), (429, "GET"), (503, "GET"), (413, "POST"), (415, "POST"), (422, "POST"))
    for status, method in floors:
        cases.append(
            tagged(
                ASGICase(
                    f"canned {status} {method}",
                    guard(starlette_app(), Middleware(Canned, status=status)),
                    request(method),
                    expect=status,
                ),
                "floor",
                f"a canned {status}",
                method,
            )
        )
    other_key = SigningKey("HS256", None, b"another-secret-0123456789abcdef-0123")
    forged = mint_token(other_key, BENCH_CLAIMS, expires_in=3600)
    stranger = mint_token(SigningKey("HS256", "someone-else", SECRET), BENCH_CLAIMS)
    invalid = {**NEW_ORDER, "lines": [{**line, "quantity": "two"} for line in NEW_ORDER["lines"]]}
    text = request("POST")
    text.content_type = b"text/plain"
    rejected = request("POST")
    rejected.body = json.dumps(invalid).encode()

    def bearer(token: str) -> Request:
        return request("GET", [(b"authorization", f"Bearer {token}".encode())])

    auth_header = [b"www-authenticate"]
    refusals: list[tuple[str, Any, Request, int, list[bytes]]] = [
        ("no token", _jwt_layer(), request("GET", []), 401, auth_header),
        (
            "malformed token",
            _jwt_layer(),
            bearer("eyJhbGciOiJIUzI1NiJ9.not-json-at-all.c2ln"),
            401,
            auth_header,
        ),
        ("unknown kid", _jwt_layer(key={"bench-1": SECRET}), bearer(stranger), 401, auth_header),
        (
            "413 by Content-Length",
            Middleware(ValidationMiddleware, max_body_bytes=256),
            request("POST"),
            413,
            [],
        ),
        ("415", Middleware(ValidationMiddleware), text, 415, []),
        (
            "429",
            Middleware(RateLimitMiddleware, name="ip", limit="1/hour"),
            request("GET"),
            429,
            [b"retry-after"],
        ),
        (
            "422",
            stack_layers(secret=SECRET)["validation"].middleware,
            rejected,
            422,
            [],
        ),
        ("bad signature", _jwt_layer(cache_size=0), bearer(forged), 401, auth_header),
    ]
    for label, layer, req, status, headers in refusals:
        kind = Primed if status == 429 else ASGICase
        cases.append(
            tagged(
                kind(
                    f"refused: {label} {req.method}",
                    guard(starlette_app(), layer),
                    req,
                    expect=status,
                    baseline=f"canned {status} {req.method}",
                    expect_headers=headers,
                ),
                "refusal",
                label,
                req.method,
            )
        )
    for label, app in (("breaker open", open_breaker()), ("shed", full_shedder())):
        cases.append(
            tagged(
                ASGICase(
                    f"refused: {label} GET",
                    app,
                    request("GET"),
                    expect=503,
                    baseline="canned 503 GET",
                    expect_headers=[b"retry-after"],
                ),
                "refusal",
                label,
                "GET",
            )
        )
    cases.append(
        tagged(
            ASGICase(
                "JWT HS256, uncached GET",
                guard(starlette_app(), _jwt_layer(cache_size=0)),
                request("GET"),
                baseline=BARE["GET"],
            ),
            "allowed",
            "JWT HS256, token cache off",
            "GET",
        )
    )
    return cases


def _redis_and_peer_cases() -> list[Case]:
    """The IP limit on Redis beside its floor, and the peers, on GET and POST."""
    url = _redis_url()
    store = open_store(url, timeout=1.0)
    _OPENED.append(store.aclose)
    cases: list[Case] = []
    for method in METHODS:
        ok, bare, req = _expect(method), BARE[method], request(method)
        redis_stack = full_stack(secret=SECRET, storage=url, only={"ip-limit"})
        _OPENED.append(lambda app=redis_stack: _store_aclose(app))
        built: dict[str, tuple[str, Any]] = {
            f"IP limit, Redis {method}": ("redis", redis_stack),
            f"a layer awaiting one Redis PING {method}": (
                "redis-floor",
                _PingFirst(starlette_app(), store),
            ),
            f"slowapi decorator, memory {method}": ("peer", peers.slowapi_decorator()),
            f"slowapi decorator, Redis {method}": ("peer", peers.slowapi_decorator(url)),
            f"slowapi middleware, memory {method}": ("peer", peers.slowapi_middleware()),
            f"slowapi middleware, Redis {method}": ("peer", peers.slowapi_middleware(url)),
            f"Starlette AuthenticationMiddleware + PyJWT HS256 {method}": (
                "peer",
                peers.starlette_auth_pyjwt(SECRET),
            ),
            f"BaseHTTPMiddleware limiter, hand-written {method}": (
                "peer",
                peers.basehttp_limiter(),
            ),
            f"otel-asgi, no SDK {method}": ("peer", peers.otel_asgi()),
        }
        for name, (group, app) in built.items():
            label = name.removesuffix(f" {method}")
            case = ASGICase(name, app, req, expect=ok, baseline=bare)
            cases.append(tagged(case, group, label, method))
    return cases


async def _store_aclose(app: Any) -> None:
    from benchmarks._redis_cases import _store_of

    if app.middleware_stack is not None:  # built by a first request
        await _store_of(app).aclose()


def _primitive_cases() -> list[Case]:
    """What the layers are built on, timed alone (µs per call)."""
    item = parse(HIGH_LIMIT)
    strategies = {
        "fixed-window": FixedWindowRateLimiter,
        "moving-window": MovingWindowRateLimiter,
        "sliding-window-counter": SlidingWindowCounterRateLimiter,
    }
    cases: list[Case] = []
    for strategy, limiter_class in strategies.items():
        limiter = limiter_class(LimitsMemory())
        cases.append(
            FuncCase(
                f"limits {strategy} hit, memory",
                lambda i, limiter=limiter: limiter.hit(item, "127.0.0.1"),
                is_async=True,
                unit="hit",
            )
        )
    acquire = MemoryStorage().limiter("fixed-window")
    quotas = (Quota("ip-0", 1_000_000, 60),)
    cases.append(
        FuncCase(
            "apiguard memory store hit, fixed window",
            lambda i: acquire("127.0.0.1", quotas, 1),
            unit="hit",
        )
    )
    claims = {**BENCH_CLAIMS, "exp": int(time.time()) + 86_400}
    for algorithm in ("HS256", "RS256", "ES256"):
        key = generate_key(algorithm, kid=None)
        token = mint_token(key, claims)
        public = key.verification_key
        cases.append(
            FuncCase(
                f"PyJWT decode {algorithm}",
                lambda i, t=token, k=public, a=algorithm: pyjwt.decode(
                    t, k, algorithms=[a], audience=BENCH_CLAIMS["aud"], issuer=BENCH_CLAIMS["iss"]
                ),
            )
        )
    cases.append(
        FuncCase(
            "pydantic model_validate_json, 302 B",
            lambda i: OrderIn.model_validate_json(NEW_ORDER_BYTES),
        )
    )
    url = _redis_url()
    ours = open_store(url, timeout=1.0)
    _OPENED.append(ours.aclose)
    cases += [
        FuncCase(
            "Redis PING, apiguard client",
            lambda i: ours.client().execute(b"*1\r\n$4\r\nPING\r\n"),  # type: ignore[union-attr]
            is_async=True,
            unit="round trip",
        ),
        RawPingCase("Redis PING, raw asyncio socket", url),
    ]
    cases[-1].unit = "round trip"
    return [tagged(case, "primitive", case.name) for case in cases]


def cases() -> list[Case]:
    """Every in-process case of the run (the `[sdk]` ones run in their own process)."""
    return _layer_cases() + _refusal_cases() + _redis_and_peer_cases() + _primitive_cases()


async def _run_here(rounds: int, requests: int) -> list[Result]:
    try:
        return await run_cases(cases(), rounds=rounds, requests=requests)
    finally:
        await aclose()


def run_suite(*, rounds: int, requests: int) -> list[Result]:
    """The in-process cases, then the SDK configuration in a process of its own."""
    from benchmarks import tracing

    results = asyncio.run(_run_here(rounds, requests))
    if os.environ.get("APIGUARD_BENCH_SDK", "1") == "1":
        results += tracing.run_config("sdk", rounds=rounds, requests=requests)
    return results


def summary(results: list[Result]) -> str:
    """Every target of the issue this run measures, with a verdict."""
    from benchmarks.targets import render, stack_targets

    return render(stack_targets(results))


def targets(results: list[Result]) -> list[Any]:
    """The verdicts, for the result file."""
    from benchmarks.targets import stack_targets

    return stack_targets(results)
