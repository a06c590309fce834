"""Fail-safe layers: deadlines and timeouts, retries, fallbacks, circuit breakers, load shedding.

- [`TimeoutMiddleware`][apiguard.TimeoutMiddleware]: a time budget per
  route, the request's deadline in the context, 504 (or a fallback) on time.
- [`RetryMiddleware`][apiguard.RetryMiddleware]: re-runs idempotent requests
  that failed before their response started, with jittered backoff and a
  retry budget across requests.
- [`CircuitBreakerMiddleware`][apiguard.CircuitBreakerMiddleware]: stops
  calling a route (or a key's requests) that keeps failing; a fallback or
  503 with `Retry-After` until a probe succeeds.
- [`ConcurrencyLimitMiddleware`][apiguard.ConcurrencyLimitMiddleware]:
  bounded in-flight work, globally and per route, a short wait queue,
  priorities, optionally an adaptive limit; 503 with `Retry-After` beyond.
- Fallbacks ([`Fallback`][apiguard.Fallback]): a fixed response, a function,
  or the last good response (`stale-if-error`), served by the timeout here
  and by the circuit breaker and load shedder.
- [`request_deadline`][apiguard.resilience.request_deadline]: what is left
  of the request's time, for the endpoint's own outbound calls.
"""

from __future__ import annotations

from apiguard.resilience._adaptive import AdaptiveLimit
from apiguard.resilience.budget import RetryBudget
from apiguard.resilience.circuit import CircuitBreakerMiddleware
from apiguard.resilience.concurrency import ConcurrencyLimitMiddleware
from apiguard.resilience.dependencies import Deadline, request_deadline
from apiguard.resilience.fallbacks import (
    CallableFallback,
    Fallback,
    FallbackChain,
    FallbackFunction,
    FallbackReason,
    ResponseFallback,
    as_fallback,
    fallback_decision,
)
from apiguard.resilience.retry import IDEMPOTENT_METHODS, RetryMiddleware
from apiguard.resilience.stale import StaleIfError
from apiguard.resilience.timeout import TimeoutMiddleware

__all__ = [
    "IDEMPOTENT_METHODS",
    "AdaptiveLimit",
    "CallableFallback",
    "CircuitBreakerMiddleware",
    "ConcurrencyLimitMiddleware",
    "Deadline",
    "Fallback",
    "FallbackChain",
    "FallbackFunction",
    "FallbackReason",
    "ResponseFallback",
    "RetryBudget",
    "RetryMiddleware",
    "StaleIfError",
    "TimeoutMiddleware",
    "as_fallback",
    "fallback_decision",
    "request_deadline",
]
