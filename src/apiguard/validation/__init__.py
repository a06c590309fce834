"""The validation layer: bounded bodies, content types, strict JSON, pydantic models.

[`ValidationMiddleware`][apiguard.ValidationMiddleware] refuses a request
before the app runs when its body is too large or badly framed, its content
type is not accepted, its JSON is malformed or too deep, or its body, query
or headers fail the route's pydantic models ([`Rules`][apiguard.Rules]). The
validated values are handed to the endpoint through the request context:
[`validated`][apiguard.validation.validated], or the FastAPI dependencies
[`validated_body`][apiguard.validation.validated_body],
[`validated_query`][apiguard.validation.validated_query] and
[`validated_headers`][apiguard.validation.validated_headers].
"""

from __future__ import annotations

from apiguard.validation._values import (
    validated,
    validated_body,
    validated_headers,
    validated_query,
)
from apiguard.validation.middleware import ValidationMiddleware
from apiguard.validation.rules import Rules

__all__ = [
    "Rules",
    "ValidationMiddleware",
    "validated",
    "validated_body",
    "validated_headers",
    "validated_query",
]
