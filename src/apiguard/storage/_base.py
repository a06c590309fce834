"""What every rate store answers: quotas in, a verdict with the figures for the headers out."""

from __future__ import annotations

import math
from typing import Final, Literal, NamedTuple, TypeAlias

__all__ = [
    "FIXED_WINDOW",
    "MOVING_WINDOW",
    "SLIDING_WINDOW_COUNTER",
    "STRATEGIES",
    "Quota",
    "Strategy",
    "Verdict",
    "sliding_wait",
]

#: The strategies `limits` offers, by the names `limits` gives them.
Strategy: TypeAlias = Literal["fixed-window", "moving-window", "sliding-window-counter"]
FIXED_WINDOW: Final = "fixed-window"
MOVING_WINDOW: Final = "moving-window"
SLIDING_WINDOW_COUNTER: Final = "sliding-window-counter"
STRATEGIES: Final = (FIXED_WINDOW, MOVING_WINDOW, SLIDING_WINDOW_COUNTER)


class Quota(NamedTuple):
    """One limit: `amount` units per `window` seconds, counted under `uid`.

    `uid` names the counter in the store: two quotas with one `uid` share
    their counters, so a limiter gives each of its policies' quotas its own.
    """

    uid: str
    amount: int
    window: int


class Verdict(NamedTuple):
    """A store's answer for one request against the quotas of its policy.

    Attributes:
        admitted: Whether every quota admitted the request. When one refuses,
            none of them counts it.
        used: Per quota, the units used in its window, this request included
            when admitted (for the sliding window counter, the weighted count,
            rounded down as the strategy rounds it).
        reset: Per quota, seconds until the quota gives units back: the end of
            a fixed window, the expiry of the oldest hit in a moving window,
            the moment a sliding window's weighted count drops by one.
        retry_after: Seconds until the refused request would be admitted by
            every quota that refused it; `0.0` when admitted.
        violated: The indices of the quotas that refused the request.
    """

    admitted: bool
    used: tuple[int, ...]
    reset: tuple[float, ...]
    retry_after: float = 0.0
    violated: tuple[int, ...] = ()


_EPSILON: Final = 0.001


def sliding_wait(
    previous: int, current: int, window: float, until_end: float, target: float
) -> float:
    """Seconds until a sliding window counter's weighted count is below `target`.

    The weighted count at `now + x` (with `until_end` seconds left in the
    current window) is `previous * (until_end - x) / window + current` while
    the window lasts, then `current * (window - (x - until_end)) / window`
    once the current window has become the previous one.

    The count is below `target` only strictly after the moment the formula
    gives, so a millisecond is added: a client told to wait that long is
    admitted. Returns `math.inf` when the count never gets below `target` (a
    target of zero or less).
    """
    if target <= 0:
        return math.inf
    if previous * until_end / window + current < target:
        return 0.0
    if current < target:
        # previous > 0 here: solve previous * (until_end - x) / window + current < target.
        return until_end - window * (target - current) / previous + _EPSILON
    # Within the next window: current * (window - y) / window < target, y = x - until_end.
    return until_end + window * (1.0 - target / current) + _EPSILON
