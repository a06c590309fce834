"""The layer's instruments, and the bounds on every label they carry.

Labels are route templates (never paths), methods from the known list (or
`_OTHER`), status codes, layer names and reason codes: all bounded by the
app and its configuration. The consumer label is the one that grows with
traffic, so it exists only where configured and is capped: past
`max_consumers` distinct values, new consumers are counted as `other`.
"""

from __future__ import annotations

from typing import Final

from opentelemetry.metrics import Counter, Histogram, Meter, MeterProvider, UpDownCounter

from apiguard.principal import Principal

__all__ = [
    "DURATION_BUCKETS",
    "OTHER_CONSUMER",
    "SCHEMA_URL",
    "ConsumerLabels",
    "Instruments",
    "StateChanges",
]

#: The conventions' advisory bucket boundaries for `http.server.request.duration`.
DURATION_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.26.0"
OTHER_CONSUMER: Final = "other"
ANONYMOUS: Final = "anonymous"
NO_PLAN: Final = "none"
#: (layer, name, policy) keys whose state is tracked for transitions.
_MAX_STATES: Final = 4096


class Instruments:
    """The instruments of one meter provider, made once per provider."""

    __slots__ = (
        "active",
        "duration",
        "refusals",
        "request_size",
        "requests",
        "response_size",
        "store_errors",
        "transitions",
    )

    def __init__(self, provider: MeterProvider, version: str, *, active: bool, sizes: bool):
        meter: Meter = provider.get_meter("apiguard", version, schema_url=SCHEMA_URL)
        self.duration: Histogram = meter.create_histogram(
            "http.server.request.duration",
            unit="s",
            description="Duration of HTTP server requests.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.active: UpDownCounter | None = None
        if active:
            self.active = meter.create_up_down_counter(
                "http.server.active_requests",
                unit="{request}",
                description="Number of active HTTP server requests.",
            )
        self.request_size: Histogram | None = None
        self.response_size: Histogram | None = None
        if sizes:
            self.request_size = meter.create_histogram(
                "http.server.request.body.size",
                unit="By",
                description="Size of HTTP server request bodies.",
            )
            self.response_size = meter.create_histogram(
                "http.server.response.body.size",
                unit="By",
                description="Size of HTTP server response bodies.",
            )
        self.refusals: Counter = meter.create_counter(
            "apiguard.refusals",
            unit="{request}",
            description="Requests refused by an apiguard layer, by layer, reason and route.",
        )
        self.store_errors: Counter = meter.create_counter(
            "apiguard.store.errors",
            unit="{error}",
            description="Requests whose layer found its store unavailable (open or closed).",
        )
        self.transitions: Counter = meter.create_counter(
            "apiguard.state.transitions",
            unit="{transition}",
            description="Changes of a layer's state (a breaker's closed, open, half-open).",
        )
        self.requests: Counter = meter.create_counter(
            "apiguard.requests",
            unit="{request}",
            description="Requests by route, method, status class and (where configured) consumer.",
        )


class ConsumerLabels:
    """The consumer label of a request: the principal's id or plan, capped.

    Args:
        kind: `"principal"` (the principal's id) or `"plan"` (its plan).
        cap: Distinct values kept before new ones are counted as `other`.
    """

    __slots__ = ("_by", "_seen", "cap")

    def __init__(self, kind: str, cap: int) -> None:
        self._by = kind
        self.cap = cap
        self._seen: set[str] = set()

    def __call__(self, principal: Principal | None) -> str:
        if principal is None:
            return ANONYMOUS
        value = principal.id if self._by == "principal" else principal.plan or NO_PLAN
        seen = self._seen
        if value in seen:
            return value
        if len(seen) >= self.cap:
            return OTHER_CONSUMER
        seen.add(value)
        return value


class StateChanges:
    """Remembers each layer instance's last reported state, to count its transitions.

    apiguard's breakers (the layer's, the stores', the JWKS fetchers')
    report each transition as it happens (`apiguard.breaker.listen`): those
    are counted from there, exactly, and their owners are `reported`. For
    any other layer, a decision's `state` is compared with the last one
    seen for the same layer, name and policy; a change is a transition.
    State is per process, like the breakers'.
    """

    __slots__ = ("_last", "reported")

    def __init__(self) -> None:
        self._last: dict[tuple[str, str | None, str | None], str] = {}
        #: (layer, name) of the state machines whose transitions are heard
        #: as they happen: their decisions' states are not compared.
        self.reported: set[tuple[str, str | None]] = set()

    def change(self, layer: str, name: str | None, policy: str | None, state: str) -> str | None:
        """The previous state when `state` is a change (`None` for no change or a first sight)."""
        if (layer, name) in self.reported:
            return None
        key = (layer, name, policy)
        last = self._last.get(key)
        if last == state:
            return None
        if last is not None or len(self._last) < _MAX_STATES:
            self._last[key] = state
        return last
