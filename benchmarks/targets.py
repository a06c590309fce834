"""The targets of the benchmark issue, and each one's verdict from a run.

A `Target` is one line of the issue's table as measured: what, the figure,
the limit it is held to (itself measured in the same run where the target
is relative: `asyncio.timeout`, a store hit, the Redis floor, otel-asgi),
and the verdict, met or missed by how much. Never an assertion: a missed
target is reported as measured.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.driver import Result, paired_overhead

#: The issue's budgets (µs over the bare app, in one run).
STACK_BUDGET = {"GET": 25.0, "POST": 35.0}
LAYER_BUDGET = 3.0
TRACING_BUDGET = 2.0
STORE_MARGIN = 2.0
REDIS_MARGIN = 10.0
REFUSAL_BUDGET = 3.0


@dataclass(frozen=True)
class Target:
    """One target: the figure, the limit, the verdict (`met` is None when not measured)."""

    what: str
    target: str
    measured: float | None
    limit: float | None
    met: bool | None
    command: str
    unit: str = "µs"
    note: str = ""
    higher_is_better: bool = False

    @property
    def verdict(self) -> str:
        """`met (margin 1.2 µs)`, `MISSED by 3.4 µs`, or `not measured`."""
        if self.met is None or self.measured is None or self.limit is None:
            return "not measured" + (f": {self.note}" if self.note else "")
        gap = abs(self.measured - self.limit)
        unit = "" if self.unit == "%" else " "
        if self.met:
            return f"met (margin {gap:.1f}{unit}{self.unit})"
        return f"MISSED by {gap:.1f}{unit}{self.unit}"

    def line(self) -> str:
        """One markdown list item."""
        if self.measured is None:
            return f"- {self.what} (target {self.target}): {self.verdict}"
        sign = "" if self.unit == "%" else "+"
        unit = "" if self.unit == "%" else " "
        figure = f"{self.measured:{sign}.1f}{unit}{self.unit}"
        note = f" ({self.note})" if self.note else ""
        return f"- {self.what}: {figure} (target {self.target}): {self.verdict}{note}"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


def at_most(
    what: str, measured: float, limit: float, target: str, command: str, note: str = ""
) -> Target:
    """A target the figure must not exceed."""
    return Target(what, target, measured, limit, measured <= limit, command, note=note)


def at_least(
    what: str, measured: float, limit: float, target: str, command: str, unit: str = "%"
) -> Target:
    """A target the figure must reach (a share of throughput)."""
    return Target(what, target, measured, limit, measured >= limit, command, unit, "", True)


def pending(what: str, target: str, command: str, note: str) -> Target:
    """A target the run cannot measure yet (a layer not built)."""
    return Target(what, target, None, None, None, command, note=note)


def render(targets: Sequence[Target]) -> str:
    """The verdict lines, under a count of what was met."""
    measured = [t for t in targets if t.met is not None]
    met = sum(1 for t in measured if t.met)
    head = f"Targets: {met} of {len(measured)} measured met"
    if len(measured) < len(targets):
        head += f", {len(targets) - len(measured)} not measured yet"
    return "\n".join([head + ":", *(t.line() for t in targets)])


def paired(a: Result, b: Result) -> float:
    """The median over rounds of `a - b` in the same round."""
    return statistics.median(x - y for x, y in zip(a.samples, b.samples, strict=True))


STACK_COMMAND = "python -m benchmarks stack"


def stack_targets(results: Sequence[Result]) -> list[Target]:
    """The in-process targets, from the stack suite's run."""
    from benchmarks.apps import stack_layers
    from benchmarks.server_apps import DEFAULT_SECRET

    by = {r.case.name: r for r in results}
    cmd = STACK_COMMAND

    def over(name: str) -> float:
        result = by[name]
        assert result.case.baseline is not None
        return paired_overhead(result, by[result.case.baseline])[0]

    layers = stack_layers(secret=DEFAULT_SECRET.encode())
    found: list[Target] = []
    for method, budget in STACK_BUDGET.items():
        figure = over(f"stack {method}")
        found.append(at_most(f"the stack, {method}", figure, budget, f"≤ {budget:g} µs", cmd))
    store_hit = by["apiguard memory store hit, fixed window"].median
    for method in STACK_BUDGET:
        timeout_yardstick = over(f"asyncio.timeout() layer {method}")
        for name, layer in layers.items():
            label = f"{layer.label} {method}"
            figure = over(label)
            if name == "tracing":
                found.append(at_most(label, figure, TRACING_BUDGET, "≤ 2 µs", cmd))
            elif name == "timeout":
                limit = min(LAYER_BUDGET, timeout_yardstick)
                target = f"≤ asyncio.timeout() as a layer ({timeout_yardstick:+.1f} µs), ≤ 3 µs"
                found.append(at_most(label, figure, limit, target, cmd))
            elif name in ("ip-limit", "plan-limit"):
                limit = store_hit + STORE_MARGIN
                target = f"≤ its store's hit ({store_hit:.1f} µs) + 2 µs"
                found.append(at_most(label, figure, limit, target, cmd))
            else:
                found.append(at_most(label, figure, LAYER_BUDGET, "≤ 3 µs", cmd))
        for label in ("API key", "IP filter, 100 networks denied", "idempotency, no key"):
            name = f"{label} {method}"
            found.append(at_most(name, over(name), LAYER_BUDGET, "≤ 3 µs", cmd))
    for method in STACK_BUDGET:
        ours = by.get(f"[sdk] + apiguard TracingMiddleware{_suffix(method)}")
        theirs = by.get(f"[sdk] + opentelemetry-instrumentation-asgi{_suffix(method)}")
        what = f"tracing with the SDK (batch processor), {method}"
        if ours is None or theirs is None:
            found.append(pending(what, "≤ ½ otel-asgi", cmd, "the [sdk] process did not run"))
            continue
        mine, peer = over(ours.case.name), over(theirs.case.name)
        target = f"≤ ½ of otel-asgi's {peer:+.1f} µs"
        found.append(at_most(what, mine, peer / 2, target, cmd))
    for method in STACK_BUDGET:
        floor = over(f"a layer awaiting one Redis PING {method}")
        found.append(
            at_most(
                f"IP limit on redis://, {method}",
                over(f"IP limit, Redis {method}"),
                floor + REDIS_MARGIN,
                f"≤ the floor ({floor:+.1f} µs: a layer awaiting one PING) + 10 µs",
                cmd,
            )
        )
    for label, method in (
        ("no token", "GET"),
        ("malformed token", "GET"),
        ("unknown kid", "GET"),
        ("413 by Content-Length", "POST"),
        ("415", "POST"),
        ("breaker open", "GET"),
        ("shed", "GET"),
    ):
        name = f"refused: {label} {method}"
        found.append(at_most(name, over(name), REFUSAL_BUDGET, "≤ 3 µs over a canned refusal", cmd))
    ip_label = layers["ip-limit"].label
    for refused, allowed in (
        ("refused: 429 GET", f"{ip_label} GET"),
        ("refused: 422 POST", f"{layers['validation'].label} POST"),
        ("refused: bad signature GET", "JWT HS256, uncached GET"),
    ):
        figure = paired(by[refused], by[allowed])
        found.append(
            at_most(
                f"{refused}, against {allowed}",
                figure,
                0.0,
                "no dearer than the allowed path (difference ≤ 0)",
                cmd,
            )
        )
    return found


def _suffix(method: str) -> str:
    return "" if method == "GET" else ", POST"
