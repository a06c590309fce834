"""Verification keys: one set of checks, whether a key is configured or comes from a JWK."""

from __future__ import annotations

import re
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import get_default_algorithms

from apiguard import ConfigError, JWTAuth
from tests.auth._helpers import AUDIENCE


def _jwk(material: Any, kid: str) -> dict[str, Any]:
    """`material` as a bare JWK: its public members and `kid`, no `alg` to narrow it."""
    public = material if isinstance(material, bytes) else material.public_key()
    if isinstance(material, bytes):
        family = "HS256"
    elif isinstance(material, rsa.RSAPrivateKey):
        family = "RS256"
    elif isinstance(material, ec.EllipticCurvePrivateKey):
        family = "ES256"
    else:
        family = "EdDSA"
    jwk: dict[str, Any] = get_default_algorithms()[family].to_jwk(public, as_dict=True)
    return {**jwk, "kid": kid}


#: (key material, allow-list, why it is refused), each refused the same way
#: whether it is given as `key=` or published in a JWK Set.
UNUSABLE = [
    pytest.param(
        b"s" * 12,
        ["HS256"],
        "the HMAC secret is 12 bytes; HS256 needs at least 32 random bytes (RFC 7518 §3.2)",
        id="short-secret",
    ),
    pytest.param(
        b"s" * 40,
        ["HS256", "HS384", "HS512"],
        "the HMAC secret is 40 bytes; HS384 needs at least 48 random bytes",
        id="secret-short-for-one",
    ),
    pytest.param(
        rsa.generate_private_key(public_exponent=65537, key_size=1024),  # noqa: S505 - under test
        ["RS256"],
        "the RSA key has 1024 bits; at least 2048 needed",
        id="rsa-1024",
    ),
    pytest.param(
        ec.generate_private_key(ec.SECP256R1()),
        ["ES384"],
        "an EC secp256r1 key cannot verify ['ES384']; the algorithms must fit the key type",
        id="p256-for-es384",
    ),
    pytest.param(
        ed25519.Ed25519PrivateKey.generate(),
        ["ES256"],
        "an EdDSA key cannot verify ['ES256']",
        id="ed25519-for-es256",
    ),
]


@pytest.mark.parametrize(("material", "algorithms", "reason"), UNUSABLE)
def test_a_configured_key_is_refused_naming_its_option(
    material: Any, algorithms: list[str], reason: str
) -> None:
    given = material if isinstance(material, bytes) else material.public_key()
    with pytest.raises(ConfigError, match=re.escape(f"key['k1']: {reason}")):
        JWTAuth(key={"k1": given}, algorithms=algorithms, audience=AUDIENCE)


@pytest.mark.parametrize(("material", "algorithms", "reason"), UNUSABLE)
def test_a_jwk_is_refused_for_the_same_reason_naming_the_jwk(
    material: Any, algorithms: list[str], reason: str
) -> None:
    document = {"keys": [_jwk(material, "k1")]}
    with pytest.raises(ConfigError, match=re.escape(f"jwks: key 0 (kid 'k1'): {reason}")):
        JWTAuth(jwks=document, algorithms=algorithms, audience=AUDIENCE)


def test_a_jwk_alg_narrows_the_key_before_the_shared_checks() -> None:
    """A JWK's own `alg` is a JWK rule; the fit to its type is the shared one."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**_jwk(rsa_key, "k1"), "alg": "ES256"}
    with pytest.raises(ConfigError, match=re.escape("an RSA-2048 key cannot verify ['ES256']")):
        JWTAuth(jwks={"keys": [jwk]}, algorithms=["ES256", "RS256"], audience=AUDIENCE)
