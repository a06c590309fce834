"""A store's breaker: stop asking a store that keeps failing.

With fail-open, a store that hangs (a frozen Redis, a black-holed route)
would otherwise cost every request the full store timeout. The store's
breaker is the core's breaker state machine ([`apiguard.breaker.Breaker`][])
in the configuration a store calls for: after `threshold` consecutive
failures it opens and calls fail at once; after a short interval one call
probes the store again (half-open), and the interval doubles each time the
probe fails, up to a cap. One success closes it. The outage is logged once
when it starts and once when it ends (rather than at each transition: a
long outage would otherwise log two lines a probe), and every transition
reaches the breaker's listeners (the tracing layer counts them).
"""

from __future__ import annotations

import logging
from typing import Final

from apiguard._clock import clock
from apiguard.breaker import OPEN, Breaker, BreakerPolicy
from apiguard.errors import redact

__all__ = ["StoreBreaker", "reason"]

logger = logging.getLogger("apiguard.storage")

#: Consecutive failures that open the breaker (Kong's Redis client has no
#: breaker; resilience4j's default needs 100 calls, too many when each
#: failure may cost a timeout).
THRESHOLD: Final = 3
#: First open interval, in seconds, doubled after each failed probe up to CAP.
BASE_INTERVAL: Final = 0.5
CAP: Final = 30.0


class StoreBreaker(Breaker):
    """Consecutive-failure breaker with a growing open interval, per store (or node) and process.

    Args:
        store: The store's URI, password redacted: the breaker's name.
        threshold: Consecutive failures that open the breaker.
        base_interval: Seconds the breaker stays open the first time.
        cap: The longest open interval, in seconds.
        probe_timeout: Seconds after which a probe that never reported is
            taken as lost (a cancelled request), so that the breaker
            cannot stay half-open for ever.
        node: The node it guards, where a store has a breaker per node (a
            Cluster primary, `host:port`).
    """

    __slots__ = ("_outage_started", "store")

    def __init__(
        self,
        store: str,
        *,
        threshold: int = THRESHOLD,
        base_interval: float = BASE_INTERVAL,
        cap: float = CAP,
        probe_timeout: float = 1.0,
        node: str | None = None,
    ) -> None:
        policy = BreakerPolicy(
            window=None,
            consecutive_failures=threshold,
            open_seconds=base_interval,
            open_growth=2.0,
            max_open_seconds=max(cap, base_interval),
            half_open_calls=1,
            probe_timeout=probe_timeout,
        )
        # The display is quoted as a repr (`'redis://:***@cache'`): the
        # transitions' name (a metric label) is the URI itself.
        bare = store[1:-1] if len(store) > 1 and store[0] == store[-1] == "'" else store
        super().__init__(policy, layer="store", name=bare, key=node, log=False)
        #: How the store (and node) is named in the log lines.
        self.store = store if node is None else f"{store} node {node}"
        self._outage_started = 0.0

    @property
    def probe_timeout(self) -> float:
        """Seconds after which a probe that never reported no longer holds its place."""
        return self.policy.probe_timeout

    def success(
        self, seconds: float = 0.0, generation: int | None = None, now: float | None = None
    ) -> None:
        """A call succeeded: close the breaker, and log the end of an outage."""
        if self.failures:
            logger.warning(
                "apiguard: store %s is back after %d failed calls (%.1f s)",
                self.store,
                self.failures,
                clock.monotonic() - self._outage_started,
            )
        if self.state == OPEN:
            self.reset("call-succeeded")  # a call let through before it opened: the store answers
        else:
            super().success(seconds, generation, now)

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
        self.reset("retired")

    def failure(
        self,
        error: BaseException | None = None,
        seconds: float = 0.0,
        generation: int | None = None,
    ) -> None:
        """A call failed or timed out: count it, open the breaker when due."""
        if not self.failures:
            self._outage_started = clock.monotonic()
            # Once per outage, not per request.
            logger.warning(
                "apiguard: store %s failed (%s); following the fail mode until it recovers",
                self.store,
                reason(error) if error is not None else "unknown",
            )
        super().failure(error, seconds, generation)


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
