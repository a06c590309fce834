"""Shared state for the layers: a storage URI in, a [`Store`][apiguard.storage.Store] out.

- `memory://` (the default) is apiguard's own [`MemoryStorage`][apiguard.storage.MemoryStorage]:
  O(1) a hit whatever the number of keys, one per layer instance and process.
- `redis://`, `rediss://`, `redis+unix://` (and the `valkey` forms), written
  as for slowapi, are served by apiguard's own RESP client (one multiplexed
  connection per event loop); `redis+cluster://`, `redis+sentinel://`, and a
  single-node URI with an option that client does not know, map to
  `limits`' async Redis storages with the redis-py client, exceptions
  wrapped, sentinel reads from the primary. apiguard runs its own scripts on
  either (one round trip a request).
- `memcached://`, `mongodb://`, `mongodb+srv://`, and any `async+...` URI
  `limits` knows, go through `limits`' own async storage API.

Every store offers the rate-limit part of the store protocol; every store
but `limits`' own (memcached, MongoDB) offers the key-value part too (claims
with owner tokens, values as bytes). Every call to a network store has a
timeout and goes through a breaker of the store's own; failures come out as
[`StorageError`][apiguard.StorageError].
"""

from __future__ import annotations

import importlib.util
import math
from typing import Final

from limits.errors import ConfigurationError

from apiguard.errors import ConfigError, redact
from apiguard.storage._base import (
    FIXED_WINDOW,
    MOVING_WINDOW,
    SLIDING_WINDOW_COUNTER,
    STRATEGIES,
    Acquire,
    Claim,
    KeyValueStore,
    Quota,
    Store,
    Strategy,
    Verdict,
)
from apiguard.storage._guard import StoreBreaker
from apiguard.storage._memory_kv import MemoryKeyValue
from apiguard.storage._redis import RedisStore
from apiguard.storage._redis_options import CONNECT_TIMEOUT, Form, own_options, redis_py_options
from apiguard.storage._remote import LimitsStore, RemoteStore
from apiguard.storage._resp import parse_redis_uri
from apiguard.storage.memory import MemoryStorage

__all__ = [
    "FIXED_WINDOW",
    "MOVING_WINDOW",
    "SLIDING_WINDOW_COUNTER",
    "STRATEGIES",
    "Acquire",
    "Claim",
    "KeyValueStore",
    "LimitsStore",
    "MemoryKeyValue",
    "MemoryStorage",
    "Quota",
    "RedisStore",
    "RemoteStore",
    "Store",
    "StoreBreaker",
    "Strategy",
    "Verdict",
    "open_store",
]

_MEMORY: Final = frozenset({"memory", "async+apiguard-memory"})
_REDIS: Final = frozenset(
    {
        "redis",
        "rediss",
        "redis+unix",
        "redis+cluster",
        "redis+sentinel",
        "valkey",
        "valkeys",
        "valkey+unix",
        "valkey+cluster",
        "valkey+sentinel",
    }
)
#: Client packages each family needs, and the pip extra that brings them.
_NEEDS: Final = {
    "redis": (("redis",), "apiguard[redis]"),
    "valkey": (("valkey",), "valkey"),
    "memcached": (("memcachio", "emcache"), "memcachio"),
    "mongodb": (("motor", "pymongo"), "motor"),
}


def open_store(uri: object, *, timeout: float = 0.25, option: str = "storage") -> Store:
    """Check a storage URI and return its store, without connecting.

    Args:
        uri: `memory://`, a `limits` URI (`redis://host:6379/0`, ...), or a
            [`MemoryStorage`][apiguard.storage.MemoryStorage] to share.
        timeout: Seconds one call to a network store may take.
        option: The option's name, for error messages.

    Every Redis URI may add `connect_timeout` (seconds, 3 by default): how
    long a worker's first connection may take where no lifespan start-up
    made it. Cluster and Sentinel URIs take `max_connections` (100): store
    calls in flight per worker, waiting for a free connection within their
    timeout beyond it. Nothing is connected here: start-up
    ([`Store.open`][apiguard.storage.Store.open]) does it.

    Raises:
        ConfigError: the URI has no known scheme, is malformed, has a query
            option its client does not take (the closest known one is
            suggested) or a value it cannot read, a database or path its
            form does not take, or needs a client package that is not
            installed.

    Examples:
        >>> open_store("memory://")
        MemoryStorage('memory://')
        >>> open_store("redis://:secret@cache:6379/0")
        RedisStore('redis://:***@cache:6379/0')
    """
    if isinstance(uri, MemoryStorage):
        return uri
    if not isinstance(uri, str) or "://" not in uri:
        msg = f"{option} {redact(uri)} is not a storage URI like 'memory://' or 'redis://host:6379'"
        raise ConfigError(msg)
    shown = redact(uri)
    scheme = uri.partition("://")[0].lower()
    if scheme in _MEMORY:
        return MemoryStorage(uri)
    bare = scheme.removeprefix("async+")
    target = f"async+{bare}{uri[len(scheme) :]}"
    from limits._storage_scheme import SCHEMES, parse_storage_uri

    if f"async+{bare}" not in SCHEMES:
        known = "memory, redis, rediss, redis+cluster, redis+sentinel, memcached, mongodb"
        msg = f"{option} {shown} has an unknown scheme {scheme!r} (known: {known})"
        raise ConfigError(msg)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not timeout > 0:
        msg = f"store_timeout {timeout!r} is not a positive number of seconds"
        raise ConfigError(msg)
    if not math.isfinite(timeout):
        msg = f"store_timeout {timeout!r} is not finite"
        raise ConfigError(msg)
    endpoint = None
    connect_timeout = CONNECT_TIMEOUT
    if bare in _REDIS:
        try:
            uri, connect_timeout = own_options(uri)
            # A first connection may take at least what any call may.
            connect_timeout = max(connect_timeout, timeout)
            endpoint = parse_redis_uri(uri)
        except ValueError as exc:
            msg = f"{option} {shown} is not a valid storage URI ({redact(str(exc))[1:-1]})"
            raise ConfigError(msg) from None
    family = bare.partition("+")[0]
    family = family.removesuffix("s") if family in ("rediss", "valkeys") else family
    if family in _NEEDS and endpoint is None:
        modules, extra = _NEEDS[family]
        if not any(importlib.util.find_spec(module) for module in modules):
            msg = f"{option} {shown} needs the {modules[0]!r} package: pip install {extra!r}"
            raise ConfigError(msg)
    if bare in _REDIS:
        if endpoint is not None:
            return RedisStore(target, shown, timeout, {}, endpoint, connect_timeout=connect_timeout)
        try:
            read = redis_py_options(
                uri, family=family, form=_form(bare), connect_timeout=connect_timeout
            )
            parse_storage_uri(read.target)
        except (ValueError, ConfigurationError) as exc:
            why = redact(str(exc))[1:-1]
            if why.startswith("Missing host or port"):  # limits reads every host's port
                why = f"{why}: give each host its port (host:6379)"
            msg = f"{option} {shown} is not a valid storage URI ({why})"
            raise ConfigError(msg) from None
        return RedisStore(
            read.target,
            shown,
            timeout,
            read.options,
            None,
            connect_timeout=connect_timeout,
            max_connections=read.max_connections,
        )
    try:
        parse_storage_uri(target)
    except ConfigurationError as exc:
        msg = f"{option} {shown} is not a valid storage URI ({redact(str(exc))[1:-1]})"
        raise ConfigError(msg) from None
    return LimitsStore(target, shown, timeout, {})


def _form(scheme: str) -> Form:
    """Which kind of Redis URI a (bare) scheme is."""
    kind = scheme.partition("+")[2]
    if kind in ("cluster", "sentinel", "unix"):
        return kind  # type: ignore[return-value]
    return "tls" if scheme in ("rediss", "valkeys") else "single"
