"""The case kinds of the growth suite: many clients, many tokens, many requests in flight.

Each varies one thing per request without building it in the timed loop:
the scope's client address, its `Authorization` header, or how many
requests run at once; everything else is the realistic scope of
`benchmarks.driver`.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from typing import Any

from apiguard.storage import MemoryStorage
from benchmarks.driver import BASE_HEADERS, LIFESPAN_STATE, ASGICase, Request, _Sink
from benchmarks.stack import request


def resident_bytes() -> int | None:
    """The process's resident set (Linux), after a full collection."""
    gc.collect()
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None


class ManyClients(ASGICase):
    """Requests from `clients` addresses in turn; with `store`, one key each, filled first."""

    def __init__(
        self, name: str, app: Any, *, clients: int, store: MemoryStorage | None = None, **kw: Any
    ) -> None:
        addresses = [
            (f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 52144) for i in range(clients)
        ]
        first = request("GET")
        first.client = addresses[0]  # the plain check's request is one of the clients
        super().__init__(name, app, first, **kw)
        self.clients = addresses
        self.store = store
        self.offset = 0
        self.filled = store is None

    async def check(self) -> None:
        if not self.filled:
            template, body = self.templates[0]
            before = resident_bytes()
            for client in self.clients:
                status, _ = await self.answer({**template, "client": client}, body)
                if status != self.expect:
                    raise AssertionError(f"{self.name}: filling got {status}")
            after = resident_bytes()
            assert self.store is not None
            assert self.meta is not None
            self.meta["live_keys"] = len(self.store)
            if before is not None and after is not None:
                self.meta["memory_bytes"] = after - before
            self.filled = True
        await super().check()

    async def batch(self, n: int) -> int:
        template, body = self.templates[0]
        clients, count, app = self.clients, len(self.clients), self.app
        sink, state, turn = _Sink(), LIFESPAN_STATE, asyncio.sleep
        sink.body = body
        offset = self.offset
        start = time.perf_counter_ns()
        for i in range(n):
            sink.delivered = False
            scope = template.copy()
            scope["client"] = clients[(offset + i) % count]
            scope["state"] = state.copy()
            await turn(0)
            await app(scope, sink.receive, sink.send)
        elapsed = time.perf_counter_ns() - start
        self.offset = (offset + n) % count
        if self.store is not None and self.meta is not None:  # still all live? (untimed)
            self.meta["live_keys_min"] = min(
                self.meta.get("live_keys_min", 1 << 62), len(self.store)
            )
        return elapsed


class ManyTokens(ASGICase):
    """Requests carrying `tokens` in turn; `prefill` tokens verified (cached) before the timing."""

    def __init__(
        self, name: str, app: Any, tokens: list[str], prefill: list[str] = (), **kw: Any
    ) -> None:
        first = tokens[0] if tokens else ""
        super().__init__(name, app, _bearer(first), **kw)
        self.headers = [
            [*BASE_HEADERS, (b"authorization", b"Bearer " + t.encode())] for t in tokens
        ]
        self.prefill = list(prefill)
        self.offset = 0

    async def check(self) -> None:
        template, body = self.templates[0]
        while self.prefill:
            token = self.prefill.pop()
            auth = (b"authorization", b"Bearer " + token.encode())
            status, _ = await self.answer({**template, "headers": [*BASE_HEADERS, auth]}, body)
            if status != self.expect:
                raise AssertionError(f"{self.name}: filling the cache got {status}")
        await super().check()

    async def batch(self, n: int) -> int:
        template, _ = self.templates[0]  # a GET: no body
        headers, count, app = self.headers, len(self.headers), self.app
        sink, state, turn = _Sink(), LIFESPAN_STATE, asyncio.sleep
        offset = self.offset
        start = time.perf_counter_ns()
        for i in range(n):
            sink.delivered = False
            scope = template.copy()
            scope["headers"] = headers[(offset + i) % count]
            scope["state"] = state.copy()
            await turn(0)
            await app(scope, sink.receive, sink.send)
        self.offset = (offset + n) % count
        return time.perf_counter_ns() - start


def _bearer(token: str) -> Request:
    return Request("GET", "/orders/42", [(b"authorization", f"Bearer {token}".encode())])


class InFlight(ASGICase):
    """`in_flight` requests at once (one `asyncio.gather`), batch after batch."""

    def __init__(self, name: str, app: Any, *, in_flight: int, **kw: Any) -> None:
        super().__init__(name, app, request("GET"), **kw)
        self.in_flight = in_flight

    async def batch(self, n: int) -> int:
        template, _ = self.templates[0]
        app, state, k = self.app, LIFESPAN_STATE, self.in_flight
        groups = max(1, n // k)

        async def one() -> None:
            sink = _Sink()
            scope = template.copy()
            scope["state"] = state.copy()
            await app(scope, sink.receive, sink.send)

        start = time.perf_counter_ns()
        for _ in range(groups):
            await asyncio.gather(*[one() for _ in range(k)])
        elapsed = time.perf_counter_ns() - start
        return elapsed * n // (groups * k)  # per request, as if n had run
