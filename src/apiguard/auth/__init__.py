"""Authentication: who is calling, established from a bearer JWT or an API key.

[`AuthMiddleware`][apiguard.AuthMiddleware] tries its authenticators
([`JWTAuth`][apiguard.JWTAuth], [`APIKeyAuth`][apiguard.APIKeyAuth]) in order
and leaves the caller in `request.user`, `request.auth`,
`request.state.principal` and the request context (DESIGN.md contract 5).
"""

from __future__ import annotations

from apiguard.auth.apikey import APIKeyAuth, key_digest
from apiguard.auth.dependencies import current_principal, optional_principal
from apiguard.auth.jwt import JWTAuth
from apiguard.auth.middleware import AuthMiddleware

__all__ = [
    "APIKeyAuth",
    "AuthMiddleware",
    "JWTAuth",
    "current_principal",
    "key_digest",
    "optional_principal",
]
