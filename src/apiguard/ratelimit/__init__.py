"""Rate limiting and quotas: one layer, keys, draft-11 headers.

[`RateLimitMiddleware`][apiguard.RateLimitMiddleware] counts requests per
key (client address, principal, API key, header) in a store given by URI,
and answers 429 with the `RateLimit` fields of
draft-ietf-httpapi-ratelimit-headers-11 past the quota.
"""

from __future__ import annotations

from apiguard.ratelimit._policy import RoutePolicy
from apiguard.ratelimit.keys import by_api_key, by_header, by_ip, by_principal
from apiguard.ratelimit.middleware import RateLimitMiddleware

__all__ = [
    "RateLimitMiddleware",
    "RoutePolicy",
    "by_api_key",
    "by_header",
    "by_ip",
    "by_principal",
]
