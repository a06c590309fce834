"""`Rules`: what one route accepts, overriding the layer's defaults."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from apiguard.errors import ConfigError
from apiguard.validation._json import MAX_SUPPORTED_DEPTH
from apiguard.validation._media import ContentTypes
from apiguard.validation._models import BodyModel, ParamsModel

__all__ = ["Rules", "check_count", "check_depth"]


def check_count(option: str, value: object, *, minimum: int = 0) -> int:
    """`value` if it is an int of at least `minimum`, else a `ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        msg = f"{option} {value!r} is not an int of at least {minimum}"
        raise ConfigError(msg)
    return value


def check_depth(option: str, value: object) -> int:
    """A JSON nesting bound the parser honours exactly (1 to 128)."""
    depth = check_count(option, value, minimum=1)
    if depth > MAX_SUPPORTED_DEPTH:
        msg = (
            f"{option} {value!r} is over {MAX_SUPPORTED_DEPTH}: the JSON parser refuses "
            "deeper documents by itself (and no API needs them)"
        )
        raise ConfigError(msg)
    return depth


@dataclass(frozen=True, slots=True)
class Rules:
    """What one route accepts: models for its parts, and limits of its own.

    Every option left at `None` takes the layer's value; the others override
    it for this route. A frozen value, checked when it is built.

    Args:
        body: A pydantic model (or any type pydantic validates, such as
            `list[Item]`) for the JSON body. The body is then required: an
            empty one is a 422, unless the type accepts `None`
            (`Item | None`). Applies to requests whose method may carry a
            body. The validated value is `get_context(scope).values["body"]`.
        query: A pydantic model for the query parameters
            (`values["query"]`). List-typed fields receive every value of
            their parameter; other fields the last one. Parameters the model
            does not declare are passed too, so `extra="forbid"` refuses them.
        headers: A pydantic model for request headers (`values["headers"]`).
            Field `x_request_id` reads header `X-Request-ID` (or give an
            alias). Only declared headers are passed.
        max_body_bytes: The largest body accepted, in bytes.
        content_types: The media types accepted for a non-empty body.
        no_body: `True` refuses any body (413), `False` allows one whatever
            the method; `None` decides by the layer's `no_body_methods`.
        max_json_depth: The deepest nesting of arrays and objects accepted
            in a JSON body (1 to 128).
        max_query_params: The most query parameters accepted.
        max_query_bytes: The longest raw query string accepted, in bytes.
        max_query_param_bytes: The longest single raw `name=value` pair
            accepted, in bytes.

    Raises:
        ConfigError: an option is of the wrong type or out of range.

    Examples:
        >>> from pydantic import BaseModel
        >>> class OrderIn(BaseModel):
        ...     sku: str
        ...     quantity: int
        >>> Rules(body=OrderIn, max_body_bytes=16_384).max_body_bytes
        16384
    """

    body: Any = None
    query: type[Any] | None = None
    headers: type[Any] | None = None
    max_body_bytes: int | None = None
    content_types: Sequence[str] | None = None
    no_body: bool | None = None
    max_json_depth: int | None = None
    max_query_params: int | None = None
    max_query_bytes: int | None = None
    max_query_param_bytes: int | None = None
    _body: BodyModel | None = field(default=None, init=False, repr=False, compare=False)
    _query: ParamsModel | None = field(default=None, init=False, repr=False, compare=False)
    _headers: ParamsModel | None = field(default=None, init=False, repr=False, compare=False)
    _types: ContentTypes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in (
            "max_body_bytes",
            "max_query_params",
            "max_query_bytes",
            "max_query_param_bytes",
        ):
            value = getattr(self, name)
            if value is not None:
                check_count(f"Rules: {name}", value)
        if self.max_json_depth is not None:
            check_depth("Rules: max_json_depth", self.max_json_depth)
        no_body: object = self.no_body
        if no_body is not None and not isinstance(no_body, bool):
            msg = f"Rules: no_body {no_body!r} is not True, False or None"
            raise ConfigError(msg)
        if self.body is not None:
            if self.no_body:
                msg = "Rules: body= and no_body=True contradict each other"
                raise ConfigError(msg)
            object.__setattr__(self, "_body", BodyModel("Rules: body", self.body))
        if self.query is not None:
            object.__setattr__(
                self, "_query", ParamsModel("Rules: query", self.query, headers=False)
            )
        if self.headers is not None:
            model = ParamsModel("Rules: headers", self.headers, headers=True)
            object.__setattr__(self, "_headers", model)
        if self.content_types is not None:
            types = ContentTypes("Rules: content_types", self.content_types)
            object.__setattr__(self, "_types", types)
            object.__setattr__(self, "content_types", types.entries)
