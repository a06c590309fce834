"""Every layer's decisions as span attributes, by one rule that needs no layer's help.

A [`Decision`][apiguard.Decision] becomes attributes under a prefix naming
the layer instance: `apiguard.<layer>` when the instance is named after its
kind (`auth`, `validation`), else `apiguard.<layer>.<name>`
(`apiguard.ratelimit.ip`). Each field that is set is one attribute under it
(`.outcome`, `.reason`, `.status`, `.policy`, `.limit`, `.remaining`,
`.reset_after`, `.state`, `.retries`), and each entry of the decision's
`attributes` mapping another, its own `<layer>.` prefix dropped
(`auth.method` -> `apiguard.auth.method`, `store.failures` ->
`apiguard.ratelimit.ip.store.failures`). A layer written later (a breaker's
`state`, a retry layer's `retries`, a fallback's or a replay's attributes)
shows up with no change here. The request as a whole gets
`apiguard.outcome` (`reject` if any layer refused, else `allow`) and, on a
refusal, `apiguard.reject.layer`, `.name` and `.reason`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from apiguard.context import AttributeValue, Decision

__all__ = ["STORE_UNAVAILABLE", "DecisionAttributes"]

#: The reason a layer gives when its store failed (failing open or closed).
STORE_UNAVAILABLE: Final = "store-unavailable"

_FIELDS: Final = (
    ("reason", 3),
    ("status", 4),
    ("policy", 5),
    ("limit", 6),
    ("remaining", 7),
    ("reset_after", 8),
    ("state", 9),
    ("retries", 10),
)
#: Attribute keys kept per layer instance (they are set by configuration,
#: so this is a bound that only a misbehaving layer could reach).
_MAX_PREFIXES: Final = 1024


class _Keys:
    """The attribute keys of one layer instance, built once."""

    __slots__ = ("extra", "fields", "layer_dot", "outcome", "prefix")

    def __init__(self, layer: str, name: str | None) -> None:
        prefix = (
            f"apiguard.{layer}" if name is None or name == layer else f"apiguard.{layer}.{name}"
        )
        self.prefix = prefix
        self.layer_dot = layer + "."
        self.outcome = prefix + ".outcome"
        self.fields = tuple((f"{prefix}.{field}", index) for field, index in _FIELDS)
        self.extra: dict[str, str] = {}

    def key(self, attribute: str) -> str:
        full = self.extra.get(attribute)
        if full is None:
            short = attribute.removeprefix(self.layer_dot)
            full = f"{self.prefix}.{short}"
            if len(self.extra) < _MAX_PREFIXES:
                self.extra[attribute] = full
        return full


class DecisionAttributes:
    """Maps decisions to span attributes, caching the keys of each layer instance."""

    __slots__ = ("_keys",)

    def __init__(self) -> None:
        self._keys: dict[tuple[str, str | None], _Keys] = {}

    def keys(self, decision: Decision) -> _Keys:
        """The attribute keys of the decision's layer instance."""
        ident = (decision.layer, decision.name)
        keys = self._keys.get(ident)
        if keys is None:
            keys = _Keys(decision.layer, decision.name)
            if len(self._keys) < _MAX_PREFIXES:
                self._keys[ident] = keys
        return keys

    def add(
        self, decisions: Iterable[Decision], into: dict[str, AttributeValue]
    ) -> Decision | None:
        """Add the attributes of `decisions` to `into`; return the first refusal, if any."""
        rejected: Decision | None = None
        for decision in decisions:
            keys = self.keys(decision)
            into[keys.outcome] = decision.outcome
            for key, index in keys.fields:
                value = decision[index]
                if value is not None:
                    into[key] = value  # type: ignore[assignment]  # the scalar fields only
            extra = decision.attributes
            if extra:
                for attribute, value in extra.items():
                    into[keys.key(attribute)] = value
            if rejected is None and decision.outcome == "reject":
                rejected = decision
        if rejected is not None:
            into["apiguard.outcome"] = "reject"
            into["apiguard.reject.layer"] = rejected.layer
            if rejected.name is not None:
                into["apiguard.reject.name"] = rejected.name
            if rejected.reason is not None:
                into["apiguard.reject.reason"] = rejected.reason
        else:
            into["apiguard.outcome"] = "allow"
        return rejected
