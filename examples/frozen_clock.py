from apiguard.testing import FrozenClock


def test_a_minute_passes_at_once() -> None:
    with FrozenClock(wall=1_700_000_000.0) as clock:
        # ... a request that uses up a per-minute limit ...
        clock.advance(60)  # no sleep: every layer now sees a minute later
        assert clock.time() == 1_700_000_060.0
