"""`apiguard.testing.FrozenClock`: frozen inside, and the clock as it was on leaving."""

from __future__ import annotations

import time

from apiguard._clock import clock
from apiguard.testing import FrozenClock


def test_both_clocks_stand_still_until_advanced() -> None:
    with FrozenClock(wall=1_000.0, monotonic=50.0) as frozen:
        assert (clock.time(), clock.monotonic()) == (1_000.0, 50.0)
        frozen.advance(2.5)
        assert (clock.time(), clock.monotonic()) == (1_002.5, 52.5)


def test_nested_frozen_clocks_unwind_in_order() -> None:
    before = (clock.time, clock.monotonic)
    with FrozenClock(wall=1_000.0) as outer:
        with FrozenClock(wall=2_000.0):
            assert clock.time() == 2_000.0
        assert clock.time() == 1_000.0  # the outer clock again, not the real one
        outer.advance(1.0)
        assert clock.time() == 1_001.0
    assert (clock.time, clock.monotonic) == before  # the real clocks, in a plain test


def test_leaving_restores_a_clock_set_before() -> None:
    """A wall clock a test pinned survives a FrozenClock block inside it."""

    def pinned() -> float:
        return 1_700_000_000.0

    clock.time = pinned  # reset between tests by reset_state()
    with FrozenClock(wall=5.0):
        assert clock.time() == 5.0
    assert clock.time is pinned
    assert clock.monotonic is time.monotonic
