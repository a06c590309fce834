"""`RetryBudget`: retries as a share of recent requests, so that an outage is not multiplied.

Two models are in use (STANDARDS.md): Envoy's `retry_budget` caps the
retries *in flight* at a share of the requests in flight (20 %, never fewer
than 3); Finagle's `RetryBudget` and tower's `TpsBudget` cap the retries
*made over a time window* at a share of the requests made in it, plus a
small reserve per second. apiguard takes the second: it bounds the load a
failing app receives, `(1 + ratio) x` the traffic plus the reserve, whatever
its latency. A concurrency cap does not: the usual outage answers fast (a
dependency refuses connections, the app answers 503 at once), so few
retries are in flight at any moment while many are made each second.
"""

from __future__ import annotations

import math
from typing import Final

from apiguard._clock import clock
from apiguard.layer import Options, checked

__all__ = ["RetryBudget"]

#: Buckets the window is counted in: deposits leave it a tenth at a time.
_SLOTS: Final = 10


class RetryBudget:
    """Retries allowed: `ratio` of the requests of the last `window` seconds, plus a reserve.

    Every request a retry layer could retry deposits one; every retry
    withdraws one. A retry is allowed while
    `min_per_second x window + ratio x requests - retries >= 1`, all counted
    over the last `window` seconds (in tenths of it). O(1) per call; per
    process, and shared by the layers given the same instance.

    Args:
        ratio: The share of requests that may be retried (Finagle's and
            tower's default, 0.2: at most 1.2x the load in an outage).
        min_per_second: Retries allowed per second whatever the traffic, so
            that a quiet service can still retry. Finagle's default is 10 a
            second, made for a client calling a fleet; one service's own
            inbound traffic gets 1, so that a quiet service in an outage
            does not see its load doubled by retries.
        window: Seconds requests and retries are counted for (10, as
            Finagle and tower).

    Raises:
        ConfigError: an option is out of range.

    Examples:
        >>> budget = RetryBudget(ratio=0.1, min_per_second=0.5, window=10)
        >>> budget.remaining
        5
        >>> budget.withdraw(), budget.remaining
        (True, 4)
    """

    __slots__ = (
        "_deposited",
        "_deposits",
        "_ratio",
        "_reserve",
        "_slot",
        "_width",
        "_withdrawals",
        "_withdrawn",
        "min_per_second",
        "window",
    )

    @checked("RetryBudget")
    def __init__(
        self, *, ratio: float = 0.2, min_per_second: float = 1.0, window: float = 10.0
    ) -> None:
        options = Options("RetryBudget")
        self._ratio = options.seconds("ratio", ratio, high=10.0, zero=True)
        self.min_per_second = options.seconds(
            "min_per_second", min_per_second, high=1_000_000.0, zero=True
        )
        self.window = options.seconds("window", window, low=0.1, high=3600.0, zero=True)
        self._reserve = self.min_per_second * self.window
        self._width = self.window / _SLOTS
        self._deposits = [0] * _SLOTS
        self._withdrawals = [0] * _SLOTS
        self._deposited = 0
        self._withdrawn = 0
        self._slot: int | None = None

    @property
    def ratio(self) -> float:
        """The share of requests that may be retried."""
        return self._ratio

    def _index(self) -> int:
        """The current bucket, after dropping the buckets that left the window."""
        slot = int(clock.monotonic() / self._width)
        current = self._slot
        if slot != current:
            deposits, withdrawals = self._deposits, self._withdrawals
            if current is None or not 0 < slot - current < _SLOTS:
                deposits[:] = [0] * _SLOTS
                withdrawals[:] = [0] * _SLOTS
                self._deposited = self._withdrawn = 0
            else:
                for step in range(current + 1, slot + 1):
                    index = step % _SLOTS
                    self._deposited -= deposits[index]
                    self._withdrawn -= withdrawals[index]
                    deposits[index] = withdrawals[index] = 0
            self._slot = slot
        return slot % _SLOTS

    def deposit(self) -> None:
        """Count a request that could be retried."""
        # The hot path: within the current bucket, no call to `_index`.
        slot = int(clock.monotonic() / self._width)
        index = slot % _SLOTS if slot == self._slot else self._index()
        self._deposits[index] += 1
        self._deposited += 1

    def _balance(self) -> float:
        return self._reserve + self._ratio * self._deposited - self._withdrawn

    def withdraw(self) -> bool:
        """Take one retry from the budget; `False` (and nothing taken) when it is spent."""
        index = self._index()
        if self._balance() < 1.0:
            return False
        self._withdrawals[index] += 1
        self._withdrawn += 1
        return True

    @property
    def remaining(self) -> int:
        """Retries the budget would allow now."""
        self._index()
        return max(math.floor(self._balance()), 0)

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self._ratio:g}, min_per_second={self.min_per_second:g}, "
            f"window={self.window:g})"
        )
