"""Per-route idempotency: which requests are covered, and with what bounds."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from apiguard.layer import Options
from apiguard.routing import WEBSOCKET, parse_route_key

__all__ = ["MAX_BYTES", "MAX_TTL", "Policy", "RoutePolicy", "route_table"]

#: The longest time a response may be kept, in seconds (30 days).
MAX_TTL: Final = 30 * 86400.0
#: The largest body or response bound, in bytes (1 GiB).
MAX_BYTES: Final = 1 << 30


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """What one route gets from the idempotency layer; `None` keeps the layer's option.

    Listing a route with a method (`"PUT /items/{item_id}"`) covers that
    method there even if it is not in the layer's `methods`; a route listed
    without one (`"/orders"`) gets the policy for the layer's `methods`.

    Args:
        required: Whether requests there must carry `Idempotency-Key` (400
            without one).
        ttl: Seconds a response is kept and replayed.
        max_body_bytes: The largest request body fingerprinted there (413 above).
        max_response_bytes: The largest response stored there; a larger one
            is passed through and not stored.
        exempt: Whether the route is not covered at all (the key is ignored).

    Examples:
        >>> RoutePolicy(required=True, ttl=3600).required
        True
    """

    required: bool | None = None
    ttl: float | None = None
    max_body_bytes: int | None = None
    max_response_bytes: int | None = None
    exempt: bool = False


class Policy:
    """A route's policy with every option resolved: what the request path reads."""

    __slots__ = (
        "exempt",
        "max_body_bytes",
        "max_response_bytes",
        "methods",
        "required",
        "ttl",
    )

    def __init__(
        self,
        methods: frozenset[str],
        required: bool,
        ttl: float,
        max_body_bytes: int,
        max_response_bytes: int,
        exempt: bool,
    ) -> None:
        self.methods = methods
        self.required = required
        self.ttl = ttl
        self.max_body_bytes = max_body_bytes
        self.max_response_bytes = max_response_bytes
        self.exempt = exempt


def route_table(
    options: Options,
    default: Policy,
    routes: Mapping[str, RoutePolicy] | None,
    exempt: Iterable[str] | None,
) -> dict[str, Policy]:
    """The per-route policies of `routes` and `exempt`, by route key as given."""
    table: dict[str, Policy] = {}
    for key, given in options.mapping("routes", routes).items():
        spec: object = given  # typed RoutePolicy, but users pass anything
        if not isinstance(spec, RoutePolicy):
            options.fail(f"routes[{key!r}]", spec, "is not RoutePolicy(...)")
        method, _ = parse_route_key("routes", key)
        if method == WEBSOCKET:
            raise options.invalid(
                "routes", f"route {key!r}: idempotency keys are for HTTP requests"
            )
        where = f"routes[{key!r}]"
        table[key] = Policy(
            default.methods if method is None else frozenset({method}),
            default.required
            if spec.required is None
            else options.flag(f"{where}.required", spec.required),
            default.ttl
            if spec.ttl is None
            else options.seconds(f"{where}.ttl", spec.ttl, high=MAX_TTL),
            default.max_body_bytes
            if spec.max_body_bytes is None
            else byte_count(options, f"{where}.max_body_bytes", spec.max_body_bytes),
            default.max_response_bytes
            if spec.max_response_bytes is None
            else byte_count(options, f"{where}.max_response_bytes", spec.max_response_bytes),
            options.flag(f"{where}.exempt", spec.exempt),
        )
    if exempt is not None:
        for key in options.strings("exempt", exempt):
            if key in table:
                raise options.invalid("exempt", f"route {key!r} is in routes too")
            method, _ = parse_route_key("exempt", key)
            methods = default.methods if method is None else frozenset({method})
            table[key] = Policy(
                methods,
                default.required,
                default.ttl,
                default.max_body_bytes,
                default.max_response_bytes,
                True,
            )
    return table


def byte_count(options: Options, option: str, value: object) -> int:
    """A bound in bytes: a whole number from 1 to 1 GiB."""
    return options.integer(option, value, low=1, high=MAX_BYTES)
