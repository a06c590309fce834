"""The store protocol (DESIGN.md contract 7): what every store offers the layers.

Two parts:

- the **rate-limit part**, that every store offers: the limiter's atomic hit
  of every quota of a policy with a cost, `Store.limiter(strategy)`; quotas
  in, a [`Verdict`][apiguard.storage.Verdict] with the figures for the
  headers out;
- the **key-value part**, `Store.kv`, for idempotency keys, stale responses
  and cross-worker state: claims with an expiry and an owner token, renewed,
  released and replaced by a value only by their owner, atomically (on Redis
  Cluster too); values are bytes. Stores that cannot do it atomically
  (`memcached://`, `mongodb://`) have `kv = None`, and a layer that needs it
  refuses them at start-up.

Layers use stores only through these two protocols, never by their type.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Sequence
from typing import Final, Literal, NamedTuple, Protocol, TypeAlias

__all__ = [
    "FIXED_WINDOW",
    "MOVING_WINDOW",
    "SLIDING_WINDOW_COUNTER",
    "STRATEGIES",
    "Acquire",
    "Claim",
    "KeyValueStore",
    "Quota",
    "Store",
    "Strategy",
    "Verdict",
    "sliding_wait",
]

#: The strategies `limits` offers, by the names `limits` gives them.
Strategy: TypeAlias = Literal["fixed-window", "moving-window", "sliding-window-counter"]
FIXED_WINDOW: Final = "fixed-window"
MOVING_WINDOW: Final = "moving-window"
SLIDING_WINDOW_COUNTER: Final = "sliding-window-counter"
STRATEGIES: Final = (FIXED_WINDOW, MOVING_WINDOW, SLIDING_WINDOW_COUNTER)


class Quota(NamedTuple):
    """One limit: `amount` units per `window` seconds, counted under `uid`.

    `uid` names the counter in the store: two quotas with one `uid` share
    their counters, so a limiter gives each of its policies' quotas its own.
    """

    uid: str
    amount: int
    window: int


class Verdict(NamedTuple):
    """A store's answer for one request against the quotas of its policy.

    Attributes:
        admitted: Whether every quota admitted the request. When one refuses,
            none of them counts it.
        used: Per quota, the units used in its window, this request included
            when admitted (for the sliding window counter, the weighted count,
            rounded down as the strategy rounds it).
        reset: Per quota, seconds until the quota gives units back: the end of
            a fixed window, the expiry of the oldest hit in a moving window,
            the moment a sliding window's weighted count drops by one.
        retry_after: Seconds until the refused request would be admitted by
            every quota that refused it; `0.0` when admitted.
        violated: The indices of the quotas that refused the request.
    """

    admitted: bool
    used: tuple[int, ...]
    reset: tuple[float, ...]
    retry_after: float = 0.0
    violated: tuple[int, ...] = ()


_EPSILON: Final = 0.001


def sliding_wait(
    previous: int, current: int, window: float, until_end: float, target: float
) -> float:
    """Seconds until a sliding window counter's weighted count is below `target`.

    The weighted count at `now + x` (with `until_end` seconds left in the
    current window) is `previous * (until_end - x) / window + current` while
    the window lasts, then `current * (window - (x - until_end)) / window`
    once the current window has become the previous one.

    The count is below `target` only strictly after the moment the formula
    gives, so a millisecond is added: a client told to wait that long is
    admitted. Returns `math.inf` when the count never gets below `target` (a
    target of zero or less).
    """
    if target <= 0:
        return math.inf
    if previous * until_end / window + current < target:
        return 0.0
    if current < target:
        # previous > 0 here: solve previous * (until_end - x) / window + current < target.
        return until_end - window * (target - current) / previous + _EPSILON
    # Within the next window: current * (window - y) / window < target, y = x - until_end.
    return until_end + window * (1.0 - target / current) + _EPSILON


class Acquire(Protocol):
    """A store's hit of every quota of a policy: `acquire(key, quotas, cost)`.

    Returns the [`Verdict`][apiguard.storage.Verdict] itself when the store
    answers without waiting (the memory store: no coroutine on the hot
    path), else an awaitable of it; the caller checks
    `type(result) is Verdict`. A failure raises (or the awaitable raises)
    [`StorageError`][apiguard.StorageError].
    """

    def __call__(
        self, key: str, quotas: Sequence[Quota], cost: int, /
    ) -> Verdict | Awaitable[Verdict]: ...


class Claim(NamedTuple):
    """What [`KeyValueStore.claim`][apiguard.storage.KeyValueStore.claim] found.

    Attributes:
        token: The owner token when the claim is now the caller's, else `None`.
        value: The value stored under the key when there is one (the key
            was claimed and then `put`), else `None`.
        note: When another caller holds a live claim on the key: the note
            that caller claimed it with (`b""` for none), else `None`.

    `token` and `value` both `None`: another caller holds a live claim.
    """

    token: str | None
    value: bytes | None = None
    note: bytes | None = None


class KeyValueStore(Protocol):
    """The key-value part of a store: claims with owner tokens, values as bytes.

    Every method takes `timeout`, the most seconds the caller may wait (the
    smaller of it and the store's own timeout applies), and raises
    [`StorageError`][apiguard.StorageError] when the store fails or times out.
    Keys are strings of any content: the store encodes them so that none can
    reach another key's slot or value.
    """

    async def claim(
        self, key: str, ttl: float, *, note: bytes = b"", timeout: float | None = None
    ) -> Claim:
        """Claim `key` for `ttl` seconds if nobody holds it; or say what holds it.

        Atomic: of two callers, one gets the token. `note` (a request's
        fingerprint, say) goes with the claim: a caller who finds the claim
        held reads it in [`Claim.note`][apiguard.storage.Claim].
        """
        ...

    async def renew(
        self, key: str, token: str, ttl: float, *, timeout: float | None = None
    ) -> bool:
        """Extend the claim to `ttl` seconds from now; `False` if `token` no longer holds it."""
        ...

    async def release(self, key: str, token: str, *, timeout: float | None = None) -> bool:
        """Drop the claim; `False` (and nothing done) if `token` does not hold it."""
        ...

    async def put(
        self,
        key: str,
        value: bytes,
        ttl: float,
        *,
        token: str | None = None,
        timeout: float | None = None,
    ) -> bool:
        """Store `value` for `ttl` seconds.

        With `token`, only over the claim that token holds (the claim becomes
        the value). Without, only where no claim is live (a value is
        replaced). `False` when refused.
        """
        ...

    async def get(self, key: str, *, timeout: float | None = None) -> bytes | None:
        """The value under `key`, or `None` (absent, expired, or only claimed)."""
        ...

    async def delete(self, key: str, *, timeout: float | None = None) -> None:
        """Forget `key`, claim or value."""
        ...


class Store(Protocol):
    """What a layer holds: a store given by URI ([`open_store`][apiguard.storage.open_store])."""

    @property
    def display(self) -> str:
        """The URI as given, passwords redacted: for logs, errors and the policy report."""
        ...

    @property
    def kv(self) -> KeyValueStore | None:
        """The key-value part, or `None` when the store has none."""
        ...

    def limiter(self, strategy: Strategy) -> Acquire:
        """The atomic hit of a policy's quotas with `strategy`."""
        ...

    async def open(self) -> None:
        """Connect now (at lifespan start-up, outside any request's timeout).

        Never raises: a store that cannot be reached yet is logged (with the
        reason, redacted) and connected again on first use; requests follow
        the layer's fail mode until then.
        """
        ...

    async def aclose(self) -> None:
        """Close the connections (at shutdown); the next call connects again."""
        ...

    async def ping(self, timeout: float | None = None) -> None:
        """Reach the store once, through its timeout and breaker (a readiness check).

        Raises:
            StorageError: the store did not answer, or its breaker is open.
        """
        ...
