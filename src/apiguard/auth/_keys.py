"""Verification keys: loading, fitting algorithms to key types, JWK sets.

A key is usable only with the algorithms of its type (an HMAC secret with
`HS*`, an RSA key with `RS*`/`PS*`, an EC key with the `ES*` of its curve, an
Ed25519/Ed448 key with `EdDSA`), intersected with the verifier's allow-list
and, for a JWK, with its own `alg`. So the classic confusions (a public key
used as an HMAC secret, an ES384 signature checked with a P-256 key) have no
code path. Signatures are checked by PyJWT's algorithm objects on keys
prepared once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, Final, TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
    load_ssh_public_key,
)
from jwt.algorithms import (
    Algorithm,
    ECAlgorithm,
    HMACAlgorithm,
    OKPAlgorithm,
    RSAAlgorithm,
    get_default_algorithms,
)
from jwt.exceptions import PyJWTError
from jwt.utils import is_pem_format, is_ssh_key

from apiguard.errors import ConfigError

__all__ = [
    "ASYMMETRIC",
    "HMAC",
    "SUPPORTED",
    "KeySet",
    "VerifyingKey",
    "check_algorithms",
    "key_from_jwk",
    "load_key",
    "parse_jwks",
]

#: HMAC algorithms and the least secret length, in bytes, each needs
#: (RFC 7518 §3.2: a key of the same size as the hash output or larger).
HMAC: Final = {"HS256": 32, "HS384": 48, "HS512": 64}
_RSA: Final = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_BY_CURVE: Final = {
    "secp256r1": "ES256",
    "secp384r1": "ES384",
    "secp521r1": "ES512",
    "secp256k1": "ES256K",
}
_EDDSA: Final = frozenset({"EdDSA"})
ASYMMETRIC: Final = _RSA | frozenset(_EC_BY_CURVE.values()) | _EDDSA
SUPPORTED: Final = frozenset(HMAC) | ASYMMETRIC
_MIN_RSA_BITS: Final = 2048

_ALGORITHMS: Final[dict[str, Algorithm]] = {
    name: algorithm for name, algorithm in get_default_algorithms().items() if name in SUPPORTED
}

PublicKey: TypeAlias = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)
_PUBLIC_TYPES: Final = (
    rsa.RSAPublicKey,
    ec.EllipticCurvePublicKey,
    ed25519.Ed25519PublicKey,
    ed448.Ed448PublicKey,
)
_PRIVATE_TYPES: Final = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)


def check_algorithms(option: str, algorithms: object) -> frozenset[str]:
    """The allow-list, checked: known names, one family (HMAC or asymmetric).

    Raises:
        ConfigError: empty, a string rather than a list, `none` in any
            spelling, an unknown name, or HMAC mixed with asymmetric ones.
    """
    if isinstance(algorithms, str | bytes) or not isinstance(algorithms, Iterable):
        msg = f"{option}: expected a list of algorithm names like ['RS256'], got {algorithms!r}"
        raise ConfigError(msg)
    names = list(algorithms)
    if not names:
        msg = f"{option}: the allow-list is empty; name the algorithms your issuer signs with"
        raise ConfigError(msg)
    for name in names:
        if not isinstance(name, str) or name.lower() == "none":
            msg = f"{option}: {name!r} is not allowed (unsigned tokens are never accepted)"
            raise ConfigError(msg)
        if name not in SUPPORTED:
            known = ", ".join(sorted(SUPPORTED))
            msg = f"{option}: unknown algorithm {name!r} (supported: {known})"
            raise ConfigError(msg)
    chosen = frozenset(names)
    if chosen & frozenset(HMAC) and chosen & ASYMMETRIC:
        msg = (
            f"{option}: {sorted(chosen)} mixes HMAC with asymmetric algorithms; a verifier "
            "that accepts both lets a public key be used as an HMAC secret"
        )
        raise ConfigError(msg)
    return chosen


def _public(key: Any) -> Any:
    """The public half of a private key; anything else as it is."""
    if isinstance(key, _PRIVATE_TYPES):
        return key.public_key()
    return key


def load_key(option: str, value: object) -> bytes | PublicKey:
    """A configured key: an HMAC secret (bytes) or a public key object.

    Accepts a secret (`str`/`bytes`), a PEM public key, private key or
    certificate, an OpenSSH public key, or a `cryptography` key object.
    Private keys are reduced to their public half.

    Raises:
        ConfigError: the value is none of those, or a PEM that does not load.
    """
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, bytes):
        if not value:
            msg = f"{option}: the key is empty"
            raise ConfigError(msg)
        if is_pem_format(value) or is_ssh_key(value):
            return _load_pem(option, value)
        return value
    key = _public(value)
    if isinstance(key, _PUBLIC_TYPES):
        return key
    msg = (
        f"{option}: expected an HMAC secret, a PEM key or a cryptography public key, "
        f"got {type(value).__name__}"
    )
    raise ConfigError(msg)


def _load_pem(option: str, data: bytes) -> PublicKey:
    loaded: Any
    try:
        if data.lstrip().startswith(b"-----BEGIN CERTIFICATE"):
            loaded = x509.load_pem_x509_certificate(data).public_key()
        elif is_ssh_key(data):
            loaded = load_ssh_public_key(data)
        elif b"PRIVATE KEY-----" in data:
            loaded = load_pem_private_key(data, password=None).public_key()
        else:
            loaded = load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        msg = f"{option}: the PEM key does not load ({type(exc).__name__})"
        raise ConfigError(msg) from None
    if not isinstance(loaded, _PUBLIC_TYPES):
        msg = f"{option}: unsupported key type {type(loaded).__name__}"
        raise ConfigError(msg)
    return loaded


def fitting_algorithms(key: bytes | PublicKey) -> frozenset[str]:
    """The algorithms a key of this type (and curve) can verify."""
    if isinstance(key, bytes):
        return frozenset(HMAC)
    if isinstance(key, rsa.RSAPublicKey):
        return _RSA
    if isinstance(key, ec.EllipticCurvePublicKey):
        name = _EC_BY_CURVE.get(key.curve.name)
        return frozenset((name,)) if name else frozenset()
    return _EDDSA


def _describe(key: bytes | PublicKey) -> str:
    if isinstance(key, bytes):
        return "an HMAC secret"
    if isinstance(key, rsa.RSAPublicKey):
        return f"an RSA-{key.key_size} key"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"an EC {key.curve.name} key"
    return "an EdDSA key"


class VerifyingKey:
    """One key, prepared for the algorithms it may verify.

    `alive` turns false when a refreshed key set no longer has the key, so
    that tokens it verified are dropped from the token cache.
    """

    __slots__ = ("alive", "fingerprint", "kid", "verifiers")

    def __init__(self, kid: str | None, key: bytes | PublicKey, algorithms: frozenset[str]) -> None:
        self.kid = kid
        self.alive = True
        self.verifiers: dict[str, tuple[Algorithm, Any]] = {}
        for name in sorted(algorithms):
            algorithm = _ALGORITHMS[name]
            # PyJWT's own checks: curve fits, no PEM used as an HMAC secret.
            self.verifiers[name] = (algorithm, algorithm.prepare_key(key))
        if isinstance(key, bytes):
            material = b"hmac:" + hashlib.sha256(key).digest()
        else:
            material = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        self.fingerprint = (kid, material, tuple(sorted(algorithms)))

    def verify(self, algorithm: str, signing_input: bytes, signature: bytes) -> bool:
        """Whether `signature` is this key's `algorithm` signature of `signing_input`."""
        entry = self.verifiers.get(algorithm)
        if entry is None:
            return False
        verifier, prepared = entry
        try:
            return bool(verifier.verify(signing_input, prepared, signature))
        except (ValueError, TypeError, PyJWTError):  # a malformed signature
            return False

    def __repr__(self) -> str:
        return f"VerifyingKey(kid={self.kid!r}, algorithms={sorted(self.verifiers)})"


class _Unusable(ValueError):
    """Why a loaded key cannot be used; each entry point words where it came from."""


def _fit(kid: str | None, key: bytes | PublicKey, algorithms: frozenset[str]) -> VerifyingKey:
    """The key prepared for the algorithms it fits: the checks every key passes.

    Raises:
        _Unusable: the key fits none of `algorithms`, is an HMAC secret shorter
            than a hash it would serve, or an RSA key under 2048 bits.
    """
    usable = algorithms & fitting_algorithms(key)
    if not usable:
        raise _Unusable(
            f"{_describe(key)} cannot verify {sorted(algorithms)}; the algorithms "
            "must fit the key type (HS* for secrets, RS*/PS* for RSA, ES* for EC, EdDSA)"
        )
    if isinstance(key, bytes):
        for name in sorted(usable):
            if len(key) < HMAC[name]:
                raise _Unusable(
                    f"the HMAC secret is {len(key)} bytes; {name} needs at least "
                    f"{HMAC[name]} random bytes (RFC 7518 §3.2)"
                )
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < _MIN_RSA_BITS:
        raise _Unusable(f"the RSA key has {key.key_size} bits; at least {_MIN_RSA_BITS} needed")
    try:
        return VerifyingKey(kid, key, usable)
    except (PyJWTError, ValueError, TypeError) as exc:
        raise _Unusable(f"the key is refused ({type(exc).__name__})") from None


def make_key(
    option: str, kid: str | None, value: object, algorithms: frozenset[str]
) -> VerifyingKey:
    """A configured key, fitted to the allow-list.

    Raises:
        ConfigError: the key does not load, fits none of the algorithms, is
            an HMAC secret shorter than its hash, or an RSA key under 2048 bits;
            the message starts with `option` (`key['k1']: ...`).
    """
    key = load_key(option, value)
    try:
        return _fit(kid, key, algorithms)
    except _Unusable as exc:
        msg = f"{option}: {exc}"
        raise ConfigError(msg) from None


_FROM_JWK: Final[dict[str, Any]] = {
    "RSA": RSAAlgorithm.from_jwk,
    "EC": ECAlgorithm.from_jwk,
    "OKP": OKPAlgorithm.from_jwk,
    "oct": HMACAlgorithm.from_jwk,
}


def key_from_jwk(jwk: Mapping[str, Any], algorithms: frozenset[str]) -> VerifyingKey | str:
    """A key from one JWK (RFC 7517 §4), or why it is not usable.

    `use` must be `sig` when present, `key_ops` must include `verify` when
    present, and a JWK's `alg` restricts the key to that algorithm. Private
    members are ignored: only the public half is kept. Then the checks of a
    configured key apply (type, size, fit): the reason is worded the same,
    and `parse_jwks` names the JWK it belongs to.
    """
    kty = jwk.get("kty")
    if not isinstance(kty, str) or kty not in _FROM_JWK:
        return f"unsupported kty {kty!r}"
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        return "kid is not a string"
    use = jwk.get("use")
    if use is not None and use != "sig":
        return f"use is {use!r}, not 'sig'"
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        return "key_ops does not include 'verify'"
    usable = algorithms
    alg = jwk.get("alg")
    if alg is not None:
        if not isinstance(alg, str) or alg not in algorithms:
            return f"alg {alg!r} is not allowed"
        usable = frozenset((alg,))
    try:
        key = _public(_FROM_JWK[kty](dict(jwk)))
    except (PyJWTError, ValueError, TypeError, KeyError) as exc:
        return f"does not load ({type(exc).__name__})"
    try:
        return _fit(kid, key, usable)
    except _Unusable as exc:
        return str(exc)


def parse_jwks(
    document: object, algorithms: frozenset[str]
) -> tuple[list[VerifyingKey], list[str]]:
    """The usable keys of a JWK Set, and a note on each key left out.

    Raises:
        ValueError: the document is not a JWK Set (`{"keys": [...]}`).
    """
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK Set: no 'keys' array")
    keys: list[VerifyingKey] = []
    skipped: list[str] = []
    seen: set[str | None] = set()
    for position, jwk in enumerate(document["keys"]):
        if not isinstance(jwk, Mapping):
            skipped.append(f"key {position}: not an object")
            continue
        result = key_from_jwk(jwk, algorithms)
        if isinstance(result, str):
            skipped.append(f"key {position} (kid {jwk.get('kid')!r}): {result}")
            continue
        if result.kid in seen:
            # Two keys under one kid: an exact kid match must name one key.
            skipped.append(f"key {position}: kid {result.kid!r} is used twice")
            continue
        seen.add(result.kid)
        keys.append(result)
    return keys, skipped


class KeySet:
    """The keys in force, found by the token's `kid`.

    A token's `kid` must match a key's `kid` exactly. A token without a `kid`
    is verified only when the set holds exactly one key; a key without a
    `kid` is used only when it is the only key. No token is ever tried
    against several keys.
    """

    __slots__ = ("by_kid", "keys", "only")

    def __init__(self, keys: list[VerifyingKey]) -> None:
        self.keys = keys
        self.by_kid: dict[str, VerifyingKey] = {k.kid: k for k in keys if k.kid is not None}
        self.only = keys[0] if len(keys) == 1 else None

    def find(self, kid: str | None) -> VerifyingKey | None:
        """The key for a token's `kid` (`None` when the token has none)."""
        if kid is None:
            return self.only
        key = self.by_kid.get(kid)
        if key is None and self.only is not None and self.only.kid is None:
            return self.only
        return key

    def replaced_by(self, keys: list[VerifyingKey]) -> KeySet:
        """The next key set: unchanged keys keep their identity, dropped keys die.

        Tokens in the cache point at the key that verified them; a key that
        is still published (same kid, same material, same algorithms) stays
        the same object, so those tokens stay cached.
        """
        current = {k.fingerprint: k for k in self.keys}
        kept = [current.pop(k.fingerprint, k) for k in keys]
        for gone in current.values():
            gone.alive = False
        return KeySet(kept)
