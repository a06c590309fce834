from __future__ import annotations

import pytest

from apiguard.testing import SigningKey, generate_key

ALGORITHMS = ["HS256", "HS384", "HS512", "RS256", "PS256", "ES256", "ES384", "ES512", "EdDSA"]


@pytest.fixture(scope="session")
def keys() -> dict[str, SigningKey]:
    """One signing key per algorithm, made once (RSA key generation takes a while)."""
    return {alg: generate_key(alg, kid=f"{alg.lower()}-1") for alg in ALGORITHMS}


@pytest.fixture(scope="session")
def rs256(keys: dict[str, SigningKey]) -> SigningKey:
    return keys["RS256"]


@pytest.fixture(scope="session")
def other_rs256() -> SigningKey:
    """A second RSA key: an attacker's, or the next one in a rotation."""
    return generate_key("RS256", kid="rs256-2")


@pytest.fixture(scope="session")
def es256(keys: dict[str, SigningKey]) -> SigningKey:
    return keys["ES256"]


@pytest.fixture(scope="session")
def hs256(keys: dict[str, SigningKey]) -> SigningKey:
    return keys["HS256"]
