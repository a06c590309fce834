"""ECDSA tokens have two spellings, (r, s) and (r, n - s): both accepted, one cache entry."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from apiguard import JWTAuth
from apiguard.auth._base import Failure, Grant
from apiguard.auth._ecdsa import CURVES
from apiguard.auth._keys import VerifyingKey
from apiguard.testing import FrozenClock, SigningKey, generate_key
from tests.auth._helpers import AUDIENCE, ISSUER, bearer, call, claims, make_app
from tests.auth._keyserver import KeyServer, settle

pytestmark = pytest.mark.anyio

#: The order n of each curve's base point, from SEC 2 v2 §2.4.2, §2.5.1,
#: §2.6.1 and §2.4.1 (written out here, apart from the code under test).
ORDERS = {
    "ES256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "ES384": int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF"
        "581A0DB248B0A77AECEC196ACCC52973",
        16,
    ),
    "ES512": int(
        "01FF" + "FFFFFFFF" * 7 + "FFFFFFFA"
        "51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
        16,
    ),
    "ES256K": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,
}
HASHES = {"ES256": hashes.SHA256, "ES384": hashes.SHA384, "ES512": hashes.SHA512}
HASHES["ES256K"] = hashes.SHA256
ECDSA = list(ORDERS)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _split(token: str) -> tuple[str, bytes, int, int]:
    head, _, signature = token.rpartition(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    size = len(raw) // 2
    return head, raw, int.from_bytes(raw[:size], "big"), int.from_bytes(raw[size:], "big")


def flip_s(token: str, alg: str) -> str:
    """The token's other spelling: its signature with s replaced by n - s."""
    head, raw, _r, s = _split(token)
    size = len(raw) // 2
    return f"{head}.{_b64(raw[:size] + (ORDERS[alg] - s).to_bytes(size, 'big'))}"


def spellings(token: str, alg: str) -> tuple[str, str]:
    """`(low-s, high-s)`: the two spellings of one ECDSA token."""
    s = _split(token)[3]
    other = flip_s(token, alg)
    return (token, other) if s <= ORDERS[alg] // 2 else (other, token)


@pytest.fixture(scope="module")
def ec_keys() -> dict[str, SigningKey]:
    return {alg: generate_key(alg, kid=f"{alg.lower()}-1") for alg in ECDSA}


@pytest.fixture
def signature_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every signature check made, by algorithm."""
    calls: list[str] = []
    original = VerifyingKey.verify

    def counted(self: VerifyingKey, algorithm: str, signing_input: bytes, signature: bytes) -> bool:
        calls.append(algorithm)
        return original(self, algorithm, signing_input, signature)

    monkeypatch.setattr(VerifyingKey, "verify", counted)
    return calls


def verifier(key: SigningKey, **options: Any) -> JWTAuth:
    return JWTAuth(
        key=key.verification_key,
        algorithms=[key.algorithm],
        audience=AUDIENCE,
        issuer=ISSUER,
        **options,
    )


def test_the_curve_orders_are_those_of_sec2() -> None:
    assert {alg: order for alg, (order, _) in CURVES.items()} == ORDERS
    assert {alg: size for alg, (_, size) in CURVES.items()} == {
        alg: (order.bit_length() + 7) // 8 for alg, order in ORDERS.items()
    }


@pytest.mark.parametrize("alg", ECDSA)
def test_the_other_spelling_is_a_valid_ecdsa_signature(
    ec_keys: dict[str, SigningKey], alg: str
) -> None:
    """Why this matters, checked with `cryptography` alone: (r, n - s) verifies too."""
    key = ec_keys[alg]
    token = key.token(claims())
    for spelling in spellings(token, alg):
        head, _, r, s = _split(spelling)
        public = key.verification_key
        assert isinstance(public, ec.EllipticCurvePublicKey)
        der = encode_dss_signature(r, s)
        public.verify(der, head.encode(), ec.ECDSA(HASHES[alg]()))  # raises if not
    head, _, r, s = _split(token)
    with pytest.raises(InvalidSignature):  # the check itself can fail
        public.verify(encode_dss_signature(r, s ^ 1), head.encode(), ec.ECDSA(HASHES[alg]()))


@pytest.mark.parametrize("alg", ECDSA)
@pytest.mark.parametrize("first", ["low-s", "high-s"])
async def test_both_spellings_are_accepted_with_one_cache_entry_and_one_signature_check(
    ec_keys: dict[str, SigningKey], signature_checks: list[str], alg: str, first: str
) -> None:
    key = ec_keys[alg]
    auth = verifier(key)
    app = make_app(auth)
    low, high = spellings(key.token(claims()), alg)
    order = [low, high] if first == "low-s" else [high, low]
    for token in [*order, *order]:
        response = await call(app, headers=bearer(token))
        assert response.status_code == 200
        assert response.json()["name"] == "ada"
    assert signature_checks == [alg]  # the first spelling only
    assert auth._cache.keys() == [hashlib.sha256(low.encode()).digest()]


@pytest.mark.parametrize("alg", ECDSA)
def test_both_spellings_grant_the_digest_of_the_low_s_spelling(
    ec_keys: dict[str, SigningKey], alg: str
) -> None:
    key = ec_keys[alg]
    low, high = spellings(key.token(claims()), alg)
    canonical = hashlib.sha256(low.encode()).digest()
    for options in ({}, {"cache_size": 0}):
        auth = verifier(key, **options)
        grants = [auth.check(token.encode()) for token in (high, low, high)]
        assert all(type(grant) is Grant for grant in grants), grants
        assert [grant.digest for grant in grants] == [canonical] * 3  # type: ignore[union-attr]


@pytest.mark.parametrize("alg", ["HS256", "RS256", "PS256", "EdDSA"])
def test_other_algorithms_grant_the_digest_of_the_token(alg: str) -> None:
    key = generate_key(alg, kid=None)
    token = key.token(claims()).encode()
    grant = verifier(key).check(token)
    assert type(grant) is Grant
    assert grant.digest == hashlib.sha256(token).digest()


def test_a_cached_token_in_the_other_spelling_never_outlives_exp(
    ec_keys: dict[str, SigningKey], signature_checks: list[str]
) -> None:
    key = ec_keys["ES256"]
    with FrozenClock(wall=1_700_000_000) as frozen:
        auth = verifier(key, leeway=0)
        low, high = spellings(key.token(claims(), expires_in=60), "ES256")
        assert type(auth.check(low.encode())) is Grant
        frozen.advance(59)
        assert type(auth.check(high.encode())) is Grant  # from the cache
        frozen.advance(1)
        refused = auth.check(high.encode())
        assert type(refused) is Failure
        assert refused.cause == "expired"
        assert len(auth._cache) == 0
    assert signature_checks == ["ES256", "ES256"]  # the expired one was checked anew


def test_a_forged_high_s_signature_is_refused(ec_keys: dict[str, SigningKey]) -> None:
    """A high-s value that is no signature misses the cache and fails the check."""
    key = ec_keys["ES256"]
    auth = verifier(key)
    low, _ = spellings(key.token(claims()), "ES256")
    assert type(auth.check(low.encode())) is Grant
    head, raw, _r, s = _split(low)
    forged = f"{head}.{_b64(raw[:32] + (ORDERS['ES256'] - s - 1).to_bytes(32, 'big'))}"
    result = auth.check(forged.encode())
    assert type(result) is Failure
    assert result.cause == "signature"
    assert len(auth._cache) == 1


@pytest.fixture
def frozen() -> Iterator[FrozenClock]:
    with FrozenClock() as clock:
        yield clock


@pytest.mark.slow
async def test_a_key_leaving_the_set_takes_both_spellings_with_it(
    ec_keys: dict[str, SigningKey], frozen: FrozenClock
) -> None:
    """Key rotation (`key.alive`) is honoured for the spelling that is not cached as such."""
    kept_key, dropped_key = ec_keys["ES256"], generate_key("ES256", kid="es256-2")
    server = KeyServer(kept_key, dropped_key).start()
    try:
        server.cache_control = "max-age=60"
        auth = JWTAuth(
            jwks_url=server.jwks_url, algorithms=["ES256"], audience=AUDIENCE, timeout=2.0
        )
        app = make_app(auth)
        kept = spellings(kept_key.token(claims()), "ES256")
        dropped = spellings(dropped_key.token(claims()), "ES256")
        for token in (*kept, *dropped):
            assert (await call(app, headers=bearer(token))).status_code == 200
        assert len(auth._cache) == 2
        server.keys = [kept_key]  # es256-2 is revoked
        frozen.advance(61)
        assert (await call(app, headers=bearer(kept[1]))).status_code == 200  # refresh begins
        await settle(auth)
        assert server.fetches == 2
        assert (await call(app, headers=bearer(dropped[1]))).status_code == 401  # high-s
        assert (await call(app, headers=bearer(dropped[0]))).status_code == 401  # low-s
        for token in kept:
            assert (await call(app, headers=bearer(token))).status_code == 200
        assert len(auth._cache) == 1
    finally:
        server.stop()
