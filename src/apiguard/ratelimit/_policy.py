"""Limits as written (`"10/second; 1000/hour"`) to policies with their bytes built once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

from limits import parse_many

from apiguard.errors import ConfigError
from apiguard.problems import Problem, ProblemResponse
from apiguard.ratelimit.headers import (
    RATELIMIT_POLICY,
    check_name,
    policy_field,
    ratelimit_prefixes,
)
from apiguard.storage import Quota

__all__ = ["QUOTA_EXCEEDED", "LimitSpec", "Policy", "PolicyBuilder", "RoutePolicy"]

#: A limit as users write it: `"100/minute"`, `"10/second; 1000/hour"`, a list
#: of such strings, or a mapping of policy names to limits to name them.
LimitSpec: TypeAlias = str | Sequence[str] | Mapping[str, str]

#: draft-ietf-httpapi-ratelimit-headers-11 §8: the quota-exceeded problem type.
QUOTA_EXCEEDED: Final = "https://iana.org/assignments/http-problem-types#quota-exceeded"
_QUOTA_TITLE: Final = "Request cannot be satisfied as assigned quota has been exceeded"
_QUOTA_DETAIL: Final = "Too many requests; retry after the number of seconds in Retry-After."
#: RFC 9651 §3.3.1: an sf-integer has at most 15 digits, and RateLimit-Policy
#: carries each quota (`q`) and window (`w`) as one.
_LARGEST: Final = 999_999_999_999_999


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """What one route gets from a rate limiter, when a limit string is not enough.

    Args:
        limit: The route's own limit, counted per route (its own counters),
            for every consumer on the route; `None` keeps the limiter's
            general limit (`limit`, `plans`, `overrides`) and its counters.
        cost: Units each request to the route takes from the quota.
        exempt: Whether the route is not limited at all.

    Examples:
        >>> RoutePolicy(cost=5)  # an expensive route draws 5 units of the general quota
        RoutePolicy(limit=None, cost=5, exempt=False)
    """

    limit: LimitSpec | None = None
    cost: int = 1
    exempt: bool = False


class Policy:
    """The quotas in force for a request, with their header bytes and rejections."""

    __slots__ = (
        "_headers",
        "_problems",
        "amount",
        "field",
        "name",
        "names",
        "prefix",
        "prefixes",
        "quotas",
        "single",
    )

    def __init__(self, names: tuple[str, ...], quotas: tuple[Quota, ...], headers: bool) -> None:
        self.names = names
        self.quotas = quotas
        self.field = policy_field(names, quotas)
        self.prefixes = ratelimit_prefixes(names)
        self._headers = headers
        self._problems: dict[tuple[int, ...], ProblemResponse] = {}
        # The usual policy has one quota: its figures at hand for the hot path.
        self.single = len(quotas) == 1
        self.name = names[0]
        self.amount = quotas[0].amount
        self.prefix = self.prefixes[0]

    def rejection(self, violated: tuple[int, ...]) -> ProblemResponse:
        """The 429 for the quotas in `violated`, built once per combination."""
        response = self._problems.get(violated)
        if response is None:
            problem = Problem(
                status=429,
                type=QUOTA_EXCEEDED,
                title=_QUOTA_TITLE,
                detail=_QUOTA_DETAIL,
                extensions={"violated-policies": [self.names[i] for i in violated]},
            )
            headers = [(RATELIMIT_POLICY, self.field)] if self._headers else []
            response = self._problems[violated] = ProblemResponse(problem, headers)
        return response


class PolicyBuilder:
    """Parses the limits of one limiter, numbering unnamed quotas `"<name>-<n>"`."""

    def __init__(self, limiter: str, headers: bool) -> None:
        self.limiter = limiter
        self.headers = headers
        self.count = 0
        self.policies: list[Policy] = []

    def build(self, option: str, spec: object) -> Policy:
        """Parse `spec` (a [`LimitSpec`][]) given as `option`.

        Raises:
            ConfigError: not a limit, a bad policy name, or a name used twice.
        """
        pairs: list[tuple[str | None, str]]
        if isinstance(spec, str):
            pairs = [(None, spec)]
        elif isinstance(spec, Mapping):
            pairs = list(spec.items())
            for name, _ in pairs:
                if not check_name(name):
                    msg = (
                        f"{option}: policy name {name!r} is not 1-64 letters, digits "
                        "and _.:/+- (starting with a letter or digit)"
                    )
                    raise ConfigError(msg)
        elif isinstance(spec, Sequence) and spec and all(isinstance(s, str) for s in spec):
            pairs = [(None, s) for s in spec]
        else:
            msg = f"{option} {spec!r} is not a limit like '100/minute' or '10/second; 1000/hour'"
            raise ConfigError(msg)
        names: list[str] = []
        quotas: list[Quota] = []
        index = len(self.policies)
        for given, text in pairs:
            items = _parse(option, text)
            if given is not None and len(items) != 1:
                msg = f"{option}: the limit named {given!r} must be one limit, not {text!r}"
                raise ConfigError(msg)
            for item in items:
                name = given if given is not None else f"{self.limiter}-{self.count}"
                self.count += 1
                if name in names:
                    msg = f"{option}: policy name {name!r} is used twice"
                    raise ConfigError(msg)
                names.append(name)
                amount, window = item
                quotas.append(Quota(f"{self.limiter}/{index}/{name}", amount, window))
        policy = Policy(tuple(names), tuple(quotas), self.headers)
        self.policies.append(policy)
        return policy


def _parse(option: str, text: object) -> list[tuple[int, int]]:
    bad = f"{option} {text!r} is not a limit like '100/minute' or '10/second; 1000/hour'"
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(bad)
    try:
        items = parse_many(text)
    except ValueError:
        raise ConfigError(bad) from None
    if not items:
        raise ConfigError(bad)
    parsed = []
    for item in items:
        if item.amount < 1:
            msg = f"{option} {text!r} allows no request at all; give at least 1 per window"
            raise ConfigError(msg)
        amount, window = item.amount, item.get_expiry()
        for value, what in (
            (amount, f"allows {amount} requests"),
            (window, f"has a window of {window} seconds"),
        ):
            if value > _LARGEST:
                msg = (
                    f"{option} {text!r} {what}; RateLimit-Policy carries at most 15 digits "
                    f"(RFC 9651 §3.3.1): give at most {_LARGEST}"
                )
                raise ConfigError(msg)
        parsed.append((amount, window))
    return parsed
