"""The core breaker: every transition on a frozen clock, its log lines, listeners and policy checks.

Its state machine against a model is in `test_breaker_model.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from apiguard import ConfigError
from apiguard._windows import CountWindow, TimeWindow
from apiguard.breaker import Breaker, BreakerPolicy, Transition, check_policy, listen
from apiguard.layer import Options
from apiguard.testing import FrozenClock


@pytest.fixture
def clock() -> Iterator[FrozenClock]:
    with FrozenClock() as frozen:
        yield frozen


def breaker(**options: object) -> tuple[Breaker, list[Transition]]:
    seen: list[Transition] = []
    made = Breaker(
        BreakerPolicy(**options),  # type: ignore[arg-type]
        layer="breaker",
        name="upstream",
        key="GET /x",
        listeners=[seen.append],
    )
    return made, seen


def record(made: Breaker, failed: bool) -> None:
    if failed:
        made.failure()
    else:
        made.success()


def moves(seen: list[Transition]) -> list[tuple[str, str, str]]:
    return [(t.previous, t.state, t.reason) for t in seen]


# --- every transition, on a frozen clock ------------------------------------------------


def test_a_failure_rate_over_the_minimum_of_calls_opens_it(clock: FrozenClock) -> None:
    made, seen = breaker(minimum_calls=4, failure_rate=0.5)
    for failed in (True, False, True):
        assert made.allow()
        record(made, failed)
    assert made.state == "closed"  # 3 calls: under the minimum, whatever their rate
    made.failure()
    assert made.state == "open"
    [opened] = seen
    assert (opened.previous, opened.state, opened.reason) == ("closed", "open", "failure-rate")
    assert (opened.calls, opened.failure_rate, opened.open_seconds) == (4, 0.75, 5.0)


def test_a_rate_under_the_threshold_keeps_it_closed(clock: FrozenClock) -> None:
    made, seen = breaker(minimum_calls=4, failure_rate=0.5)
    for failed in (True, False, False, False, False, True, False, False):
        record(made, failed)
    assert (made.state, seen) == ("closed", [])


def test_slow_calls_open_it_at_their_own_rate(clock: FrozenClock) -> None:
    made, seen = breaker(minimum_calls=2, slow_call_seconds=1.0, slow_call_rate=0.5)
    made.success(0.2)
    assert made.state == "closed"
    made.success(1.5)
    assert moves(seen) == [("closed", "open", "slow-call-rate")]
    assert seen[0].slow_call_rate == 0.5


def test_consecutive_failures_open_it_without_a_window(clock: FrozenClock) -> None:
    made, seen = breaker(window=None, consecutive_failures=3)
    made.failure()
    made.failure()
    made.success()  # a success in between starts the count again
    made.failure()
    made.failure()
    assert made.state == "closed"
    made.failure()
    assert moves(seen) == [("closed", "open", "consecutive-failures")]
    assert seen[0].failures == 3


def test_open_refuses_until_the_next_probe_and_says_when(clock: FrozenClock) -> None:
    made, _ = breaker(window=None, consecutive_failures=1, open_seconds=5.0)
    made.failure()
    assert not made.allow()
    assert made.retry_after() == 5.0
    clock.advance(3.0)
    assert not made.allow()
    assert made.retry_after() == 2.0


def test_open_becomes_half_open_when_its_time_is_up(clock: FrozenClock) -> None:
    made, seen = breaker(window=None, consecutive_failures=1, open_seconds=5.0, half_open_calls=2)
    made.failure()
    clock.advance(5.0)
    assert made.allow()
    assert moves(seen)[-1] == ("open", "half-open", "open-elapsed")
    assert made.allow()  # the second probe
    assert not made.allow()  # no third: probes are bounded
    assert made.retry_after() == 30.0  # until the probes' places are free again


def test_every_probe_succeeding_closes_it(clock: FrozenClock) -> None:
    made, seen = breaker(window=None, consecutive_failures=1, half_open_calls=2)
    made.failure()
    clock.advance(5.0)
    first, second = made.permit(), made.permit()
    made.success(generation=first)
    assert made.state == "half-open"
    made.success(generation=second)
    assert moves(seen)[-1] == ("half-open", "closed", "probes-succeeded")
    assert made.allow()
    assert made.retry_after() == 0.0


def test_a_failed_probe_opens_it_again_for_longer_up_to_the_cap(clock: FrozenClock) -> None:
    made, seen = breaker(
        window=None,
        consecutive_failures=1,
        open_seconds=1.0,
        open_growth=2.0,
        max_open_seconds=3.0,
        half_open_calls=1,
    )
    made.failure()
    for expected in (2.0, 3.0, 3.0):
        clock.advance(made.retry_after())
        assert made.allow()
        made.failure()
        assert made.retry_after() == expected
        assert moves(seen)[-1] == ("half-open", "open", "probe-failed")
    clock.advance(3.0)
    made.allow()
    made.success()
    made.failure()  # closed again: the open time starts over
    assert made.retry_after() == 1.0


def test_a_slow_probe_is_no_recovery(clock: FrozenClock) -> None:
    made, seen = breaker(window=None, consecutive_failures=1, slow_call_seconds=1.0)
    made.failure()
    clock.advance(5.0)
    made.allow()
    made.success(2.0)
    assert moves(seen)[-1] == ("half-open", "open", "probe-slow")


def test_probes_that_never_report_free_their_places_after_the_probe_timeout(
    clock: FrozenClock,
) -> None:
    made, _ = breaker(window=None, consecutive_failures=1, half_open_calls=1, probe_timeout=2.0)
    made.failure()
    clock.advance(5.0)
    assert made.allow()  # a probe whose request hangs
    assert not made.allow()
    clock.advance(2.0)
    assert made.allow()


def test_a_released_probe_frees_its_place_at_once(clock: FrozenClock) -> None:
    made, _ = breaker(window=None, consecutive_failures=1, half_open_calls=1)
    made.failure()
    clock.advance(5.0)
    generation = made.permit()
    assert not made.allow()
    made.release(generation)
    assert made.allow()


def test_an_outcome_from_before_the_last_transition_is_ignored(clock: FrozenClock) -> None:
    """A slow request let through while closed, succeeding half-open, is no probe."""
    made, seen = breaker(window=None, consecutive_failures=1, half_open_calls=1)
    old = made.permit()
    made.failure()
    clock.advance(5.0)
    probe = made.permit()
    made.success(generation=old)
    assert made.state == "half-open"
    made.success(generation=probe)
    assert made.state == "closed"
    made.failure(generation=old)
    assert made.state == "closed"
    assert [t.state for t in seen] == ["open", "half-open", "closed"]


def test_the_time_window_forgets_calls_older_than_its_size(clock: FrozenClock) -> None:
    made, seen = breaker(window_size=10, minimum_calls=4, failure_rate=0.5)
    made.failure()
    made.failure()
    clock.advance(10.0)  # those two have left the window
    made.failure()
    made.success()
    made.success()
    assert made.rates() == (3, 1 / 3, 0.0)
    made.success()
    assert (made.state, seen) == ("closed", [])


def test_the_count_window_holds_the_last_calls(clock: FrozenClock) -> None:
    made, seen = breaker(window="count", window_size=4, minimum_calls=4, failure_rate=0.75)
    for failed in (True, True, False, False, True):
        record(made, failed)
    assert made.rates()[:2] == (4, 0.5)  # the first failure was pushed out
    made.failure()
    assert made.state == "closed"  # F F T T: half
    made.failure()
    assert moves(seen) == [("closed", "open", "failure-rate")]


def test_reset_closes_it_and_forgets(clock: FrozenClock) -> None:
    made, seen = breaker(window=None, consecutive_failures=1)
    made.failure()
    made.reset("retired")
    assert (made.state, made.failures, made.allow()) == ("closed", 0, True)
    assert moves(seen)[-1] == ("open", "closed", "retired")


def test_each_transition_is_logged_in_one_line(
    clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "apiguard.breaker")
    made, _ = breaker(window=None, consecutive_failures=2)
    for _ in range(5):
        made.failure()  # two open it; the rest, refused or late, say nothing more
    clock.advance(5.0)
    made.allow()
    made.success()
    made.allow()
    made.success()
    made.allow()
    made.success()
    assert [r.getMessage() for r in caplog.records] == [
        "apiguard: circuit breaker upstream [GET /x]: closed -> open "
        "(consecutive-failures: 2 in a row); next probe in 5 s",
        "apiguard: circuit breaker upstream [GET /x]: open -> half-open (open-elapsed)",
        "apiguard: circuit breaker upstream [GET /x]: half-open -> closed (probes-succeeded)",
    ]
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.INFO, logging.INFO]


def test_process_wide_listeners_hear_every_breaker(clock: FrozenClock) -> None:
    heard: list[Transition] = []
    stop = listen(heard.append)
    try:
        made, _ = breaker(window=None, consecutive_failures=1)
        made.failure()
    finally:
        stop()
    made.reset()
    assert [(t.layer, t.name, t.key, t.state) for t in heard] == [
        ("breaker", "upstream", "GET /x", "open")
    ]


def test_a_weak_listener_stops_with_its_object(clock: FrozenClock) -> None:
    class Counter:
        def __init__(self) -> None:
            self.count = 0

        def hear(self, transition: Transition) -> None:
            self.count += 1

    counter = Counter()
    listen(counter.hear, weak=True)
    made, _ = breaker(window=None, consecutive_failures=1)
    made.failure()
    assert counter.count == 1
    del counter
    made.reset()  # heard by nobody, and no error


def test_a_failing_listener_is_logged_and_the_breaker_goes_on(
    clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(transition: Transition) -> None:
        raise RuntimeError("bug")

    made = Breaker(
        BreakerPolicy(window=None, consecutive_failures=1),
        layer="breaker",
        name="x",
        listeners=[broken],
    )
    made.failure()
    assert made.state == "open"
    assert "listener failed" in caplog.text


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"failure_rate": 0}, "BreakerPolicy: failure_rate 0 is not a share in (0, 1]"),
        ({"slow_call_rate": 1.5}, "slow_call_rate 1.5 is not a share in (0, 1]"),
        ({"window": "sliding"}, "window 'sliding' is not one of 'count', 'time'"),
        ({"window": None}, "neither a window nor consecutive_failures never opens"),
        ({"window": "count", "window_size": 10}, "minimum_calls 20 is more than a count window"),
        ({"open_growth": 0.5}, "open_growth 0.5 is not a factor from 1 to 10"),
        ({"open_seconds": 10, "max_open_seconds": 5}, "is less than open_seconds (10)"),
        ({"half_open_calls": 0}, "half_open_calls 0 is not a whole number from 1 to 1000"),
        ({"consecutive_failures": True}, "consecutive_failures True is not a whole number"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_option(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        BreakerPolicy(**options)  # type: ignore[arg-type]


def test_check_policy_names_the_layer() -> None:
    options = Options.of("CircuitBreakerMiddleware", "b")
    with pytest.raises(
        ConfigError, match=r"^CircuitBreakerMiddleware\[name='b'\]: failure_rate 2 "
    ):
        check_policy(options, failure_rate=2)
    assert check_policy(options, failure_rate=0.25).failure_rate == 0.25


def test_windows_count_in_constant_space() -> None:
    count = CountWindow(3)
    for index in range(1000):
        count.record(index % 2 == 0, index % 3 == 0, 0.0)
    assert count.calls == 3
    time_window = TimeWindow(5)
    for second in range(1000):
        time_window.record(True, False, float(second))
    assert (time_window.calls, len(time_window._calls)) == (5, 5)
