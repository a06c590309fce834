"""`JWTAuth`: bearer JWTs verified with configured keys, a JWKS URL, or OIDC discovery."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, NamedTuple, TypeAlias

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
from apiguard.auth._claims import ClaimRules
from apiguard.auth._ecdsa import CURVES, low_s
from apiguard.auth._header import BAD_ALGORITHM, MALFORMED_TOKEN, HeaderCheck
from apiguard.auth._jose import decode_json_object, decode_segment, encode_segment, foreign_bytes
from apiguard.auth._keys import HMAC, KeySet, VerifyingKey, check_algorithms, make_key, parse_jwks
from apiguard.auth._options import (
    Location,
    check_int,
    check_seconds,
    check_strings,
    parse_location,
)
from apiguard.auth.jwks import RemoteKeys, StaticKeys, check_url
from apiguard.errors import ConfigError
from apiguard.layer import checked
from apiguard.principal import Principal

__all__ = ["JWTAuth", "PrincipalHook"]

logger = logging.getLogger("apiguard.auth")

#: Maps the principal built from a verified token to the one to use: add a
#: plan, rename the id, look the caller up. `None` refuses the token (401).
PrincipalHook: TypeAlias = Callable[[Principal], "Principal | Awaitable[Principal | None] | None"]

# Why a token was refused: internal codes, for decisions and debug logs only.
OVERSIZED: Final = Failure("invalid", "oversized")
UNKNOWN_KID: Final = Failure("invalid", "unknown_kid")
BAD_SIGNATURE: Final = Failure("invalid", "signature")
REFUSED_BY_HOOK: Final = Failure("invalid", "refused")
KEYS_UNAVAILABLE: Final = Failure("unavailable", "keys_unavailable")
HOOK_FAILED: Final = Failure("unavailable", "principal_hook")


class _Signed(NamedTuple):
    """A token that passed the cheap checks, waiting for its key."""

    signing_input: bytes
    alg: str
    signature: bytes
    claims: dict[str, Any]


_sha256: Final = hashlib.sha256


class JWTAuth(Authenticator):
    """Bearer JWTs (RFC 7519) checked with PyJWT's algorithms after strict parsing.

    Give exactly one key source: `key` (an HMAC secret, a PEM or
    `cryptography` public key, or a mapping of `kid` to such keys), `jwks` (a
    JWK Set document), `jwks_url`, or only `issuer` (the JWKS URL is then
    found by OpenID Connect discovery). Remote keys are fetched on first use,
    never at start-up.

    Args:
        algorithms: The allow-list, required: e.g. `["RS256"]`. Each must fit
            the key type; HMAC and asymmetric algorithms never mix.
        audience: The `aud` this service answers to (a string or a list),
            required; `None` accepts only tokens without `aud` (RFC 7519
            §4.1.3: a token with an `aud` not naming the service is refused).
        key: Configured keys (see above). Secrets shorter than the hash
            (32 bytes for HS256) and RSA keys under 2048 bits are refused.
        jwks: A JWK Set document (`{"keys": [...]}`) given inline.
        jwks_url: Where to fetch the JWK Set (https; http only on loopback
            unless `allow_insecure_http`).
        issuer: The exact `iss` required (no prefix or normalisation).
        leeway: Seconds of clock skew allowed for `exp`, `nbf` and `iat`.
        required_claims: Claims that must be present; `exp` by default.
        scopes_claim: The claim holding the scopes (a space-separated string
            or a list). By default `scope`, then `scp`.
        principal: A hook given the principal built from the token (id from
            `sub`, else `client_id`, else `azp`; scopes; `method="jwt"`;
            the claims), returning the principal to use, or `None` to refuse
            the token. May be async. Its result is cached with the token.
        token_locations: Where tokens are read: `"authorization"` (the
            `Authorization: Bearer` header, the default), `"query"` (the
            `access_token` parameter, RFC 6750 §2.3: it ends up in access
            logs), `"query:<name>"`, `"cookie:<name>"`, `"header:<Name>"`.
            A token found in two places is a malformed request.
        token_types: The `typ` header values accepted when `typ` is present,
            compared case-insensitively without the `application/` prefix.
        max_token_bytes: Longer tokens are refused before anything else.
        cache_size: How many verified tokens to keep (by SHA-256 of the
            token, never past `exp`); 0 disables the cache. An ECDSA token
            (`ES256`, `ES384`, `ES512`, `ES256K`) has two valid spellings,
            `(r, s)` and `(r, n - s)`, both accepted as ECDSA allows: it is
            kept under its low-s spelling, `s = min(s, n - s)`, so either
            spelling finds one entry, and the grant's `digest` is the same.
        timeout: Seconds any I/O may take: a JWKS or discovery fetch, an
            async `principal` hook.
        jwks_cache_ttl: Seconds a fetched key set is kept when the response
            has no `Cache-Control: max-age` (which is honoured between
            `jwks_min_refresh_interval` and one day).
        jwks_min_refresh_interval: A token with an unknown `kid` triggers a
            refresh at most once per this many seconds.
        allow_insecure_http: Allow an `http://` JWKS or issuer URL off
            loopback (inside a trusted network only).

    Raises:
        ConfigError: an option is missing, invalid, or insecure.

    Examples:
        >>> auth = JWTAuth(
        ...     jwks_url="https://id.example/.well-known/jwks.json",
        ...     issuer="https://id.example/",
        ...     audience="orders",
        ...     algorithms=["RS256"],
        ... )
    """

    name = "jwt"
    scheme = "Bearer"
    error_codes = True
    bearer_format = "JWT"

    @checked("JWTAuth")
    def __init__(
        self,
        *,
        algorithms: Sequence[str],
        audience: str | Sequence[str] | None,
        key: object = None,
        jwks: Mapping[str, Any] | None = None,
        jwks_url: str | None = None,
        issuer: str | None = None,
        leeway: float = 5.0,
        required_claims: Sequence[str] = ("exp",),
        scopes_claim: str | None = None,
        principal: PrincipalHook | None = None,
        token_locations: Sequence[str] = ("authorization",),
        token_types: Sequence[str] = ("JWT", "at+jwt"),
        max_token_bytes: int = 8192,
        cache_size: int = 10_000,
        timeout: float = 5.0,
        jwks_cache_ttl: float = 300.0,
        jwks_min_refresh_interval: float = 30.0,
        allow_insecure_http: bool = False,
    ) -> None:
        self._algorithms = check_algorithms("algorithms", algorithms)
        self._rules = ClaimRules(
            audience=audience,
            issuer=issuer,
            leeway=leeway,
            required_claims=required_claims,
            scopes_claim=scopes_claim,
        )
        self._issuer = issuer
        hook: object = principal  # typed a callable, but users pass anything
        if hook is not None and not callable(hook):
            msg = f"principal: expected a callable (principal -> principal), got {hook!r}"
            raise ConfigError(msg)
        self._hook = principal
        types = check_strings("token_types", token_types)
        self._types = frozenset(t.lower().removeprefix("application/") for t in types)
        self._max_bytes = check_int("max_token_bytes", max_token_bytes, low=64, high=1_048_576)
        self._cache_size = check_int("cache_size", cache_size, low=0, high=10_000_000)
        self._timeout = check_seconds("timeout", timeout, low=0.001, high=120.0)
        # Verified tokens until their `exp`, with the key that verified them
        # (a key dropped from the key set takes its tokens with it).
        self._cache: ExpiringCache[tuple[Grant, VerifyingKey]] = ExpiringCache(
            self._cache_size, wall=True
        )
        self._header = HeaderCheck(self._algorithms, self._types)
        self._init_locations(token_locations)
        self._keys = self._init_keys(
            key,
            jwks,
            jwks_url,
            check_seconds("jwks_cache_ttl", jwks_cache_ttl, low=1.0, high=86_400.0),
            check_seconds(
                "jwks_min_refresh_interval", jwks_min_refresh_interval, low=1.0, high=86_400.0
            ),
            bool(allow_insecure_http),
        )
        self._remote = isinstance(self._keys, RemoteKeys)

    def _init_locations(self, token_locations: Sequence[str]) -> None:
        specs = check_strings("token_locations", token_locations, allow_empty=False)
        if len(set(specs)) != len(specs):
            msg = f"token_locations: {list(specs)!r} lists a location twice"
            raise ConfigError(msg)
        self._from_authorization = "authorization" in specs
        self._extra: tuple[Location, ...] = tuple(
            location
            for spec in specs
            if (location := parse_location("token_locations", spec)) is not None
        )
        names = {location.header for location in self._extra if location.header}
        if self._from_authorization:
            names.add(b"authorization")
        self.header_names = frozenset(names)
        self.locations = frozenset(
            ["authorization:bearer"] * self._from_authorization + [x.spec for x in self._extra]
        )
        if not self._extra:  # the usual case, picked once: Authorization only
            self.find = self._find_bearer  # type: ignore[method-assign]

    def _init_keys(
        self,
        key: object,
        jwks: Mapping[str, Any] | None,
        jwks_url: str | None,
        cache_ttl: float,
        min_interval: float,
        allow_http: bool,
    ) -> StaticKeys | RemoteKeys:
        given = [
            name
            for name, value in (("key", key), ("jwks", jwks), ("jwks_url", jwks_url))
            if value is not None
        ]
        if len(given) > 1:
            msg = f"{' and '.join(given)}: give one source of keys, not {len(given)}"
            raise ConfigError(msg)
        if key is not None:
            return StaticKeys(KeySet(self._configured_keys(key)))
        if jwks is not None:
            keys, skipped = _static_jwks(jwks, self._algorithms)
            if skipped:
                msg = f"jwks: {skipped[0]}"
                raise ConfigError(msg)
            return StaticKeys(KeySet(keys))
        if jwks_url is None and self._issuer is None:
            msg = "key, jwks, jwks_url or issuer: give one (issuer alone uses OIDC discovery)"
            raise ConfigError(msg)
        if self._algorithms & frozenset(HMAC):
            msg = (
                f"algorithms: {sorted(self._algorithms)} are HMAC; a key server publishes "
                "public keys only (give the secret as key=...)"
            )
            raise ConfigError(msg)
        if jwks_url is not None:
            check_url("jwks_url", jwks_url, allow_http=allow_http)
        else:
            check_url("issuer", self._issuer, allow_http=allow_http)
        return RemoteKeys(
            algorithms=self._algorithms,
            jwks_url=jwks_url,
            issuer=self._issuer,
            timeout=self._timeout,
            cache_ttl=cache_ttl,
            min_refresh_interval=min_interval,
            allow_http=allow_http,
        )

    def _configured_keys(self, key: object) -> list[VerifyingKey]:
        if not isinstance(key, Mapping):
            return [make_key("key", None, key, self._algorithms)]
        if not key:
            msg = "key: the mapping of kid to key is empty"
            raise ConfigError(msg)
        keys = []
        for kid, value in key.items():
            if not isinstance(kid, str) or not kid:
                msg = f"key: kid {kid!r} is not a non-empty string"
                raise ConfigError(msg)
            keys.append(make_key(f"key[{kid!r}]", kid, value, self._algorithms))
        return keys

    # -- finding the token -------------------------------------------------------

    def _find_bearer(
        self, headers: Mapping[bytes, list[bytes]], scope: Scope
    ) -> bytes | Malformed | None:
        values = headers.get(b"authorization")
        return None if values is None else bearer_credential(values, b"bearer")

    def find(self, headers: Mapping[bytes, list[bytes]], scope: Scope) -> bytes | Malformed | None:
        """The bearer token, `MALFORMED` (sent twice, broken header), or `None`."""
        found: bytes | Malformed | None = None
        if self._from_authorization:
            values = headers.get(b"authorization")
            if values:
                found = bearer_credential(values, b"bearer")
                if found is MALFORMED:
                    return found
        for location in self._extra:
            token = location.find(headers, scope)
            if token is None:
                continue
            if token is MALFORMED or found is not None:
                # RFC 6750 §3.1: more than one method is invalid_request.
                return MALFORMED
            found = token
        return found

    # -- checking it -------------------------------------------------------------

    def check(self, credential: bytes) -> CheckResult:
        """A cached grant, a verification, or an awaitable when keys must be fetched."""
        if len(credential) > self._max_bytes:
            return OVERSIZED
        digest = _sha256(credential).digest()
        hit = self._cache.get(digest)  # inlined `_cached`: the hot path
        if hit is not None:
            if hit[1].alive:
                if self._remote:
                    self._keys.poll()
                return hit[0]
            self._cache.discard(digest)
        return self._verify(credential, digest)

    def _cached(self, digest: bytes) -> Grant | None:
        """The cached grant of a token's canonical digest, if its key is still in force."""
        hit = self._cache.get(digest)
        if hit is None:
            return None
        if not hit[1].alive:
            self._cache.discard(digest)
            return None
        if self._remote:
            self._keys.poll()
        return hit[0]

    def _verify(self, token: bytes, digest: bytes) -> CheckResult:
        # Cheap checks first: shape, header, alg, kid, payload; the signature last.
        parts = token.split(b".")
        if len(parts) != 3:
            return malformed_or(token, MALFORMED_TOKEN)
        header = self._header(parts[0])
        if type(header) is Failure:
            return malformed_or(token, header)
        alg, kid = header  # type: ignore[misc]
        keys = self._keys.current
        key = keys.find(kid) if keys is not None else None
        if key is None and keys is not None and not self._can_refresh():
            return UNKNOWN_KID
        if foreign_bytes(token):  # the header segment was checked with the header
            return malformed_or(token, MALFORMED_TOKEN)
        signature = decode_segment(parts[2])
        if signature is None:
            return MALFORMED_TOKEN
        signing_input = token[: len(parts[0]) + 1 + len(parts[1])]
        curve = CURVES.get(alg)
        if curve is not None:
            # ECDSA accepts (r, s) and (r, n - s) alike (see `_ecdsa`): tokens
            # are cached under their low-s spelling, so a high-s one, which
            # `check` missed, is found there: no second signature, no second entry.
            canonical = low_s(signature, curve)
            if canonical is not signature:
                digest = _sha256(signing_input + b"." + encode_segment(canonical)).digest()
                grant = self._cached(digest)
                if grant is not None:
                    return grant
        payload = decode_segment(parts[1])
        claims = decode_json_object(payload) if payload is not None else None
        if claims is None:
            return MALFORMED_TOKEN
        signed = _Signed(signing_input, alg, signature, claims)
        if key is None:
            return self._verify_later(signed, digest, kid)
        if self._remote:
            self._keys.poll()
        return self._finish(signed, digest, key)

    def _can_refresh(self) -> bool:
        keys = self._keys
        return isinstance(keys, RemoteKeys) and keys.may_refresh_for_unknown_kid()

    async def _verify_later(
        self, signed: _Signed, digest: bytes, kid: str | None
    ) -> Grant | Failure:
        remote = self._keys
        if not isinstance(remote, RemoteKeys):  # pragma: no cover - static keys never wait
            return UNKNOWN_KID
        keys = remote.current
        if keys is None:
            keys = await remote.load()
            if keys is None:
                return KEYS_UNAVAILABLE
        key = keys.find(kid)
        if key is None:
            keys = await remote.refresh_for_unknown_kid()
            key = keys.find(kid) if keys is not None else None
            if key is None:
                return UNKNOWN_KID
        result = self._finish(signed, digest, key)
        if type(result) is Grant or type(result) is Failure:
            return result
        return await result  # type: ignore[misc,no-any-return]

    def _finish(self, signed: _Signed, digest: bytes, key: VerifyingKey) -> CheckResult:
        if signed.alg not in key.verifiers:
            return BAD_ALGORITHM  # e.g. a JWK restricted to another alg
        if not key.verify(signed.alg, signed.signing_input, signed.signature):
            return BAD_SIGNATURE
        claims = signed.claims
        checked = self._rules.check(claims)
        if isinstance(checked, Failure):
            return checked
        principal, expires = checked
        if self._hook is None:
            return self._grant(Grant(principal, digest), digest, expires, key)
        try:
            mapped = self._hook(principal)
        except Exception:
            logger.exception("apiguard.auth: the principal hook raised")
            return HOOK_FAILED
        if inspect.isawaitable(mapped):
            return self._await_hook(mapped, digest, expires, key)
        return self._mapped(mapped, digest, expires, key)

    async def _await_hook(
        self,
        pending: Awaitable[Principal | None],
        digest: bytes,
        expires: float | None,
        key: VerifyingKey,
    ) -> Grant | Failure:
        try:
            async with asyncio.timeout(self._timeout):
                mapped = await pending
        except Exception:
            logger.exception("apiguard.auth: the principal hook failed or timed out")
            return HOOK_FAILED
        return self._mapped(mapped, digest, expires, key)

    def _mapped(
        self, mapped: object, digest: bytes, expires: float | None, key: VerifyingKey
    ) -> Grant | Failure:
        if mapped is None:
            return REFUSED_BY_HOOK
        if not isinstance(mapped, Principal):
            logger.error("apiguard.auth: the principal hook returned %s", type(mapped).__name__)
            return HOOK_FAILED
        return self._grant(Grant(with_method(mapped, self.name), digest), digest, expires, key)

    def _grant(
        self, grant: Grant, digest: bytes, expires: float | None, key: VerifyingKey
    ) -> Grant:
        if expires is not None:
            self._cache.put(digest, (grant, key), expires)
        return grant

    @property
    def may_be_unavailable(self) -> bool:
        """Remote keys or an async principal hook can fail: then 503."""
        return self._remote or self._hook is not None

    # -- for tests and telemetry -------------------------------------------------

    @property
    def keys(self) -> StaticKeys | RemoteKeys:
        """The key source: configured keys, or the remote key set and its counters."""
        return self._keys

    def clear_cache(self) -> None:
        """Forget every verified token."""
        self._cache.clear()

    def __repr__(self) -> str:
        source = "remote" if self._remote else "static"
        return f"JWTAuth(algorithms={sorted(self._algorithms)}, keys={source})"


def _static_jwks(
    jwks: Mapping[str, Any], algorithms: frozenset[str]
) -> tuple[list[VerifyingKey], list[str]]:
    try:
        keys, skipped = parse_jwks(jwks, algorithms)
    except ValueError as exc:
        msg = f"jwks: {exc}"
        raise ConfigError(msg) from None
    if not keys and not skipped:
        skipped = ["the key set is empty"]
    return keys, skipped
