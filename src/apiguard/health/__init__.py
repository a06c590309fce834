"""Liveness and readiness endpoints: [`HealthMiddleware`][apiguard.HealthMiddleware].

Answered as `application/health+json` (draft-inadarei-api-health-check),
before the layers inside the health layer: no authentication, rate limit or
shedding stands between a load balancer's probe and its answer.
"""

from __future__ import annotations

from apiguard.health._checks import HealthCheck
from apiguard.health.middleware import HEALTH_JSON, HealthMiddleware

__all__ = ["HEALTH_JSON", "HealthCheck", "HealthMiddleware"]
