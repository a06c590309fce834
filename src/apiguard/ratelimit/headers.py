"""The RateLimit and RateLimit-Policy fields of draft-ietf-httpapi-ratelimit-headers-11.

Both are Structured Field Lists (RFC 9651) of named items; the name is an
sf-string, so it is quoted:

    RateLimit-Policy: "default-0";q=100;w=60, "default-1";q=1000;w=3600
    RateLimit: "default-0";r=99;t=50, "default-1";r=999;t=3550

`q` is the quota, `w` the window in seconds, `r` the quota left, `t` the
seconds until the quota gives units back. RateLimit-Policy does not change
from one response to the next, so its bytes are built once per policy.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Final

from apiguard.storage import Quota

__all__ = [
    "LEGACY_LIMIT",
    "LEGACY_REMAINING",
    "LEGACY_RESET",
    "RATELIMIT",
    "RATELIMIT_POLICY",
    "RETRY_AFTER",
    "check_name",
    "delta_seconds",
    "policy_field",
    "ratelimit_field",
    "ratelimit_prefixes",
]

RATELIMIT: Final = b"ratelimit"
RATELIMIT_POLICY: Final = b"ratelimit-policy"
RETRY_AFTER: Final = b"retry-after"
LEGACY_LIMIT: Final = b"x-ratelimit-limit"
LEGACY_REMAINING: Final = b"x-ratelimit-remaining"
LEGACY_RESET: Final = b"x-ratelimit-reset"

# RFC 9651 §3.3.3: an sf-string is printable ASCII, with " and \ escaped. Policy
# names are kept to a plain subset so that no escaping is ever needed.
_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/+-]{0,63}$")


def check_name(name: object) -> bool:
    """Whether `name` can name a quota policy as written (no escaping needed)."""
    return isinstance(name, str) and _NAME.match(name) is not None


def policy_field(names: Sequence[str], quotas: Sequence[Quota]) -> bytes:
    """The RateLimit-Policy value for the quotas of one policy."""
    return b", ".join(
        f'"{name}";q={quota.amount};w={quota.window}'.encode("ascii")
        for name, quota in zip(names, quotas, strict=True)
    )


def ratelimit_prefixes(names: Sequence[str]) -> tuple[bytes, ...]:
    """Each quota's `"name";r=` prefix, built once."""
    return tuple(f'"{name}";r='.encode("ascii") for name in names)


def delta_seconds(seconds: float) -> int:
    """Whole seconds, rounded up, never negative (`t`, `Retry-After`)."""
    return max(math.ceil(seconds), 0)


def ratelimit_field(
    prefixes: Sequence[bytes],
    quotas: Sequence[Quota],
    used: Sequence[int],
    reset: Sequence[float],
) -> bytes:
    """The RateLimit value: what is left of each quota, and when it comes back."""
    if len(prefixes) == 1:
        remaining = quotas[0].amount - used[0]
        return b"%s%d;t=%d" % (
            prefixes[0],
            remaining if remaining > 0 else 0,
            delta_seconds(reset[0]),
        )
    return b", ".join(
        [
            b"%s%d;t=%d" % (prefix, max(quota.amount - count, 0), delta_seconds(wait))
            for prefix, quota, count, wait in zip(prefixes, quotas, used, reset, strict=True)
        ]
    )
