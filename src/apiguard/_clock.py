"""The one clock every layer reads, so that tests can freeze and advance it."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Clock", "clock"]


class Clock:
    """Monotonic and wall time, as two swappable callables.

    Layers call `clock.monotonic()` for durations and deadlines and
    `clock.time()` for wall time (token expiry, rate-limit windows). The
    attributes are plain callables, so a read costs one attribute lookup and
    one C call; [`apiguard.testing.FrozenClock`][] swaps them for frozen ones.
    """

    __slots__ = ("monotonic", "time")

    def __init__(self) -> None:
        self.monotonic: Callable[[], float] = time.monotonic
        self.time: Callable[[], float] = time.time

    def reset(self) -> None:
        """Go back to the real clocks."""
        self.monotonic = time.monotonic
        self.time = time.time


clock = Clock()
