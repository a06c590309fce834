"""`APIKeyAuth`: API keys held as SHA-256 digests, found by the digest of the presented key."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, TypeAlias

from apiguard._clock import clock
from apiguard._types import Scope
from apiguard.auth._base import (
    MALFORMED,
    Authenticator,
    CheckResult,
    Failure,
    Grant,
    Malformed,
    bearer_credential,
    malformed_or,
    with_method,
)
from apiguard.auth._cache import ExpiringCache
from apiguard.auth._options import check_int, check_seconds
from apiguard.errors import ConfigError
from apiguard.layer import checked
from apiguard.principal import Principal

__all__ = ["APIKeyAuth", "KeyLookup", "key_digest"]

logger = logging.getLogger("apiguard.auth")

#: Finds the principal of a presented key (in a database, say), or `None`.
KeyLookup: TypeAlias = Callable[[str], "Awaitable[Principal | None] | Principal | None"]

INVALID_KEY: Final = Failure("invalid", "unknown_key")
BAD_KEY: Final = Failure("invalid", "malformed_key")
LOOKUP_FAILED: Final = Failure("unavailable", "lookup_failed")

_TOKEN: Final = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token
_VISIBLE_ASCII: Final = re.compile(rb"[\x21-\x7e]+")
_sha256: Final = hashlib.sha256


def key_digest(key: str | bytes) -> str:
    """The hex SHA-256 of an API key: what to store in a database instead of the key.

    Examples:
        >>> key_digest("k-123")[:16]
        '3605a9e4358da430'
    """
    data = key.encode("ascii") if isinstance(key, str) else key
    return hashlib.sha256(data).hexdigest()


class APIKeyAuth(Authenticator):
    """API keys from a header or an `Authorization` scheme, checked by digest.

    Keys are never kept in memory as given: each is held as its SHA-256
    digest, and a presented key is found by its own digest in one dictionary
    lookup, with no per-key loop and no string comparison that stops at the
    first differing character, so the response time says nothing about how
    close a guess was.

    Args:
        keys: Each key mapped to its principal (give each a `plan` for
            per-plan quotas). A principal without a `method` gets
            `method="api_key"`.
        lookup: Finds the principal of a key not in `keys` (in a database):
            called with the key, returns a principal or `None`. May be async.
            Store digests ([`key_digest`][apiguard.auth.apikey.key_digest])
            rather than keys, and look up by digest.
        header: The header carrying the key; `None` to read only the
            `Authorization` scheme.
        scheme: Also (or only, with `header=None`) accept
            `Authorization: <scheme> <key>`; the challenge's scheme is this,
            else `ApiKey`.
        max_key_bytes: Longer keys are refused without a lookup.
        timeout: Seconds the `lookup` may take; past it, the request is
            answered 503 (fail closed).
        cache_ttl: Seconds a key found by `lookup` is remembered (0: never);
            a revoked key keeps working this long.
        cache_size: How many looked-up keys to remember.

    Raises:
        ConfigError: an option is missing or invalid (the message never
            repeats a key).

    Examples:
        >>> auth = APIKeyAuth(keys={"k-123": Principal(id="partner", plan="pro")})
    """

    name = "api_key"

    @checked("APIKeyAuth")
    def __init__(
        self,
        *,
        keys: Mapping[str, Principal] | None = None,
        lookup: KeyLookup | None = None,
        header: str | None = "X-API-Key",
        scheme: str | None = None,
        max_key_bytes: int = 256,
        timeout: float = 2.0,
        cache_ttl: float = 60.0,
        cache_size: int = 10_000,
    ) -> None:
        self._max_bytes = check_int("max_key_bytes", max_key_bytes, low=8, high=8192)
        self._grants = self._digest_keys(keys)
        given: object = lookup  # typed a callable, but users pass anything
        if given is not None and not callable(given):
            msg = f"lookup: expected a callable (key -> principal or None), got {lookup!r}"
            raise ConfigError(msg)
        if keys is None and lookup is None:
            msg = "keys or lookup: give the keys, or a callable that finds them"
            raise ConfigError(msg)
        self._lookup = lookup
        self._timeout = check_seconds("timeout", timeout, low=0.001, high=120.0)
        self._cache_ttl = check_seconds("cache_ttl", cache_ttl, high=86_400.0)
        self._cache_size = check_int("cache_size", cache_size, low=0, high=10_000_000)
        # Keys found by `lookup`, for `cache_ttl` seconds on the monotonic clock.
        self._cache: ExpiringCache[Grant] = ExpiringCache(
            self._cache_size if self._cache_ttl > 0 else 0, wall=False
        )
        self._init_places(header, scheme)

    def _digest_keys(self, keys: Mapping[str, Principal] | None) -> dict[bytes, Grant]:
        given: object = keys  # typed a mapping, but users pass anything
        if given is None:
            return {}
        if not isinstance(given, Mapping):
            msg = f"keys: expected a mapping of key to Principal, got {type(given).__name__}"
            raise ConfigError(msg)
        grants: dict[bytes, Grant] = {}
        for position, (key, principal) in enumerate(given.items()):
            # Never echo a key: name it by its position.
            if not isinstance(key, str) or not _VISIBLE_ASCII.fullmatch(key.encode("utf-8")):
                msg = f"keys: key #{position} is not a non-empty string of visible ASCII"
                raise ConfigError(msg)
            if len(key) > self._max_bytes:
                msg = f"keys: key #{position} is longer than max_key_bytes={self._max_bytes}"
                raise ConfigError(msg)
            if not isinstance(principal, Principal):
                msg = f"keys: the principal of key #{position} is not a Principal: {principal!r}"
                raise ConfigError(msg)
            grants[hashlib.sha256(key.encode("ascii")).digest()] = Grant(
                with_method(principal, self.name)
            )
        return grants

    def _init_places(self, header: str | None, scheme: str | None) -> None:
        if header is not None:
            if not isinstance(header, str) or not _TOKEN.match(header):
                msg = f"header: {header!r} is not a header name"
                raise ConfigError(msg)
            if header.lower() in ("authorization", "cookie"):
                msg = f"header: {header!r}: use scheme='ApiKey' to read Authorization"
                raise ConfigError(msg)
        if scheme is not None and (not isinstance(scheme, str) or not _TOKEN.match(scheme)):
            msg = f"scheme: {scheme!r} is not an auth-scheme name like 'ApiKey'"
            raise ConfigError(msg)
        if header is None and scheme is None:
            msg = "header or scheme: give where the key is sent"
            raise ConfigError(msg)
        self._header = header.lower().encode("latin-1") if header else None
        self._scheme = scheme.lower().encode("latin-1") if scheme else None
        self.scheme = scheme or "ApiKey"
        self.error_codes = self.scheme.lower() == "bearer"  # RFC 6750 applies to Bearer
        names = set()
        locations = set()
        if self._header is not None:
            names.add(self._header)
            locations.add(f"header:{header.lower()}")  # type: ignore[union-attr]
        if self._scheme is not None:
            names.add(b"authorization")
            locations.add(f"authorization:{self.scheme.lower()}")
        self.header_names = frozenset(names)
        self.locations = frozenset(locations)

    def find(self, headers: Mapping[bytes, list[bytes]], scope: Scope) -> bytes | Malformed | None:
        """The presented key, `MALFORMED` if sent twice, or `None`."""
        found: bytes | Malformed | None = None
        if self._header is not None:
            values = headers.get(self._header)
            if values:
                if len(values) > 1:
                    return MALFORMED
                found = values[0]
        if self._scheme is not None:
            values = headers.get(b"authorization")
            if values:
                credential = bearer_credential(values, self._scheme)
                if credential is not None:
                    if credential is MALFORMED or found is not None:
                        return MALFORMED
                    found = credential
        return found

    def check(self, credential: bytes) -> CheckResult:
        """Find the key by digest; an awaitable only for a `lookup` not cached."""
        if len(credential) > self._max_bytes:
            return BAD_KEY
        digest = _sha256(credential).digest()
        grant = self._grants.get(digest)
        if grant is not None:
            return grant  # equal to a configured key, so of valid syntax
        if not _VISIBLE_ASCII.fullmatch(credential):
            return malformed_or(credential, BAD_KEY)  # empty, non-ASCII: no lookup
        if self._lookup is None:
            return INVALID_KEY
        cached = self._cache.get(digest)
        if cached is not None:
            return cached
        return self._look_up(credential.decode("ascii"), digest)

    async def _look_up(self, key: str, digest: bytes) -> Grant | Failure:
        lookup = self._lookup
        if lookup is None:  # pragma: no cover - checked by the caller
            return INVALID_KEY
        try:
            async with asyncio.timeout(self._timeout):
                found = lookup(key)
                if inspect.isawaitable(found):
                    found = await found
        except Exception as exc:
            # Never the key: the error type only.
            logger.error("apiguard.auth: the API key lookup failed (%s)", type(exc).__name__)
            return LOOKUP_FAILED
        result: object = found  # typed a principal, but user code returns anything
        if result is None:
            return INVALID_KEY
        if not isinstance(result, Principal):
            logger.error("apiguard.auth: the API key lookup returned %s", type(result).__name__)
            return LOOKUP_FAILED
        grant = Grant(with_method(result, self.name))
        self._cache.put(digest, grant, clock.monotonic() + self._cache_ttl)
        return grant

    @property
    def may_be_unavailable(self) -> bool:
        """A `lookup` can fail or time out: then 503."""
        return self._lookup is not None

    def clear_cache(self) -> None:
        """Forget the keys found by `lookup` (after revoking one, say)."""
        self._cache.clear()

    def __repr__(self) -> str:
        return f"APIKeyAuth(keys={len(self._grants)}, lookup={self._lookup is not None})"
