"""Sliding windows of call outcomes for the breaker: O(1) a call, as resilience4j counts.

- [`CountWindow`][apiguard._windows.CountWindow]: the last `size` calls, a
  ring of outcome codes with running totals (resilience4j's count-based
  window);
- [`TimeWindow`][apiguard._windows.TimeWindow]: the calls of the last
  `size` seconds, in one-second buckets with running totals, old buckets
  dropped as time moves on (resilience4j's time-based window, its "epoch
  buckets").

Each records whether a call failed and whether it was slow, and keeps the
totals a breaker reads: `calls`, `failures`, `slow`.
"""

from __future__ import annotations

__all__ = ["CountWindow", "TimeWindow", "Window"]

_FAILED = 1
_SLOW = 2
_FILLED = 4


class CountWindow:
    """The outcomes of the last `size` calls: a ring with running totals.

    Examples:
        >>> window = CountWindow(3)
        >>> for failed in (True, True, False, False):
        ...     window.record(failed, False, 0.0)
        >>> window.calls, window.failures
        (3, 1)
    """

    __slots__ = ("_next", "_ring", "calls", "failures", "size", "slow")

    def __init__(self, size: int) -> None:
        self.size = size
        self._ring = bytearray(size)
        self._next = 0
        self.calls = 0
        self.failures = 0
        self.slow = 0

    def record(self, failed: bool, slow: bool, now: float) -> None:
        """Count one call, pushing out the oldest once the ring is full."""
        ring = self._ring
        index = self._next
        old = ring[index]
        if old:
            self.calls -= 1
            self.failures -= old & _FAILED
            self.slow -= (old & _SLOW) >> 1
        ring[index] = _FILLED | (_FAILED if failed else 0) | (_SLOW if slow else 0)
        self._next = index + 1 if index + 1 < self.size else 0
        self.calls += 1
        if failed:
            self.failures += 1
        if slow:
            self.slow += 1

    def advance(self, now: float) -> None:
        """Nothing to forget: a count window has no notion of time."""

    def reset(self) -> None:
        """Forget every call."""
        self._ring[:] = bytes(self.size)
        self._next = self.calls = self.failures = self.slow = 0


class TimeWindow:
    """The outcomes of the calls of the last `size` seconds, in one-second buckets.

    Recording moves the window to the current second first: the buckets of
    the seconds that left it are taken out of the totals (at most `size` of
    them, and all at once after a longer pause).

    Examples:
        >>> window = TimeWindow(10)
        >>> window.record(True, False, 100.2)
        >>> window.record(False, False, 105.0)
        >>> window.calls, window.failures
        (2, 1)
        >>> window.advance(110.5)  # the second 100 has left the window
        >>> window.calls, window.failures
        (1, 0)
    """

    __slots__ = ("_calls", "_epoch", "_failures", "_slow", "calls", "failures", "size", "slow")

    def __init__(self, size: int) -> None:
        self.size = size
        self._calls = [0] * size
        self._failures = [0] * size
        self._slow = [0] * size
        self._epoch: int | None = None
        self.calls = 0
        self.failures = 0
        self.slow = 0

    def advance(self, now: float) -> None:
        """Move the window to the second of `now`, dropping the seconds that left it."""
        second = int(now)
        epoch = self._epoch
        if second == epoch:
            return
        size = self.size
        if epoch is None or second - epoch >= size or second < epoch:
            self.reset()
        else:
            calls, failures, slow = self._calls, self._failures, self._slow
            for step in range(epoch + 1, second + 1):
                index = step % size
                self.calls -= calls[index]
                self.failures -= failures[index]
                self.slow -= slow[index]
                calls[index] = failures[index] = slow[index] = 0
        self._epoch = second

    def record(self, failed: bool, slow: bool, now: float) -> None:
        """Count one call in the bucket of its second."""
        if int(now) != self._epoch:
            self.advance(now)
        index = self._epoch % self.size  # type: ignore[operator]  # set by advance
        self._calls[index] += 1
        self.calls += 1
        if failed:
            self._failures[index] += 1
            self.failures += 1
        if slow:
            self._slow[index] += 1
            self.slow += 1

    def reset(self) -> None:
        """Forget every call."""
        size = self.size
        self._calls = [0] * size
        self._failures = [0] * size
        self._slow = [0] * size
        self._epoch = None
        self.calls = self.failures = self.slow = 0


Window = CountWindow | TimeWindow
