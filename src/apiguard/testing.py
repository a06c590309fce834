"""Helpers for testing apps that use apiguard: a frozen clock, state resets."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from apiguard._clock import clock

__all__ = ["FrozenClock", "reset_state"]


class FrozenClock:
    """A clock that stands still until told to move, for every apiguard layer.

    Use it as a context manager; inside, every layer reads this clock's
    monotonic and wall time, which move only with [`advance`][apiguard.testing.FrozenClock.advance].

    Args:
        wall: The wall time to start at, in seconds since the epoch.
        monotonic: The monotonic time to start at.

    Examples:
        >>> with FrozenClock(wall=1_700_000_000.0) as frozen:
        ...     frozen.advance(61)
        ...     frozen.time()
        1700000061.0
    """

    def __init__(self, *, wall: float = 1_700_000_000.0, monotonic: float = 10_000.0) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._saved: tuple[object, object] | None = None

    def time(self) -> float:
        """The frozen wall time."""
        return self._wall

    def monotonic(self) -> float:
        """The frozen monotonic time."""
        return self._monotonic

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by `seconds`."""
        if seconds < 0:
            msg = f"a clock cannot go back: advance({seconds!r})"
            raise ValueError(msg)
        self._wall += seconds
        self._monotonic += seconds

    def __enter__(self) -> Self:
        self._saved = (clock.monotonic, clock.time)
        clock.monotonic = self.monotonic
        clock.time = self.time
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        clock.reset()


def reset_state() -> None:
    """Forget process-wide state between tests: the clock and the route caches."""
    from apiguard import routing

    clock.reset()
    routing._resolvers.clear()
    routing._app_resolvers.clear()
    routing._last_app = (None, None)
