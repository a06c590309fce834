"""The one circuit-breaker state machine: the stores', the JWKS fetchers' and the layer's.

A breaker stops calling what keeps failing. **Closed**, every call goes
through and its outcome is counted; when the failures say the callee is
down it **opens**: calls are refused at once, for `open_seconds` (growing
by `open_growth` each time a probe fails, up to `max_open_seconds`). Then it
is **half-open**: up to `half_open_calls` probes go through; one failing
opens it again, all succeeding close it.

What opens a closed breaker is the [`BreakerPolicy`][apiguard.breaker.BreakerPolicy]:

- a **failure rate** or a **slow-call rate** over a sliding window of the
  last calls (a count of calls, or seconds in one-second buckets: O(1) a
  call, as resilience4j counts), once the window holds `minimum_calls`;
- or a number of **consecutive failures**, the rule of a breaker in front
  of one connection (a store: three failures in a row, each of which may
  have cost a timeout, are enough).

Every transition is a [`Transition`][apiguard.breaker.Transition], handed
to the breaker's own listeners and to every listener registered with
[`listen`][apiguard.breaker.listen] (the tracing layer counts them as
`apiguard.state.transitions`), and logged in one line unless the owner
logs otherwise (a store logs once per outage).

State is per process: each worker has its own breakers.
"""

from __future__ import annotations

import inspect
import logging
import math
import weakref
from collections.abc import Callable, Sequence
from typing import Final, Literal, NamedTuple, Protocol, TypeAlias

from apiguard._breaker_policy import BreakerPolicy, check_policy
from apiguard._clock import clock
from apiguard._windows import Window

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "Breaker",
    "BreakerPolicy",
    "BreakerState",
    "Transition",
    "TransitionListener",
    "check_policy",
    "listen",
]

logger = logging.getLogger("apiguard.breaker")

BreakerState: TypeAlias = Literal["closed", "open", "half-open"]
CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half-open"


class Transition(NamedTuple):
    """One change of a breaker's state.

    Attributes:
        layer: What the breaker guards: `"breaker"` (the layer's), `"store"`,
            `"jwks"`; as decisions name their layer.
        name: The owner's name: the layer's name, the store's URI (password
            redacted), the key set's URL.
        key: Which of the owner's breakers: a route key, a key value, a
            Cluster node; `None` when the owner has one.
        previous: The state it left.
        state: The state it entered.
        reason: Why: `"failure-rate"`, `"slow-call-rate"`,
            `"consecutive-failures"` (opened), `"probe-failed"` (opened
            again), `"open-elapsed"` (half-open), `"probes-succeeded"`
            (closed), `"retired"`, `"reset"` (closed by its owner).
        at: When, on the core clock's monotonic time.
        open_seconds: For an opening: how long until the next probe.
        calls: The calls in the window when it opened (0 without a window).
        failure_rate: The window's failure rate then (`None` without one).
        slow_call_rate: The window's slow-call rate then (`None` without one).
        failures: Consecutive failures then.
    """

    layer: str
    name: str
    key: str | None
    previous: BreakerState
    state: BreakerState
    reason: str
    at: float
    open_seconds: float = 0.0
    calls: int = 0
    failure_rate: float | None = None
    slow_call_rate: float | None = None
    failures: int = 0

    def describe(self) -> str:
        """The transition in words, for a log line."""
        kind = _KINDS.get(self.layer) or f"{self.layer} breaker"
        who = kind if self.layer == self.name == "breaker" else f"{kind} {self.name}"
        if self.key is not None:
            who += f" [{self.key}]"
        text = f"{who}: {self.previous} -> {self.state} ({self.reason}"
        if self.reason == "failure-rate" and self.failure_rate is not None:
            text += f": {self.failure_rate:.0%} of {self.calls} calls failed"
        elif self.reason == "slow-call-rate" and self.slow_call_rate is not None:
            text += f": {self.slow_call_rate:.0%} of {self.calls} calls slow"
        elif self.reason == "consecutive-failures":
            text += f": {self.failures} in a row"
        text += ")"
        if self.state == OPEN:
            text += f"; next probe in {round(self.open_seconds, 3):g} s"
        return text


#: How log lines name the breakers of apiguard's own owners.
_KINDS: Final = {"breaker": "circuit breaker", "store": "store breaker", "jwks": "JWKS breaker"}


class TransitionListener(Protocol):
    """Called with every transition of the breakers it listens to; must not block."""

    def __call__(self, transition: Transition, /) -> None:
        """React to `transition` (count it, log it, alert)."""
        ...


#: Listeners of every breaker of the process: plain callables, or weak
#: references to bound methods (a layer that listens must not be kept alive).
_listeners: list[Callable[[], TransitionListener | None]] = []


def listen(listener: TransitionListener, *, weak: bool = False) -> Callable[[], None]:
    """Hear every transition of every breaker in the process; returns a function that stops it.

    Args:
        listener: Called with each [`Transition`][apiguard.breaker.Transition],
            synchronously, where the breaker changed state (on the event
            loop): it must be quick and must not raise (what it raises is
            logged and ignored).
        weak: Hold a bound method weakly: it stops listening when its
            object is collected.

    Examples:
        >>> seen = []
        >>> stop = listen(seen.append)
        >>> stop()
    """
    if weak and inspect.ismethod(listener):
        reference: Callable[[], TransitionListener | None] = weakref.WeakMethod(listener)
    else:

        def reference() -> TransitionListener:
            return listener

    _listeners.append(reference)

    def stop() -> None:
        if reference in _listeners:
            _listeners.remove(reference)

    return stop


def _announce(transition: Transition, own: Sequence[TransitionListener]) -> None:
    for listener in own:
        _call(listener, transition)
    dead = False
    for reference in tuple(_listeners):
        found = reference()
        if found is None:
            dead = True
        else:
            _call(found, transition)
    if dead:
        _listeners[:] = [reference for reference in _listeners if reference() is not None]


def _call(listener: TransitionListener, transition: Transition) -> None:
    try:
        listener(transition)
    except Exception:  # a listener's bug must not break the breaker's caller
        logger.exception("apiguard: a breaker transition listener failed")


class Breaker:
    """A circuit breaker: closed, open, half-open, as its policy says.

    The owner asks [`permit`][apiguard.breaker.Breaker.permit] before a
    call and reports its outcome with the generation it got:
    [`success`][apiguard.breaker.Breaker.success],
    [`failure`][apiguard.breaker.Breaker.failure], or
    [`release`][apiguard.breaker.Breaker.release] for a call that ended
    with neither (its request was cancelled). A call is reported once; an
    outcome of a call permitted before the last transition is ignored (a
    slow request let through while closed, ending half-open, is no probe).
    [`allow`][apiguard.breaker.Breaker.allow] is the same without the
    generation, for an owner whose calls are short and bounded (a store
    call): its outcomes count in whatever state the breaker is then. A
    breaker without a window may skip reporting successes while `failures`
    is 0 (nothing would change).

    Args:
        policy: When it opens, for how long, how it closes.
        layer: What it guards, as [`Transition.layer`][apiguard.breaker.Transition].
        name: Its owner's name.
        key: Which of the owner's breakers it is, if the owner has several.
        listeners: Called with each of its transitions (besides the
            process-wide ones of [`listen`][apiguard.breaker.listen]).
        log: Log each transition in one line (`apiguard.breaker` logger:
            openings as warnings, the rest as info).

    Attributes:
        state: `"closed"`, `"open"` or `"half-open"`.
        failures: Consecutive failures (0 after a success).
        total_failures: Failures since it was made.
        generation: Incremented at each transition.
    """

    __slots__ = (
        "_interval",
        "_probe_at",
        "_probes",
        "_reopen_at",
        "_successes",
        "_window",
        "failures",
        "generation",
        "key",
        "layer",
        "listeners",
        "log",
        "name",
        "policy",
        "state",
        "total_failures",
    )

    def __init__(
        self,
        policy: BreakerPolicy,
        *,
        layer: str,
        name: str,
        key: str | None = None,
        listeners: Sequence[TransitionListener] = (),
        log: bool = True,
    ) -> None:
        self.policy = policy
        self.layer = layer
        self.name = name
        self.key = key
        self.listeners = tuple(listeners)
        self.log = log
        self.state: BreakerState = CLOSED
        self.failures = 0
        self.total_failures = 0
        self.generation = 0
        self._window = policy.new_window()
        self._interval = policy.open_seconds
        self._reopen_at = 0.0
        self._probes = 0
        self._probe_at = -math.inf
        self._successes = 0

    def __repr__(self) -> str:
        key = "" if self.key is None else f", key={self.key!r}"
        return f"Breaker({self.layer}:{self.name}{key}, state={self.state!r})"

    # --- the calls -------------------------------------------------------------------

    def allow(self) -> bool:
        """Whether a call may go now; half-open, it counts as one of the probes."""
        state = self.state
        if state == CLOSED:
            return True
        now = clock.monotonic()
        policy = self.policy
        if state == OPEN:
            if now < self._reopen_at:
                return False
            self._probes = self._successes = 0
            self._move(HALF_OPEN, "open-elapsed", now)
        elif self._probes >= policy.half_open_calls:
            if now < self._probe_at + policy.probe_timeout:
                return False
            self._probes = 0  # the probes in flight never reported: their places are free
        self._probes += 1
        self._probe_at = now
        return True

    def permit(self) -> int | None:
        """The generation to report the call's outcome with, or `None`: refused now."""
        if self.allow():
            return self.generation
        return None

    def success(
        self, seconds: float = 0.0, generation: int | None = None, now: float | None = None
    ) -> None:
        """A call allowed succeeded, in `seconds` (slow calls count against the callee).

        `now` is the core clock's monotonic time, when the caller has just read it.
        """
        if generation is not None and generation != self.generation:
            return
        policy = self.policy
        limit = policy.slow_call_seconds
        slow = limit is not None and seconds >= limit
        state = self.state
        if state == CLOSED:
            self.failures = 0
            window = self._window
            if window is not None:
                if now is None:
                    now = clock.monotonic()
                window.record(False, slow, now)
                if slow:
                    self._judge(window, now)
        elif state == HALF_OPEN:
            if self._probes:
                self._probes -= 1
            if slow:  # still struggling: not a recovery
                self._reopen("probe-slow")
                return
            self.failures = 0
            self._successes += 1
            if self._successes >= policy.half_open_calls:
                self._close("probes-succeeded", clock.monotonic())
        # Open: a call allowed before it opened, finishing late, changes nothing.

    def failure(
        self,
        error: BaseException | None = None,
        seconds: float = 0.0,
        generation: int | None = None,
    ) -> None:
        """A call allowed failed (or timed out)."""
        if generation is not None and generation != self.generation:
            return
        self.failures += 1
        self.total_failures += 1
        state = self.state
        if state == CLOSED:
            now = clock.monotonic()
            policy = self.policy
            window = self._window
            if window is not None:
                limit = policy.slow_call_seconds
                window.record(True, limit is not None and seconds >= limit, now)
            consecutive = policy.consecutive_failures
            if consecutive is not None and self.failures >= consecutive:
                self._open("consecutive-failures", now)
            elif window is not None:
                self._judge(window, now)
        elif state == HALF_OPEN:
            if self._probes:
                self._probes -= 1
            self._reopen("probe-failed")

    def release(self, generation: int | None = None) -> None:
        """A call allowed ended with no outcome (cancelled): half-open, its place is free."""
        if generation is not None and generation != self.generation:
            return
        if self.state == HALF_OPEN and self._probes:
            self._probes -= 1

    def retry_after(self) -> float:
        """Seconds until a call may go again (0 when one may now)."""
        state = self.state
        if state == CLOSED:
            return 0.0
        now = clock.monotonic()
        if state == OPEN:
            return max(self._reopen_at - now, 0.0)
        if self._probes < self.policy.half_open_calls:
            return 0.0
        return max(self._probe_at + self.policy.probe_timeout - now, 0.0)

    def reset(self, reason: str = "reset") -> None:
        """Close the breaker now (what failed was replaced), forgetting its counts."""
        self.failures = 0
        if self.state != CLOSED:
            self._close(reason, clock.monotonic())
        else:
            self._interval = self.policy.open_seconds
            if self._window is not None:
                self._window.reset()

    # --- what the window says ---------------------------------------------------------

    def rates(self) -> tuple[int, float, float]:
        """The window's calls, failure rate and slow-call rate now (zeros without a window)."""
        window = self._window
        if window is None:
            return 0, 0.0, 0.0
        window.advance(clock.monotonic())
        calls = window.calls
        if not calls:
            return 0, 0.0, 0.0
        return calls, window.failures / calls, window.slow / calls

    def _judge(self, window: Window, now: float) -> None:
        calls = window.calls
        policy = self.policy
        if calls < policy.minimum_calls:
            return
        if window.failures >= policy.failure_rate * calls:
            self._open("failure-rate", now)
        elif policy.slow_call_seconds is not None and window.slow >= policy.slow_call_rate * calls:
            self._open("slow-call-rate", now)

    # --- transitions ------------------------------------------------------------------

    def _open(self, reason: str, now: float) -> None:
        self._reopen_at = now + self._interval
        self._move(OPEN, reason, now)

    def _reopen(self, reason: str) -> None:
        policy = self.policy
        self._interval = min(self._interval * policy.open_growth, policy.max_open_seconds)
        self._open(reason, clock.monotonic())

    def _close(self, reason: str, now: float) -> None:
        self._interval = self.policy.open_seconds
        self._successes = self._probes = 0
        self._move(CLOSED, reason, now)

    def _move(self, state: BreakerState, reason: str, now: float) -> None:
        previous = self.state
        self.state = state
        self.generation += 1
        window = self._window
        calls = 0
        failure_rate = slow_rate = None
        if window is not None:
            calls = window.calls
            if calls:
                failure_rate = window.failures / calls
                slow_rate = window.slow / calls
            if state != HALF_OPEN:
                window.reset()  # each closed period is judged on its own calls
        transition = Transition(
            self.layer,
            self.name,
            self.key,
            previous,
            state,
            reason,
            now,
            self._reopen_at - now if state == OPEN else 0.0,
            calls,
            failure_rate,
            slow_rate,
            self.failures,
        )
        if self.log:
            level = logging.WARNING if state == OPEN else logging.INFO
            if logger.isEnabledFor(level):
                logger.log(level, "apiguard: %s", transition.describe())
        if self.listeners or _listeners:
            _announce(transition, self.listeners)
