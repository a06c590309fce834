"""Hostile tokens: every known JWT attack gets 401, and none a 500.

Each token is built so that the defect under test is the only thing wrong
with it: where a signature matters, it is a valid signature by the key the
service trusts (or, for the attacks that rely on it, by the attacker's key).
The tokens are built in `_hostile.py`; garbage headers, arbitrary signed
claims and JSON escapes are in `test_hostile_garbage.py`.
"""

from __future__ import annotations

import jwt
import pytest
from starlette.applications import Starlette

from apiguard import JWTAuth
from apiguard.auth._base import Failure
from tests.auth._helpers import (
    AUDIENCE,
    ISSUER,
    bearer,
    call,
    claims,
    make_app,
    raw_call,
    sign_raw,
)
from tests.auth._hostile import GOOD, HOSTILE, Keys, _header, _with_segment, trusting

pytestmark = pytest.mark.anyio

#: Why each one is refused (the decision's internal cause): every token fails
#: the check it was built to hit, not some other one by accident.
CAUSES = {
    "alg-none": "algorithm",
    "alg-None": "algorithm",
    "alg-NONE": "algorithm",
    "alg-nOnE": "algorithm",
    "alg-none-with-signature": "algorithm",
    "alg-empty": "algorithm",
    "alg-missing": "algorithm",
    "alg-not-a-string": "algorithm",
    "alg-not-allowed": "algorithm",
    "alg-of-the-other-key": "algorithm",
    "hs256-with-public-pem": "algorithm",
    "hs256-with-public-pem-no-kid": "algorithm",
    "hs256-with-public-jwk": "algorithm",
    "empty-signature": "malformed",
    "stripped-signature": "malformed",
    "truncated-signature": "signature",
    "signature-of-another-token": "signature",
    "attacker-key-same-kid": "signature",
    "ecdsa-psychic-signature": "signature",
    "ecdsa-signature-as-der": "signature",
    "kid-path-traversal": "unknown_kid",
    "kid-sql-injection": "unknown_kid",
    "kid-prefix-of-real-kid": "unknown_kid",
    "kid-real-kid-plus-suffix": "unknown_kid",
    "kid-number": "kid",
    "kid-list": "kid",
    "kid-unknown": "unknown_kid",
    "jku-header": "header",
    "x5u-header": "header",
    "embedded-jwk": "header",
    "embedded-x5c": "signature",
    "embedded-jwk-real-key-signature": "header",
    "crit-header": "header",
    "b64-false": "header",
    "nested-jwt-cty": "header",
    "typ-dpop": "typ",
    "typ-jwe": "typ",
    "typ-not-a-string": "typ",
    "expired": "expired",
    "expired-within-a-minute": "expired",
    "not-yet-valid": "not_yet_valid",
    "issued-in-the-future": "issued_in_future",
    "missing-exp": "missing_claim",
    "exp-digit-string": "claim",
    "exp-true": "claim",
    "exp-null": "claim",
    "exp-huge": "claim",
    "exp-1e999": "malformed",
    "exp-nan": "malformed",
    "nbf-infinity": "malformed",
    "iat-string": "claim",
    "wrong-aud": "audience",
    "aud-missing": "audience",
    "aud-list-without-us": "audience",
    "aud-empty-list": "audience",
    "aud-prefix": "audience",
    "aud-superstring": "audience",
    "aud-not-a-string": "audience",
    "wrong-iss": "issuer",
    "iss-prefix-of-expected": "issuer",
    "iss-expected-is-prefix": "issuer",
    "iss-substring": "issuer",
    "iss-other-case": "issuer",
    "iss-missing": "issuer",
    "iss-list": "issuer",
    "sub-not-a-string": "claim",
    "no-subject": "subject",
    "scope-not-a-string": "claim",
    "one-segment": "malformed",
    "four-segments": "malformed",
    "five-segments-jwe": "malformed",
    "not-base64": "malformed",
    "standard-base64-alphabet": "malformed",
    "padding-on-header": "malformed",
    "padding-on-signature": "malformed",
    "non-canonical-signature": "malformed",
    "impossible-length": "malformed",
    "header-not-json": "malformed",
    "payload-not-json": "malformed",
    "payload-array": "malformed",
    "payload-string": "malformed",
    "payload-trailing-garbage": "malformed",
    "header-array": "malformed",
    "duplicate-alg": "malformed",
    "duplicate-kid": "malformed",
    "duplicate-exp": "malformed",
    "duplicate-sub": "malformed",
    "duplicate-nested": "malformed",
    "utf16-payload": "malformed",
    "utf16-header": "malformed",
    "utf8-bom-payload": "malformed",
    "invalid-utf8-payload": "malformed",
    "lone-high-surrogate-sub": "malformed",
    "lone-low-surrogate-sub": "malformed",
    "reversed-surrogate-pair": "malformed",
    "lone-surrogate-member-name": "malformed",
    "lone-surrogate-in-list": "malformed",
    "lone-surrogate-kid": "malformed",
    "deeply-nested": "malformed",
    "oversized": "oversized",
    "dots-only": "malformed",
}


@pytest.fixture(scope="module")
def verifier(keys: Keys) -> JWTAuth:
    """Trusts the real RS256 and ES256 keys, by kid."""
    return trusting(keys)


@pytest.fixture(scope="module")
def app(verifier: JWTAuth) -> Starlette:
    return make_app(verifier)


async def test_the_good_token_is_accepted(app: Starlette, keys: Keys) -> None:
    """The baseline every hostile token departs from: it passes."""
    for key in (keys["RS256"], keys["ES256"]):
        response = await call(app, headers=bearer(sign_raw(key, _header(key), GOOD)))
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_hostile_token_gets_401(app: Starlette, keys: Keys, name: str) -> None:
    token = HOSTILE[name](keys)
    status, headers, body = await raw_call(app, [(b"authorization", b"Bearer " + token.encode())])
    assert status == 401, body
    assert (b"www-authenticate", b'Bearer realm="api", error="invalid_token"') in headers


def test_every_hostile_token_has_its_expected_cause() -> None:
    assert set(CAUSES) == set(HOSTILE)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_token_is_refused_for_its_own_reason(
    verifier: JWTAuth, keys: Keys, name: str
) -> None:
    result = verifier.check(HOSTILE[name](keys).encode())
    assert isinstance(result, Failure)
    assert result.cause == CAUSES[name]


async def test_whitespace_inside_a_token_is_a_malformed_request(app: Starlette, keys: Keys) -> None:
    """A bearer credential with inner whitespace breaks RFC 6750's syntax: 400."""
    token = _with_segment(1, lambda s: s[:10] + "\t" + s[10:])(keys)
    status, _, _ = await raw_call(app, [(b"authorization", b"Bearer " + token.encode())])
    assert status == 400


PYJWT_ACCEPTS = [
    "duplicate-alg",
    "duplicate-exp",
    "duplicate-sub",
    "exp-digit-string",
    "padding-on-signature",
    "utf16-payload",
    "typ-dpop",
    "oversized",
    "lone-surrogate-member-name",
]


@pytest.mark.parametrize("name", PYJWT_ACCEPTS)
def test_pyjwt_alone_accepts_what_strict_parsing_refuses(keys: Keys, name: str) -> None:
    """Why the layer parses before PyJWT: correctly configured, PyJWT takes these."""
    token = HOSTILE[name](keys)
    decoded = jwt.decode(
        token,
        keys["RS256"].verification_key,
        algorithms=["RS256"],
        audience=AUDIENCE,
        issuer=ISSUER,
    )
    assert decoded["sub"] == "ada"


async def test_non_canonical_signature_is_otherwise_valid(app: Starlette, keys: Keys) -> None:
    """The flipped spelling decodes to the very bytes of a valid signature."""
    import base64

    token = HOSTILE["non-canonical-signature"](keys)
    signature = token.rsplit(".", 1)[1]
    padded = signature + "=" * (-len(signature) % 4)
    original = sign_raw(keys["RS256"], _header(keys["RS256"]), GOOD).rsplit(".", 1)[1]
    assert base64.urlsafe_b64decode(padded) == base64.urlsafe_b64decode(
        original + "=" * (-len(original) % 4)
    )
    assert signature != original


async def test_hs_token_is_refused_when_the_secret_matches_but_hs_is_not_allowed(
    keys: Keys,
) -> None:
    """An HMAC secret verifier never accepts RS256, and the reverse (start-up fit)."""
    hs = keys["HS256"]
    app = make_app(JWTAuth(key=hs.verification_key, algorithms=["HS256"], audience=AUDIENCE))
    assert (await call(app, headers=bearer(hs.token(claims())))).status_code == 200
    rs_token = keys["RS256"].token(claims())
    assert (await call(app, headers=bearer(rs_token))).status_code == 401
