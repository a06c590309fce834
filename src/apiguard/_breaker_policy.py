"""A breaker's policy: when it opens, for how long, and how it closes again.

Kept apart from the state machine ([`apiguard.breaker`][]), which
re-exports it: the policy is data checked once at start-up, the machine
runs on every call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, TypeAlias

from apiguard._windows import CountWindow, TimeWindow, Window
from apiguard.layer import Options

__all__ = ["BreakerPolicy", "WindowKind", "check_policy"]


WindowKind: TypeAlias = Literal["count", "time"]


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a breaker opens, for how long, and how it closes again.

    The defaults are the layer's (see the circuit breaker guide for why,
    against resilience4j's and Polly's): a 30-second window, at least 20
    calls in it, half of them failed.

    Attributes:
        window: `"time"` (the calls of the last `window_size` seconds),
            `"count"` (the last `window_size` calls), or `None`: no window,
            only `consecutive_failures` opens the breaker.
        window_size: Seconds (time window) or calls (count window).
        minimum_calls: Calls the window must hold before its rates count.
        failure_rate: The share of failed calls that opens the breaker (0-1].
        slow_call_rate: The share of slow calls that opens it (0-1].
        slow_call_seconds: A call taking at least this long is slow; `None`:
            no call is.
        consecutive_failures: Failures in a row that open the breaker,
            whatever the window says; `None`: none do.
        open_seconds: How long the breaker stays open the first time.
        open_growth: What the open time is multiplied by each time a probe
            fails (1: it stays the same).
        max_open_seconds: The longest open time.
        half_open_calls: Probes let through half-open; they must all
            succeed to close the breaker.
        probe_timeout: Seconds after which probes that never reported
            (a request that hangs, a task cancelled) no longer hold their
            places: new probes go through.
    """

    window: WindowKind | None = "time"
    window_size: int = 30
    minimum_calls: int = 20
    failure_rate: float = 0.5
    slow_call_rate: float = 1.0
    slow_call_seconds: float | None = 60.0
    consecutive_failures: int | None = None
    open_seconds: float = 5.0
    open_growth: float = 1.0
    max_open_seconds: float = 60.0
    half_open_calls: int = 3
    probe_timeout: float = 30.0

    def __post_init__(self) -> None:
        _check(Options("BreakerPolicy"), self)

    def new_window(self) -> Window | None:
        """An empty window of this policy, or `None`."""
        if self.window == "count":
            return CountWindow(self.window_size)
        if self.window == "time":
            return TimeWindow(self.window_size)
        return None

    def summary(self) -> dict[str, str | int | float | None]:
        """The policy as JSON-ready values, for `describe` and the policy report."""
        summary: dict[str, str | int | float | None] = {}
        if self.window is not None:
            unit = "s" if self.window == "time" else " calls"
            summary["window"] = f"{self.window_size}{unit}"
            summary["minimum_calls"] = self.minimum_calls
            summary["failure_rate"] = self.failure_rate
            if self.slow_call_seconds is not None:
                summary["slow_call_rate"] = self.slow_call_rate
                summary["slow_call_seconds"] = self.slow_call_seconds
        if self.consecutive_failures is not None:
            summary["consecutive_failures"] = self.consecutive_failures
        summary["open_seconds"] = self.open_seconds
        if self.open_growth != 1.0:
            summary["open_growth"] = self.open_growth
            summary["max_open_seconds"] = self.max_open_seconds
        summary["half_open_calls"] = self.half_open_calls
        return summary


def _check(options: Options, policy: BreakerPolicy) -> None:
    """Check every field of `policy`, naming the option as `options` names its owner."""
    if policy.window is not None:
        options.choice("window", policy.window, ("count", "time"))
        options.integer("window_size", policy.window_size, low=1, high=100_000)
        options.integer("minimum_calls", policy.minimum_calls, low=1, high=1_000_000)
        if policy.window == "count" and policy.minimum_calls > policy.window_size:
            options.fail(
                "minimum_calls",
                policy.minimum_calls,
                f"is more than a count window of {policy.window_size} calls holds",
            )
    _number(options, "failure_rate", policy.failure_rate, 0.0, 1.0, "a share in (0, 1]")
    _number(options, "slow_call_rate", policy.slow_call_rate, 0.0, 1.0, "a share in (0, 1]")
    if policy.slow_call_seconds is not None:
        options.seconds("slow_call_seconds", policy.slow_call_seconds, high=3600.0)
    if policy.consecutive_failures is not None:
        options.integer("consecutive_failures", policy.consecutive_failures, low=1, high=10_000)
    elif policy.window is None:
        raise options.invalid(
            "window", "a breaker with neither a window nor consecutive_failures never opens"
        )
    options.seconds("open_seconds", policy.open_seconds, high=86_400.0)
    if not (_is_number(policy.open_growth) and 1.0 <= policy.open_growth <= 10.0):
        options.fail("open_growth", policy.open_growth, "is not a factor from 1 to 10")
    options.seconds("max_open_seconds", policy.max_open_seconds, high=86_400.0)
    if policy.max_open_seconds < policy.open_seconds:
        options.fail(
            "max_open_seconds",
            policy.max_open_seconds,
            f"is less than open_seconds ({policy.open_seconds:g})",
        )
    options.integer("half_open_calls", policy.half_open_calls, low=1, high=1000)
    options.seconds("probe_timeout", policy.probe_timeout, high=86_400.0)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number(
    options: Options, option: str, value: object, low: float, high: float, what: str
) -> None:
    """A number in `(low, high]`."""
    if not (_is_number(value) and low < value <= high):  # type: ignore[operator]
        options.fail(option, value, f"is not {what}")


def check_policy(options: Options, **values: object) -> BreakerPolicy:
    """A [`BreakerPolicy`][apiguard.breaker.BreakerPolicy] of `values`, errors named by `options`.

    For a layer whose options are the policy's fields: its messages read
    `CircuitBreakerMiddleware[name='b']: failure_rate 2 is not ...`.
    """
    candidate = object.__new__(BreakerPolicy)
    defaults = BreakerPolicy()
    for field in BreakerPolicy.__dataclass_fields__:
        object.__setattr__(candidate, field, values.get(field, getattr(defaults, field)))
    _check(options, candidate)
    return BreakerPolicy(**{field: getattr(candidate, field) for field in values})
