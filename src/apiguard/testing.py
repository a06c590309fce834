"""Helpers for testing apps that use apiguard: a frozen clock, state resets, tokens."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from apiguard._clock import clock

__all__ = ["FrozenClock", "SigningKey", "generate_key", "jwks", "mint_token", "reset_state"]


class FrozenClock:
    """A clock that stands still until told to move, for every apiguard layer.

    Use it as a context manager; inside, every layer reads this clock's
    monotonic and wall time, which move only with [`advance`][apiguard.testing.FrozenClock.advance].
    On leaving, the clock is as it was before (the real one, or an outer
    `FrozenClock` when they are nested).

    Args:
        wall: The wall time to start at, in seconds since the epoch.
        monotonic: The monotonic time to start at.

    Examples:
        >>> with FrozenClock(wall=1_700_000_000.0) as frozen:
        ...     frozen.advance(61)
        ...     frozen.time()
        1700000061.0
    """

    def __init__(self, *, wall: float = 1_700_000_000.0, monotonic: float = 10_000.0) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._saved: tuple[Callable[[], float], Callable[[], float]] | None = None

    def time(self) -> float:
        """The frozen wall time."""
        return self._wall

    def monotonic(self) -> float:
        """The frozen monotonic time."""
        return self._monotonic

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by `seconds`."""
        if seconds < 0:
            msg = f"a clock cannot go back: advance({seconds!r})"
            raise ValueError(msg)
        self._wall += seconds
        self._monotonic += seconds

    def __enter__(self) -> Self:
        self._saved = (clock.monotonic, clock.time)
        clock.monotonic = self.monotonic
        clock.time = self.time
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The clock as it was: the real one, or an outer FrozenClock when nested.
        if self._saved is None:  # pragma: no cover - __exit__ without __enter__
            clock.reset()
            return
        clock.monotonic, clock.time = self._saved
        self._saved = None


def reset_state() -> None:
    """Forget process-wide state between tests: the clock and the route caches."""
    from apiguard.routing import _resolver

    clock.reset()
    _resolver.reset()


# --- tokens --------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    """A key pair (or an HMAC secret) for minting test tokens.

    Attributes:
        algorithm: The JWS algorithm it signs with (`"RS256"`, `"ES256"`, ...).
        kid: The key id put in the header of the tokens it signs, if any.
        private_key: The signing key (a `cryptography` private key, or the
            secret bytes for HMAC).
    """

    algorithm: str
    kid: str | None
    private_key: Any

    @property
    def verification_key(self) -> Any:
        """What `JWTAuth(key=...)` takes: the public key, or the HMAC secret."""
        if isinstance(self.private_key, bytes):
            return self.private_key
        return self.private_key.public_key()

    def public_pem(self) -> str:
        """The public key as PEM (SubjectPublicKeyInfo); HMAC secrets have none."""
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        if isinstance(self.private_key, bytes):
            msg = "an HMAC secret has no public key"
            raise TypeError(msg)
        pem: bytes = self.verification_key.public_bytes(
            Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
        )
        return pem.decode("ascii")

    def public_jwk(self) -> dict[str, Any]:
        """The key as a JWK for a JWK Set: public members, `kid`, `alg`, `use`."""
        from jwt.algorithms import get_default_algorithms

        algorithm = get_default_algorithms()[self.algorithm]
        jwk: dict[str, Any] = algorithm.to_jwk(self.verification_key, as_dict=True)
        jwk.update(alg=self.algorithm, use="sig")
        if self.kid is not None:
            jwk["kid"] = self.kid
        return jwk

    def token(
        self,
        claims: Mapping[str, Any] | None = None,
        *,
        headers: Mapping[str, Any] | None = None,
        expires_in: float | None = 300.0,
    ) -> str:
        """Mint a token; see [`mint_token`][apiguard.testing.mint_token]."""
        return mint_token(self, claims, headers=headers, expires_in=expires_in)


def generate_key(algorithm: str = "RS256", *, kid: str | None = "test-key") -> SigningKey:
    """A fresh signing key for `algorithm`, with `kid` in the tokens it signs.

    RSA-2048 for `RS*`/`PS*`, the algorithm's curve for `ES*`, Ed25519 for
    `EdDSA`, and a random secret as long as the hash for `HS*`.

    Examples:
        >>> key = generate_key("ES256", kid="k1")
        >>> key.public_jwk()["crv"], key.public_jwk()["kid"]
        ('P-256', 'k1')
    """
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    private: Any
    if algorithm in ("HS256", "HS384", "HS512"):
        private = secrets.token_bytes(int(algorithm[2:]) // 8)
    elif algorithm[:2] in ("RS", "PS"):
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif algorithm in _CURVES:
        private = ec.generate_private_key(_CURVES[algorithm]())
    elif algorithm == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        msg = f"generate_key: unknown algorithm {algorithm!r}"
        raise ValueError(msg)
    return SigningKey(algorithm, kid, private)


def _curves() -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric import ec

    return {
        "ES256": ec.SECP256R1,
        "ES384": ec.SECP384R1,
        "ES512": ec.SECP521R1,
        "ES256K": ec.SECP256K1,
    }


_CURVES = _curves()


def mint_token(
    key: SigningKey,
    claims: Mapping[str, Any] | None = None,
    *,
    headers: Mapping[str, Any] | None = None,
    expires_in: float | None = 300.0,
) -> str:
    """A signed JWT for tests, timed by apiguard's clock (so `FrozenClock` applies).

    Args:
        key: The [`SigningKey`][apiguard.testing.SigningKey] to sign with; its
            `kid` goes in the header.
        claims: The claims; `iat` and `exp` are added unless given.
        headers: Extra or overriding header parameters.
        expires_in: Seconds until `exp`; `None` for no `exp`.

    Examples:
        >>> key = generate_key("HS256", kid=None)
        >>> token = mint_token(key, {"sub": "ada", "scope": "orders:read"})
        >>> token.count(".")
        2
    """
    import jwt

    now = int(clock.time())
    payload: dict[str, Any] = {"iat": now}
    if expires_in is not None:
        payload["exp"] = int(now + expires_in)
    payload.update(claims or {})
    header: dict[str, Any] = {"kid": key.kid} if key.kid is not None else {}
    header.update(headers or {})
    return jwt.encode(payload, key.private_key, algorithm=key.algorithm, headers=header)


def jwks(*keys: SigningKey) -> dict[str, Any]:
    """A JWK Set document (`{"keys": [...]}`) publishing the keys' public halves."""
    return {"keys": [key.public_jwk() for key in keys]}
