"""The apps the server benchmark serves under uvicorn, one per process.

`uvicorn --factory benchmarks.server_apps:make` with `APIGUARD_BENCH_APP`
naming the app, `APIGUARD_BENCH_SECRET` the HS256 secret the load
generator's token is signed with, and `APIGUARD_BENCH_REDIS` the Redis URI
for the stack on Redis.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from benchmarks import peers
from benchmarks.apps import full_stack, starlette_app

#: The HS256 secret a bench token is signed with, when the parent gives none.
DEFAULT_SECRET = "apiguard-benchmark-secret-0123456789abcdef"


def _stack(storage: str) -> Callable[[], Any]:
    def make() -> Any:
        secret = os.environ.get("APIGUARD_BENCH_SECRET", DEFAULT_SECRET).encode()
        return full_stack(secret=secret, storage=storage)

    return make


APPS: dict[str, Callable[[], Any]] = {
    "bare": starlette_app,
    "stack-memory": _stack("memory://"),
    "stack-redis": lambda: _stack(os.environ["APIGUARD_BENCH_REDIS"])(),
    "slowapi-middleware": peers.slowapi_middleware,
    "otel-asgi": peers.otel_asgi,
}


def make() -> Any:
    """The app `APIGUARD_BENCH_APP` names."""
    return APPS[os.environ.get("APIGUARD_BENCH_APP", "bare")]()
