"""What readiness checks: local state, and the dependencies it was asked to look at.

Each check gives entries of the health-check draft's `checks` object
(draft-inadarei-api-health-check): a key `component:measurement` and a
list of results, one per component instance (`componentId`), each with its
`status` (`pass`, `warn`, `fail`), and where it has one an
`observedValue` with its `observedUnit` and an `output` (an error's type,
never its message: the body is public).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final, Literal, Protocol, TypeAlias

from apiguard._clock import clock
from apiguard.breaker import CLOSED, Transition, listen
from apiguard.storage import Store

__all__ = [
    "Check",
    "Entry",
    "HealthCheck",
    "OpenBreakers",
    "Status",
    "breakers_check",
    "run_check",
    "shedding_check",
    "stores_check",
    "stores_inside",
    "worst",
]

Status: TypeAlias = Literal["pass", "warn", "fail"]
#: One result of the `checks` object: `{"status": "pass", "componentId": ...}`.
Entry: TypeAlias = dict[str, Any]
#: A check: the `checks` entries it adds, keyed `component:measurement`.
Check: TypeAlias = Callable[[float], Awaitable[dict[str, list[Entry]]]]

_ORDER: Final = {"pass": 0, "warn": 1, "fail": 2}


class HealthCheck(Protocol):
    """A readiness check of your own: `async def check() -> bool | str | None`.

    `True` or `None`: pass; `False`: fail; or a status (`"pass"`, `"warn"`,
    `"fail"`). Raising fails (the body says the exception's type only), as
    does taking longer than the layer's `check_timeout`. A plain function
    works too, but blocks the event loop while it runs: make it `async`.
    """

    def __call__(self) -> Awaitable[bool | str | None] | bool | str | None:
        """Whether the dependency is ready."""
        ...


def worst(statuses: Iterable[str]) -> Status:
    """The worst of `statuses` (`pass` for none)."""
    found = "pass"
    for status in statuses:
        if _ORDER[status] > _ORDER[found]:
            found = status
    return found  # type: ignore[return-value]


def _now() -> str:
    """RFC 3339 UTC time, as the draft's `time` member wants it."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clock.time()))


async def run_check(name: str, check: HealthCheck, seconds: float) -> dict[str, list[Entry]]:
    """Run one check of the user's within `seconds`: its entry, with the time it took."""
    began = clock.monotonic()
    entry: Entry = {"componentType": "component"}
    try:
        async with asyncio.timeout(seconds):
            result: Any = check()
            if inspect.isawaitable(result):
                result = await result
    except TimeoutError:
        entry.update(status="fail", output=f"no answer within {seconds:g} s")
    except Exception as exc:
        entry.update(status="fail", output=type(exc).__name__)
    else:
        if result is None or result is True:
            entry["status"] = "pass"
        elif result is False:
            entry["status"] = "fail"
        elif result in _ORDER:
            entry["status"] = result
        else:
            entry.update(status="fail", output=f"the check returned {type(result).__name__}")
    entry["observedValue"] = round((clock.monotonic() - began) * 1000, 3)
    entry["observedUnit"] = "ms"
    entry["time"] = _now()
    return {f"{name}:responseTime": [entry]}


def stores_inside(app: object) -> list[Store]:
    """The stores of the layers a request meets after `app` (limiters, stale copies, ...)."""
    found: dict[int, Store] = {}
    node: object = app
    for _ in range(128):
        for candidate in _stores_of(node):
            found.setdefault(id(candidate), candidate)
        node = getattr(node, "app", None)
        if node is None:
            break
    return list(found.values())


def _stores_of(node: object) -> Iterable[Store]:
    fallback = getattr(node, "fallback", None)
    candidates = [
        getattr(node, "store", None),
        *(getattr(one, "store", None) for one in getattr(fallback, "fallbacks", (fallback,))),
    ]
    for candidate in candidates:
        if candidate is not None and callable(getattr(candidate, "ping", None)):
            yield candidate


def stores_check(stores: list[Store], failing: Status, timeout: float) -> Check:
    """Ping each store within `timeout` (and its own): `failing` for those that do not answer."""

    async def check(_: float) -> dict[str, list[Entry]]:
        async def one(store: Store) -> Entry:
            began = clock.monotonic()
            entry: Entry = {"componentId": store.display.strip("'"), "componentType": "datastore"}
            try:
                await store.ping(timeout)
            except Exception as exc:  # StorageError, or a store's own surprise
                entry.update(status=failing, output=type(exc).__name__)
                cause = getattr(exc, "state", None)
                if cause and cause != CLOSED:
                    entry["output"] = f"breaker {cause}"
            else:
                entry["status"] = "pass"
            entry["observedValue"] = round((clock.monotonic() - began) * 1000, 3)
            entry["observedUnit"] = "ms"
            entry["time"] = _now()
            return entry

        if not stores:
            return {}
        entries = await asyncio.gather(*(one(store) for store in stores))
        return {"store:responseTime": list(entries)}

    return check


class OpenBreakers:
    """The breakers of the process that are not closed now, heard from their transitions."""

    def __init__(self) -> None:
        self.open: dict[tuple[str, str, str | None], str] = {}
        self._stop: Callable[[], None] | None = None

    def start(self) -> None:
        """Listen (weakly: a layer dropped stops listening)."""
        if self._stop is None:
            self._stop = listen(self._heard, weak=True)

    def _heard(self, transition: Transition) -> None:
        key = (transition.layer, transition.name, transition.key)
        if transition.state == CLOSED:
            self.open.pop(key, None)
        elif key in self.open or len(self.open) < 10_000:
            self.open[key] = transition.state


def breakers_check(breakers: OpenBreakers, failing: Status) -> Check:
    """`failing` while any breaker is open or half-open; each listed."""

    async def check(_: float) -> dict[str, list[Entry]]:
        entries: list[Entry] = []
        for (layer, name, key), state in sorted(breakers.open.items(), key=str):
            component = f"{layer}:{name}" if key is None else f"{layer}:{name} {key}"
            entries.append(
                {
                    "componentId": component,
                    "componentType": "component",
                    "observedValue": state,
                    "status": failing,
                }
            )
        if not entries:
            entries.append({"componentType": "component", "observedValue": 0, "status": "pass"})
        return {"breakers:open": entries}

    return check


def shedding_check(shedders: Mapping[str, Any]) -> Check:
    """`fail` for a load shedder inside that has shed every request for a second or more."""

    async def check(_: float) -> dict[str, list[Entry]]:
        entries = []
        for name, shedder in shedders.items():
            everything = shedder.shedding_everything()
            entries.append(
                {
                    "componentId": name,
                    "componentType": "component",
                    "observedValue": shedder.in_flight,
                    "observedUnit": f"of {shedder.limit} in flight",
                    "status": "fail" if everything else "pass",
                }
            )
        return {"concurrency:shedding": entries} if entries else {}

    return check
