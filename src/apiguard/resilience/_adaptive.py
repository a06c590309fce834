"""An adaptive concurrency limit: a latency gradient, as Envoy's adaptive concurrency filter.

Why a gradient (delay-based) and not AIMD (loss-based): a server sees its
own latency rise as soon as requests queue inside it, long before it sees
losses (timeouts, errors); AIMD waits for those, so it keeps the queue full
until something fails. Netflix's concurrency-limits recommends its
delay-based limits (Gradient2, Vegas) for servers and AIMD for clients, and
Envoy's adaptive concurrency filter is a gradient too. This one is Envoy's:

- the **minimum RTT** (the latency with no queue) is measured with the limit
  held at `min_limit`: the median of `min_rtt_samples` requests, at start
  and again every `min_rtt_interval` seconds (jittered), since a deploy can
  make the app slower or faster for good; between two measurements a lower
  interval median lowers it;
- every `interval` seconds, the median latency of the requests that ended
  in it (the **sample RTT**) gives the gradient
  `min_rtt * (1 + tolerance) / sample_rtt` (clamped to [0.5, 2]), and
  `limit = limit * gradient + headroom`, within `[min_limit, max_limit]`;
- the limit does not grow while fewer than half of it were in flight (the
  app, not the limit, set the latency then: Gradient2's guard).

Unlike Envoy's `+ √limit`, the headroom is one request: on an app of 4
workers offered 4 times its capacity (`benchmarks/shedding.py`), `√limit`
settled at 7 with a median latency 1.7 times the unloaded one, one request
at 5 and 1.3 times, the same throughput; Gradient2 adds a small constant
too.
Gradient2's own minimum (a long-term average RTT instead of a measured
minimum) drifts upward under sustained overload, which is why the
measured minimum is kept.
"""

from __future__ import annotations

import random
from typing import Final

from apiguard._clock import clock
from apiguard.layer import Options, checked
from apiguard.resilience._pools import Pool

__all__ = ["AdaptiveLimit", "Gradient"]

#: Samples kept per interval at most (a median of more says nothing new).
_MAX_SAMPLES: Final = 512
#: An interval's median needs at least this many samples.
_MIN_SAMPLES: Final = 5
#: A measurement of the minimum RTT ends after this long with what it has.
_MEASURE_FOR: Final = 2.0


class AdaptiveLimit:
    """The settings of an adaptive concurrency limit (see the load-shedding guide).

    Args:
        min_limit: The lowest limit, and the one held while the minimum RTT
            is measured (Envoy's `min_concurrency`, 3; 4 here).
        max_limit: The highest limit; `None`: the layer's `max_in_flight`.
        tolerance: How far above the minimum RTT the latency may rise
            before the limit falls (0.1: 10 %).
        interval: Seconds between two updates of the limit (Envoy: 0.1).
        min_rtt_interval: Seconds between two measurements of the minimum
            RTT (Envoy: 60), jittered by up to 15 %.
        min_rtt_samples: Requests a measurement takes the median of (Envoy: 50).

    Raises:
        ConfigError: an option is out of range.

    Examples:
        >>> AdaptiveLimit(min_limit=8, tolerance=0.25).tolerance
        0.25
    """

    @checked("AdaptiveLimit")
    def __init__(
        self,
        *,
        min_limit: int = 4,
        max_limit: int | None = None,
        tolerance: float = 0.1,
        interval: float = 0.1,
        min_rtt_interval: float = 60.0,
        min_rtt_samples: int = 50,
    ) -> None:
        options = Options("AdaptiveLimit")
        self.min_limit = options.integer("min_limit", min_limit, low=1, high=1_000_000)
        self.max_limit = None
        if max_limit is not None:
            self.max_limit = options.integer("max_limit", max_limit, low=min_limit, high=1_000_000)
        if isinstance(tolerance, bool) or not isinstance(tolerance, int | float):
            options.fail("tolerance", tolerance, "is not a share from 0 to 10")
        if not 0 <= tolerance <= 10:
            options.fail("tolerance", tolerance, "is not a share from 0 to 10")
        self.tolerance = float(tolerance)
        self.interval = options.seconds("interval", interval, low=0.001, high=60.0)
        self.min_rtt_interval = options.seconds(
            "min_rtt_interval", min_rtt_interval, low=1.0, high=86_400.0
        )
        self.min_rtt_samples = options.integer(
            "min_rtt_samples", min_rtt_samples, low=1, high=_MAX_SAMPLES
        )

    def __repr__(self) -> str:
        return (
            f"AdaptiveLimit(min_limit={self.min_limit}, max_limit={self.max_limit}, "
            f"tolerance={self.tolerance:g}, interval={self.interval:g})"
        )


class Gradient:
    """The running estimate of one pool's limit; fed each admitted request's latency."""

    __slots__ = (
        "_due",
        "_measure_at",
        "_measuring",
        "_resume",
        "_samples",
        "_since",
        "limit",
        "max_limit",
        "min_rtt",
        "pool",
        "settings",
    )

    def __init__(self, settings: AdaptiveLimit, pool: Pool, max_limit: int) -> None:
        self.settings = settings
        self.pool = pool
        self.max_limit = max(max_limit, settings.min_limit)
        self.limit = float(settings.min_limit)
        self.min_rtt: float | None = None
        self._samples: list[float] = []
        now = clock.monotonic()
        self._measuring = True
        self._since = now
        self._resume = float(settings.min_limit)
        self._due = now + settings.interval
        self._measure_at = 0.0
        pool.limit = settings.min_limit

    def sample(self, seconds: float, admitted: float, now: float) -> None:
        """A request admitted at `admitted` took `seconds` in the app."""
        if admitted < self._since:
            return  # admitted under another limit: its latency says nothing of this one
        samples = self._samples
        if len(samples) < _MAX_SAMPLES:
            samples.append(seconds)
        settings = self.settings
        if self._measuring:
            if len(samples) >= settings.min_rtt_samples or (
                now - self._since >= _MEASURE_FOR and samples
            ):
                self.min_rtt = _median(samples)
                self._measuring = False
                self._measure_at = now + settings.min_rtt_interval * (
                    1.0 + 0.15 * random.random()  # noqa: S311 - jitter, not a secret
                )
                self._set(self._resume, now)
            return
        if now >= self._due and len(samples) >= _MIN_SAMPLES:
            self._update(now)

    def _update(self, now: float) -> None:
        settings = self.settings
        sample = _median(self._samples)
        min_rtt = self.min_rtt
        if min_rtt is None or sample < min_rtt:
            min_rtt = self.min_rtt = sample
        limit = self.limit
        pool = self.pool
        gradient = min(max(min_rtt * (1.0 + settings.tolerance) / max(sample, 1e-9), 0.5), 2.0)
        # Below half the limit in flight, the app set the latency, not the limit: no growth.
        grows = not (gradient >= 1.0 and pool.peak < limit / 2)
        new = limit * gradient + 1.0 if grows else limit
        new = min(max(new, float(settings.min_limit)), float(self.max_limit))
        pool.peak = pool.in_flight
        if now >= self._measure_at:
            # Measure again: only requests admitted under the low limit count.
            self._resume = new
            self._measuring = True
            self._since = now
            self._set(float(settings.min_limit), now)
            return
        self._set(new, now)

    def _set(self, limit: float, now: float) -> None:
        self.limit = limit
        self._samples = []
        self._due = now + self.settings.interval
        pool = self.pool
        pool.limit = max(int(limit), 1)
        if pool.queued:
            pool.fill()


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2
