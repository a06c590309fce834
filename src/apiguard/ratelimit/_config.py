"""A limiter's options to its tables: per-route policies, costs, exemptions, the general lookup."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final

from apiguard._types import KeyFunc, Scope
from apiguard.context import principal_of
from apiguard.layer import Options
from apiguard.ratelimit._policy import LimitSpec, Policy, PolicyBuilder, RoutePolicy
from apiguard.ratelimit.keys import ANONYMOUS_PREFIX, _ByPrincipal, principal_id_of
from apiguard.routing import RoutePolicies

__all__ = ["GENERAL", "Route", "check_costs", "general_lookup", "route_table"]


class Route:
    """What a route gets: its own policy (or the general one), a cost, or an exemption."""

    __slots__ = ("cost", "exempt", "policy")

    def __init__(self, policy: Policy | None, cost: int, exempt: bool) -> None:
        self.policy = policy
        self.cost = cost
        self.exempt = exempt


#: Routes not listed: the general policy, one unit a request.
GENERAL: Final = Route(None, 1, False)


def route_table(
    options: Options,
    builder: PolicyBuilder,
    routes: Mapping[str, LimitSpec | RoutePolicy] | None,
    exempt: Iterable[str] | None,
    cost: Mapping[str, int] | None,
) -> dict[str, Route]:
    """The per-route entries of `routes`, `exempt` and `cost`, by route key as given."""
    table: dict[str, Route] = {}
    for route, spec in options.mapping("routes", routes).items():
        if isinstance(spec, RoutePolicy):
            policy = (
                builder.build(f"routes[{route!r}]", spec.limit) if spec.limit is not None else None
            )
            exempted = options.flag(f"routes[{route!r}].exempt", spec.exempt)
            table[route] = Route(policy, _cost(options, route, spec.cost), exempted)
        else:
            table[route] = Route(builder.build(f"routes[{route!r}]", spec), 1, False)
    for route, units in options.mapping("cost", cost).items():
        entry = table.get(route)
        if entry is not None and entry.cost != 1:
            raise options.invalid("cost", f"route {route!r} has a cost in routes too")
        policy = entry.policy if entry is not None else None
        table[route] = Route(policy, _cost(options, route, units), False)
    if exempt is not None:
        for route in options.strings("exempt", exempt):
            if route in table:
                raise options.invalid("exempt", f"route {route!r} also has a limit or a cost")
            table[route] = Route(None, 1, True)
    return table


def _cost(options: Options, route: str, units: object) -> int:
    return options.integer(f"cost[{route!r}]", units, low=1, high=1_000_000)


def check_costs(options: Options, routes: RoutePolicies[Route], general: list[Policy]) -> None:
    """Refuse a route whose cost exceeds a quota it is counted against: never admitted."""
    for (method, route), entry in routes.items():
        policies = [entry.policy] if entry.policy is not None else general
        for policy in policies:
            for name, quota in zip(policy.names, policy.quotas, strict=True):
                if entry.cost > quota.amount:
                    where = f"{method} {route}" if method else route
                    raise options.invalid(
                        "cost",
                        f"route {where!r} costs {entry.cost}, more than the {quota.amount} "
                        f"of policy {name!r}: it could never be admitted",
                    )


def general_lookup(
    key_function: KeyFunc,
    default: Policy | None,
    plans: Mapping[str, Policy],
    overrides: Mapping[str, Policy],
) -> Callable[[Scope, str], Policy | None]:
    """The general policy lookup (overrides, plans, the limit), reduced to what is given."""
    if not plans and not overrides:
        return lambda scope, key: default
    # by_principal() keys principals as "p:<method>:<id>": their overrides
    # are named by id, apart from the anonymous callers' ("ip:<address>"),
    # so that a principal whose id reads like an address never gets an
    # address's override.
    by_id: dict[str, Policy] | None = None
    if isinstance(key_function, _ByPrincipal):
        by_id = {k: p for k, p in overrides.items() if not k.startswith(ANONYMOUS_PREFIX)}
        overrides = {k: p for k, p in overrides.items() if k.startswith(ANONYMOUS_PREFIX)}

    def general(scope: Scope, key: str) -> Policy | None:
        if by_id:
            principal_id = principal_id_of(key)
            if principal_id is not None:
                policy = by_id.get(principal_id)
                if policy is not None:
                    return policy
        if overrides:
            policy = overrides.get(key)
            if policy is not None:
                return policy
        if plans:
            principal = principal_of(scope)
            plan = principal.plan if principal is not None else None
            if plan is not None:
                policy = plans.get(plan)
                if policy is not None:
                    return policy
        return default

    return general
