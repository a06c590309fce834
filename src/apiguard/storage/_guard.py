"""A store of its own breaker: stop asking a store that keeps failing.

With fail-open, a store that hangs (a frozen Redis, a black-holed route)
would otherwise cost every request the full store timeout. After
`threshold` consecutive failures the breaker opens and calls fail at once;
after a short interval one call probes the store again (half-open), and the
interval doubles each time the probe fails, up to a cap. One success closes
it. The outage is logged once when it starts and once when it ends.
"""

from __future__ import annotations

import logging
from typing import Final, Literal

from apiguard._clock import clock
from apiguard.errors import redact

__all__ = ["StoreBreaker", "reason"]

logger = logging.getLogger("apiguard.storage")

BreakerState = Literal["closed", "open", "half-open"]

#: Consecutive failures that open the breaker (Kong's Redis client has no
#: breaker; resilience4j's default needs 100 calls, too many when each
#: failure may cost a timeout).
THRESHOLD: Final = 3
#: First open interval, in seconds, doubled after each failed probe up to CAP.
BASE_INTERVAL: Final = 0.5
CAP: Final = 30.0


class StoreBreaker:
    """Consecutive-failure breaker with a growing open interval, per store and process.

    Args:
        store: How the store is named in the logs (password redacted).
        threshold: Consecutive failures that open the breaker.
        base_interval: Seconds the breaker stays open the first time.
        cap: The longest open interval, in seconds.
        probe_timeout: Seconds after which a probe that never reported is
            taken as failed (a cancelled request), so that the breaker
            cannot stay half-open for ever.
    """

    __slots__ = (
        "_base",
        "_cap",
        "_interval",
        "_outage_started",
        "_probe_started",
        "_reopen_at",
        "_threshold",
        "failures",
        "probe_timeout",
        "state",
        "store",
        "total_failures",
    )

    def __init__(
        self,
        store: str,
        *,
        threshold: int = THRESHOLD,
        base_interval: float = BASE_INTERVAL,
        cap: float = CAP,
        probe_timeout: float = 1.0,
    ) -> None:
        self.store = store
        self._threshold = threshold
        self._base = base_interval
        self._cap = cap
        self.probe_timeout = probe_timeout
        self._interval = base_interval
        self.state: BreakerState = "closed"
        self.failures = 0
        self.total_failures = 0
        self._reopen_at = 0.0
        self._probe_started = 0.0
        self._outage_started = 0.0

    def allow(self) -> bool:
        """Whether to call the store now (closed, or the one half-open probe)."""
        if self.state == "closed":
            return True
        now = clock.monotonic()
        if self.state == "open":
            if now < self._reopen_at:
                return False
        elif now < self._probe_started + self.probe_timeout:  # half-open, probe in flight
            return False
        self.state = "half-open"
        self._probe_started = now
        return True

    def retry_after(self) -> float:
        """Seconds until the breaker lets a call through again (0 when closed)."""
        if self.state == "closed":
            return 0.0
        return max(self._reopen_at - clock.monotonic(), 0.0)

    def success(self) -> None:
        """A call succeeded: close the breaker, and log the end of an outage."""
        if self.failures:
            logger.warning(
                "apiguard: store %s is back after %d failed calls (%.1f s)",
                self.store,
                self.failures,
                clock.monotonic() - self._outage_started,
            )
        self.state = "closed"
        self.failures = 0
        self._interval = self._base

    def retire(self, why: str) -> None:
        """What failed is replaced (a new primary): close the breaker, and log the outage's end."""
        if self.failures:
            logger.warning(
                "apiguard: store %s: outage over after %d failed calls (%.1f s): %s",
                self.store,
                self.failures,
                clock.monotonic() - self._outage_started,
                why,
            )
        self.state = "closed"
        self.failures = 0
        self._interval = self._base

    def failure(self, error: BaseException) -> None:
        """A call failed or timed out: count it, open the breaker when due."""
        now = clock.monotonic()
        self.failures += 1
        self.total_failures += 1
        if self.failures == 1:
            self._outage_started = now
            # Once per outage, not per request.
            logger.warning(
                "apiguard: store %s failed (%s); following the fail mode until it recovers",
                self.store,
                reason(error),
            )
        if self.state == "half-open":
            self._interval = min(self._interval * 2, self._cap)
            self._open(now)
        elif self.state == "closed" and self.failures >= self._threshold:
            self._open(now)

    def _open(self, now: float) -> None:
        self.state = "open"
        self._reopen_at = now + self._interval


def reason(error: BaseException) -> str:
    """`Type: message` of an exception, secrets redacted: what a log line or an error says.

    Examples:
        >>> reason(ConnectionError("AUTH failed for redis://:hunter2@cache"))
        'ConnectionError: AUTH failed for redis://:***@cache'
        >>> reason(TimeoutError())
        'TimeoutError'
    """
    text = str(error)
    if not text:
        return type(error).__name__
    return f"{type(error).__name__}: {redact(text)[1:-1]}"
