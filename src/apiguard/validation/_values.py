"""How an endpoint gets what the validation layer validated."""

from __future__ import annotations

from typing import Any, Literal

from starlette.requests import HTTPConnection, Request

from apiguard._types import Scope
from apiguard.context import CONTEXT_KEY, STATE_KEY

__all__ = ["validated", "validated_body", "validated_headers", "validated_query"]


def validated(
    request: HTTPConnection | Scope, part: Literal["body", "query", "headers"] = "body"
) -> Any:
    """The value the validation layer validated for this request's `part`.

    Args:
        request: A Starlette `Request` (or any `HTTPConnection`), or an ASGI scope.
        part: `"body"`, `"query"` or `"headers"`.

    Returns:
        The validated model instance (or value, for a body type that is not
        a model).

    Raises:
        LookupError: no validated value for `part`: the layer is not in front
            of this route, or the route's [`Rules`][apiguard.Rules] have no
            model for `part`.

    Examples:
        >>> from starlette.requests import Request
        >>> async def create_order(request: Request):
        ...     order = validated(request, "body")
    """
    scope = request.scope if isinstance(request, HTTPConnection) else request
    context = scope.get(CONTEXT_KEY) or (scope.get("state") or {}).get(STATE_KEY)
    values = context.values if context is not None else {}
    try:
        return values[part]
    except KeyError:
        msg = (
            f"no validated {part!r} for this request: is ValidationMiddleware in front of "
            f"the route, with Rules({part}=...) for it?"
        )
        raise LookupError(msg) from None


async def validated_body(request: Request) -> Any:
    """FastAPI dependency: the validated body.

    `order: Annotated[OrderIn, Depends(validated_body)]` receives the model
    the layer validated, without FastAPI reading or parsing the body again.
    A coroutine, so that FastAPI calls it on the event loop (a plain function
    would cost a trip to the thread pool: ~150 µs).

    Raises:
        LookupError: the layer validated no body for this request.
    """
    return validated(request, "body")


async def validated_query(request: Request) -> Any:
    """FastAPI dependency: the validated query model.

    Raises:
        LookupError: the layer validated no query for this request.
    """
    return validated(request, "query")


async def validated_headers(request: Request) -> Any:
    """FastAPI dependency: the validated headers model.

    Raises:
        LookupError: the layer validated no headers for this request.
    """
    return validated(request, "headers")
