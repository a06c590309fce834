"""The breaker's state machine against a model: random calls, outcomes and time steps agree.

`Model` is the breaker as its documentation says, with plain lists for its
windows; hypothesis drives both with the same policy, calls, outcomes,
releases, resets and clock steps, and checks after each step that their
state, generation, failure count and retry-after agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
)

from apiguard.breaker import Breaker, BreakerPolicy
from apiguard.testing import FrozenClock


@dataclass
class Model:
    """The breaker as its documentation says, with plain lists for its windows."""

    policy: BreakerPolicy
    state: str = "closed"
    generation: int = 0
    failures: int = 0
    calls: list[tuple[float, bool, bool]] = field(default_factory=list)
    interval: float = 0.0
    reopen_at: float = 0.0
    probes: int = 0
    probe_at: float = -math.inf
    successes: int = 0

    def __post_init__(self) -> None:
        self.interval = self.policy.open_seconds

    def window(self, now: float) -> list[tuple[float, bool, bool]]:
        if self.policy.window == "count":
            return self.calls[-self.policy.window_size :]
        return [c for c in self.calls if int(now) - int(c[0]) < self.policy.window_size]

    def move(self, state: str) -> None:
        self.state = state
        self.generation += 1
        if state != "half-open":
            self.calls = []

    def permit(self, now: float) -> int | None:
        if self.state == "open":
            if now < self.reopen_at:
                return None
            self.probes = self.successes = 0
            self.move("half-open")
        elif self.state == "half-open" and self.probes >= self.policy.half_open_calls:
            if now < self.probe_at + self.policy.probe_timeout:
                return None
            self.probes = 0
        if self.state == "half-open":
            self.probes += 1
            self.probe_at = now
        return self.generation

    def slow(self, seconds: float) -> bool:
        limit = self.policy.slow_call_seconds
        return limit is not None and seconds >= limit

    def success(self, generation: int, seconds: float, now: float) -> None:
        if generation != self.generation:
            return
        if self.state == "closed":
            self.failures = 0
            if self.policy.window is not None:
                self.calls.append((now, False, self.slow(seconds)))
                if self.slow(seconds):
                    self.judge(now)
        elif self.state == "half-open":
            self.probes = max(self.probes - 1, 0)
            if self.slow(seconds):
                self.reopen(now)
                return
            self.failures = 0
            self.successes += 1
            if self.successes >= self.policy.half_open_calls:
                self.close()

    def failure(self, generation: int, seconds: float, now: float) -> None:
        if generation != self.generation:
            return
        self.failures += 1
        if self.state == "closed":
            if self.policy.window is not None:
                self.calls.append((now, True, self.slow(seconds)))
            limit = self.policy.consecutive_failures
            if limit is not None and self.failures >= limit:
                self.open(now)
            elif self.policy.window is not None:
                self.judge(now)
        elif self.state == "half-open":
            self.probes = max(self.probes - 1, 0)
            self.reopen(now)

    def release(self, generation: int) -> None:
        if generation == self.generation and self.state == "half-open":
            self.probes = max(self.probes - 1, 0)

    def judge(self, now: float) -> None:
        calls = self.window(now)
        policy = self.policy
        if len(calls) < policy.minimum_calls:
            return
        if sum(c[1] for c in calls) >= policy.failure_rate * len(calls) or (
            policy.slow_call_seconds is not None
            and sum(c[2] for c in calls) >= policy.slow_call_rate * len(calls)
        ):
            self.open(now)

    def open(self, now: float) -> None:
        self.reopen_at = now + self.interval
        self.move("open")

    def reopen(self, now: float) -> None:
        policy = self.policy
        self.interval = min(self.interval * policy.open_growth, policy.max_open_seconds)
        self.open(now)

    def close(self) -> None:
        self.interval = self.policy.open_seconds
        self.successes = self.probes = 0
        self.move("closed")

    def reset(self) -> None:
        self.failures = 0
        if self.state != "closed":
            self.close()
        else:
            self.interval = self.policy.open_seconds
            self.calls = []

    def retry_after(self, now: float) -> float:
        if self.state == "closed":
            return 0.0
        if self.state == "open":
            return max(self.reopen_at - now, 0.0)
        if self.probes < self.policy.half_open_calls:
            return 0.0
        return max(self.probe_at + self.policy.probe_timeout - now, 0.0)


@st.composite
def policies(draw: st.DrawFn) -> BreakerPolicy:
    window = draw(st.sampled_from(["count", "time", None]))
    size = draw(st.integers(1, 8))
    open_seconds = draw(st.sampled_from([1.0, 2.0]))
    return BreakerPolicy(
        window=window,
        window_size=size,
        minimum_calls=draw(st.integers(1, size if window == "count" else 8)),
        failure_rate=draw(st.sampled_from([0.25, 0.5, 1.0])),
        slow_call_rate=draw(st.sampled_from([0.5, 1.0])),
        slow_call_seconds=draw(st.sampled_from([None, 1.0])),
        consecutive_failures=draw(
            st.integers(1, 4) if window is None else st.none() | st.integers(1, 4)
        ),
        open_seconds=open_seconds,
        open_growth=draw(st.sampled_from([1.0, 2.0])),
        max_open_seconds=draw(st.sampled_from([open_seconds, 4.0, 8.0])),
        half_open_calls=draw(st.integers(1, 3)),
        probe_timeout=draw(st.sampled_from([1.0, 5.0])),
    )


class BreakerMachine(RuleBasedStateMachine):
    """Random calls, outcomes, releases and time steps: the breaker agrees with the model."""

    calls = Bundle("calls")

    def __init__(self) -> None:
        super().__init__()
        self.clock = FrozenClock()
        self.clock.__enter__()

    def teardown(self) -> None:
        self.clock.__exit__(None, None, None)

    @initialize(policy=policies())
    def make(self, policy: BreakerPolicy) -> None:
        self.breaker = Breaker(policy, layer="breaker", name="model")
        self.model = Model(policy)

    @rule(target=calls)
    def call(self) -> MultipleResults[int]:
        now = self.clock.monotonic()
        expected = self.model.permit(now)
        got = self.breaker.permit()
        assert got == expected
        return multiple() if got is None else multiple(got)

    @rule(call=consumes(calls), seconds=st.sampled_from([0.01, 0.5, 2.0]))
    def succeed(self, call: int, seconds: float) -> None:
        self.model.success(call, seconds, self.clock.monotonic())
        self.breaker.success(seconds, call)

    @rule(call=consumes(calls), seconds=st.sampled_from([0.01, 2.0]))
    def fail(self, call: int, seconds: float) -> None:
        self.model.failure(call, seconds, self.clock.monotonic())
        self.breaker.failure(TimeoutError(), seconds, call)

    @rule(call=consumes(calls))
    def release(self, call: int) -> None:
        self.model.release(call)
        self.breaker.release(call)

    @rule(target=calls, count=st.integers(2, 4))
    def calls_left_running(self, count: int) -> MultipleResults[int]:
        running = []
        for _ in range(count):
            expected = self.model.permit(self.clock.monotonic())
            got = self.breaker.permit()
            assert got == expected
            if got is not None:
                running.append(got)
        return multiple(*running)

    def _report(self, outcome: str) -> None:
        now = self.clock.monotonic()
        expected = self.model.permit(now)
        generation = self.breaker.permit()
        assert generation == expected
        if generation is None:
            return
        seconds = 2.0 if outcome == "slow" else 0.01
        if outcome == "fail":
            self.model.failure(generation, seconds, now)
            self.breaker.failure(None, seconds, generation)
        else:
            self.model.success(generation, seconds, now)
            self.breaker.success(seconds, generation)

    @rule(outcomes=st.lists(st.sampled_from(["ok", "slow", "fail"]), min_size=1, max_size=8))
    def calls_in_a_row(self, outcomes: list[str]) -> None:
        for outcome in outcomes:
            self._report(outcome)

    @rule(outcome=st.sampled_from(["ok", "slow", "fail"]))
    def probe_when_due(self, outcome: str) -> None:
        self.clock.advance(self.model.retry_after(self.clock.monotonic()))
        self._report(outcome)

    @rule(seconds=st.sampled_from([0.3, 1.0, 2.5, 10.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def reset(self) -> None:
        self.model.reset()
        self.breaker.reset()

    @invariant()
    def agrees(self) -> None:
        if not hasattr(self, "breaker"):
            return
        now = self.clock.monotonic()
        assert self.breaker.state == self.model.state
        assert self.breaker.generation == self.model.generation
        assert self.breaker.failures == self.model.failures
        assert self.breaker.retry_after() == self.model.retry_after(now)


BreakerMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_breaker_state_machine_agrees_with_its_model = BreakerMachine.TestCase
