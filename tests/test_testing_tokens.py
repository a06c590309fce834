"""apiguard.testing's token helpers: keys for every algorithm, tokens on the frozen clock."""

from __future__ import annotations

import jwt
import pytest

from apiguard.testing import FrozenClock, generate_key, jwks, mint_token


@pytest.mark.parametrize(
    "alg", ["HS256", "HS384", "HS512", "RS256", "PS256", "ES256", "ES384", "ES512", "EdDSA"]
)
def test_generated_keys_sign_tokens_pyjwt_verifies(alg: str) -> None:
    key = generate_key(alg, kid="k1")
    token = mint_token(key, {"sub": "ada"})
    assert jwt.get_unverified_header(token)["kid"] == "k1"
    claims = jwt.decode(token, key.verification_key, algorithms=[alg])
    assert claims["sub"] == "ada"


def test_hmac_secrets_are_as_long_as_the_hash() -> None:
    assert len(generate_key("HS256").verification_key) == 32
    assert len(generate_key("HS512").verification_key) == 64


def test_tokens_are_timed_by_the_frozen_clock() -> None:
    with FrozenClock(wall=1_700_000_000):
        claims = jwt.decode(
            mint_token(generate_key("HS256"), {"sub": "ada"}, expires_in=60),
            options={"verify_signature": False},
        )
    assert (claims["iat"], claims["exp"]) == (1_700_000_000, 1_700_000_060)


def test_claims_and_headers_override_the_defaults() -> None:
    key = generate_key("ES256", kid="k1")
    token = key.token({"exp": 5, "iat": 1}, headers={"kid": "k2", "typ": "at+jwt"})
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": "k2", "typ": "at+jwt"}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["exp"], claims["iat"]) == (5, 1)


def test_no_exp_and_no_kid() -> None:
    key = generate_key("RS256", kid=None)
    token = key.token({"sub": "ada"}, expires_in=None)
    assert "kid" not in jwt.get_unverified_header(token)
    assert "exp" not in jwt.decode(token, options={"verify_signature": False})


def test_jwks_publishes_public_keys_only() -> None:
    rsa_key, ec_key = generate_key("RS256", kid="r"), generate_key("ES256", kid="e")
    document = jwks(rsa_key, ec_key)
    assert [(k["kid"], k["kty"], k["alg"], k["use"]) for k in document["keys"]] == [
        ("r", "RSA", "RS256", "sig"),
        ("e", "EC", "ES256", "sig"),
    ]
    assert all("d" not in k for k in document["keys"])
    assert rsa_key.public_pem().startswith("-----BEGIN PUBLIC KEY-----")


def test_hmac_keys_have_no_public_half() -> None:
    with pytest.raises(TypeError, match="no public key"):
        generate_key("HS256").public_pem()


def test_unknown_algorithm_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown algorithm 'XS256'"):
        generate_key("XS256")
