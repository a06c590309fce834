"""Idempotency keys: a keyed POST or PATCH runs once, and its retries get its response.

[`IdempotencyMiddleware`][apiguard.IdempotencyMiddleware] implements
draft-ietf-httpapi-idempotency-key-header-07 over the key-value part of the
store protocol (claims with owner tokens, renewed while the request runs),
in memory or on Redis, single node, Sentinel or Cluster.
"""

from __future__ import annotations

from apiguard.idempotency._policy import RoutePolicy
from apiguard.idempotency.middleware import IdempotencyMiddleware

__all__ = ["IdempotencyMiddleware", "RoutePolicy"]
