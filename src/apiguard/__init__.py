"""apiguard: an API gateway's layers, inside a FastAPI or Starlette process.

Each layer is a pure ASGI middleware; [`guard`][apiguard.guard] composes them
outermost first. See the documentation for the layers and their order.
"""

from __future__ import annotations

from apiguard.auth import APIKeyAuth, AuthMiddleware, JWTAuth
from apiguard.compose import guard
from apiguard.context import Decision, RequestContext, get_context
from apiguard.errors import ConfigError, StorageError
from apiguard.health import HealthMiddleware
from apiguard.idempotency import IdempotencyMiddleware
from apiguard.ipfilter import IPFilterMiddleware
from apiguard.principal import Principal
from apiguard.problems import Problem, set_problem_formatter
from apiguard.ratelimit import (
    RateLimitMiddleware,
    by_api_key,
    by_header,
    by_ip,
    by_principal,
)
from apiguard.resilience import (
    CallableFallback,
    CircuitBreakerMiddleware,
    ConcurrencyLimitMiddleware,
    Fallback,
    ResponseFallback,
    RetryMiddleware,
    StaleIfError,
    TimeoutMiddleware,
)
from apiguard.routing import RouteMatch, resolve
from apiguard.tracing import TracingMiddleware
from apiguard.validation import Rules, ValidationMiddleware

__all__ = [
    "APIKeyAuth",
    "AuthMiddleware",
    "CallableFallback",
    "CircuitBreakerMiddleware",
    "ConcurrencyLimitMiddleware",
    "ConfigError",
    "Decision",
    "Fallback",
    "HealthMiddleware",
    "IPFilterMiddleware",
    "IdempotencyMiddleware",
    "JWTAuth",
    "Principal",
    "Problem",
    "RateLimitMiddleware",
    "RequestContext",
    "ResponseFallback",
    "RetryMiddleware",
    "RouteMatch",
    "Rules",
    "StaleIfError",
    "StorageError",
    "TimeoutMiddleware",
    "TracingMiddleware",
    "ValidationMiddleware",
    "by_api_key",
    "by_header",
    "by_ip",
    "by_principal",
    "get_context",
    "guard",
    "resolve",
    "set_problem_formatter",
]

__version__ = "0.1.0.dev0"
