"""Which OpenTelemetry providers are live, asked per request for a few attribute reads.

The SDK may be set up after the app is built (`opentelemetry-instrument`,
a lifespan hook), so the layer cannot decide once at start-up whether there
is anything to report to. `trace.get_tracer_provider()` answers, but costs
~0.7 µs with no SDK (it looks up an environment variable on every call),
and the meter provider as much again: a third of the layer's budget. So the
global providers are read from the API's module globals (`None` until
`set_tracer_provider()` / `set_meter_provider()` is called), falling back on
the public getters should a later API rename them; and everything derived
from a provider (its tracer, its instruments, whether it is a no-op) is
cached on the provider object's identity.
"""

from __future__ import annotations

import os
from typing import Any, Final

from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry.environment_variables import (
    OTEL_PYTHON_METER_PROVIDER,
    OTEL_PYTHON_TRACER_PROVIDER,
)
from opentelemetry.metrics import MeterProvider, NoOpMeterProvider
from opentelemetry.metrics import _internal as metrics_internal
from opentelemetry.trace import (
    NoOpTracer,
    NoOpTracerProvider,
    ProxyTracerProvider,
    Tracer,
    TracerProvider,
)

from apiguard.tracing._metrics import Instruments

__all__ = [
    "Live",
    "global_meter_provider",
    "global_tracer_provider",
    "is_noop_meter_provider",
    "is_noop_proxy",
    "is_noop_tracer_provider",
    "load_from_environment",
]

#: Whether the API keeps its globals where this module reads them.
_FAST_TRACE: Final = hasattr(trace_api, "_TRACER_PROVIDER")
_FAST_METRICS: Final = hasattr(metrics_internal, "_METER_PROVIDER")


def global_tracer_provider() -> TracerProvider | None:
    """The globally set tracer provider, or `None` while none is set (the API's proxy)."""
    if _FAST_TRACE:
        return trace_api._TRACER_PROVIDER
    provider = trace_api.get_tracer_provider()  # pragma: no cover - a future API
    return None if isinstance(provider, ProxyTracerProvider) else provider  # pragma: no cover


def global_meter_provider() -> MeterProvider | None:
    """The globally set meter provider, or `None` while none is set (the API's proxy)."""
    if _FAST_METRICS:
        return metrics_internal._METER_PROVIDER
    provider = metrics_api.get_meter_provider()  # pragma: no cover - a future API
    return None if _is_proxy_meter_provider(provider) else provider  # pragma: no cover


def _is_proxy_meter_provider(provider: object) -> bool:
    return type(provider).__name__ == "_ProxyMeterProvider"


def load_from_environment() -> None:
    """Let the API load providers named by `OTEL_PYTHON_*_PROVIDER`, as its getters do.

    The getters load them on their first call; the globals read per request
    are only set then. Called once when a layer is built.
    """
    if OTEL_PYTHON_TRACER_PROVIDER in os.environ:
        trace_api.get_tracer_provider()
    if OTEL_PYTHON_METER_PROVIDER in os.environ:
        metrics_api.get_meter_provider()


def is_noop_tracer_provider(provider: Any) -> bool:
    """Whether spans from `provider` can never be recorded (the API's no-op, a disabled SDK)."""
    if provider is None or isinstance(provider, NoOpTracerProvider | ProxyTracerProvider):
        return True
    # An SDK with OTEL_SDK_DISABLED=true hands out the API's no-op tracer.
    return isinstance(provider.get_tracer("apiguard"), NoOpTracer)


def is_noop_meter_provider(provider: Any) -> bool:
    """Whether measurements through `provider` go nowhere (the API's no-op, a disabled SDK)."""
    if (
        provider is None
        or isinstance(provider, NoOpMeterProvider)
        or _is_proxy_meter_provider(provider)
    ):
        return True
    return type(provider.get_meter("apiguard")).__name__ == "NoOpMeter"


def is_noop_proxy(provider: object) -> bool:
    """Whether `provider` is the API's proxy, which follows the global provider."""
    return isinstance(provider, ProxyTracerProvider) or (
        type(provider).__name__ == "_ProxyMeterProvider"
    )


class Live:
    """What the current providers give: a tracer and instruments, or nothing."""

    __slots__ = ("instruments", "meter_provider", "on", "tracer", "tracer_provider")

    def __init__(
        self,
        tracer_provider: object,
        meter_provider: object,
        tracer: Tracer | None,
        instruments: Instruments | None,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.tracer = tracer
        self.instruments = instruments
        self.on = tracer is not None or instruments is not None
