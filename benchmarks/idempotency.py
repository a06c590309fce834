"""The idempotency layer: its cost per request without a key, first run, and replayed.

- GET (not covered) and POST without `Idempotency-Key`: what every request
  that does not use the layer pays (a route lookup, one pass over the
  headers, a decision);
- POST with a key seen for the first time (a new key each request): the
  body read and hashed, the claim, a heartbeat task, the response copied
  and stored over the claim, on the memory store;
- POST with a key already stored: the body read and hashed, the claim
  that finds the response, its replay; the app does not run, so this case
  is cheaper than the bare app, and its own figure is what matters.

`APIGUARD_BENCH_REDIS=redis://...` adds the replay on Redis (one round trip).
"""

from __future__ import annotations

import itertools
import os
import time

from starlette.applications import Starlette
from starlette.middleware import Middleware

from apiguard import IdempotencyMiddleware, guard
from benchmarks.apps import NEW_ORDER, starlette_app
from benchmarks.driver import ASGICase, Case, Request, _Sink, post_json

TITLE = "idempotency: µs per request over the bare app"

KEY = (b"idempotency-key", b'"8e03978e-40d5-43e8-bc93-6894a57f9324"')


class FreshKeys(ASGICase):
    """A POST with a key never sent before, each request (the first run of each key)."""

    _counter = itertools.count()

    async def check(self) -> None:
        scope, body = self.templates[0]
        status = await self._one({**scope, "headers": [*scope["headers"], self._key()]}, body)
        if status != self.expect:
            msg = f"{self.name}: expected status {self.expect}, got {status}"
            raise AssertionError(msg)

    def _key(self) -> tuple[bytes, bytes]:
        return (b"idempotency-key", b'"fresh-%d-%d"' % (id(self), next(self._counter)))

    async def batch(self, n: int) -> int:
        scope, body = self.templates[0]
        headers = scope["headers"]
        app = self.app
        sink = _Sink()
        sink.body = body
        keys = [self._key() for _ in range(n)]
        start = time.perf_counter_ns()
        for key in keys:
            sink.delivered = False
            request = scope.copy()
            request["headers"] = [*headers, key]
            request["state"] = {}
            await app(request, sink.receive, sink.send)
        return time.perf_counter_ns() - start


def layered(**options: object) -> Starlette:
    return guard(starlette_app(), Middleware(IdempotencyMiddleware, **options))


def cases() -> list[Case]:
    get = Request("GET", "/orders/42")
    post = post_json("/orders", NEW_ORDER)
    keyed = post_json("/orders", NEW_ORDER, [KEY])
    layer = layered()
    found: list[Case] = [
        ASGICase("starlette GET", starlette_app(), get),
        ASGICase("+ idempotency, GET (not covered)", layer, get, baseline="starlette GET"),
        ASGICase("starlette POST 300 B", starlette_app(), post, expect=201),
        ASGICase(
            "+ idempotency, POST without a key",
            layer,
            post,
            expect=201,
            baseline="starlette POST 300 B",
        ),
        FreshKeys("starlette POST 300 B, a new key header each", starlette_app(), post, expect=201),
        FreshKeys(
            "+ idempotency, POST with a new key (claim, run, store)",
            layered(),
            post,
            expect=201,
            baseline="starlette POST 300 B, a new key header each",
        ),
        ASGICase(
            "+ idempotency, POST replayed (memory)",
            layered(),
            keyed,
            expect=201,
            baseline="starlette POST 300 B",
        ),
    ]
    redis_url = os.environ.get("APIGUARD_BENCH_REDIS")
    if redis_url:
        found.append(
            ASGICase(
                "+ idempotency, POST replayed (Redis)",
                layered(storage=redis_url, store_timeout=2.0),
                keyed,
                expect=201,
                baseline="starlette POST 300 B",
            )
        )
    return found
