"""The hostile tokens: one builder per known JWT attack, each defect the only one in its token.

Where a signature matters, it is a valid signature by the key the service
trusts (or, for the attacks that rely on it, by the attacker's key). The
tests in `test_hostile_tokens.py` and `test_hostile_garbage.py` send them
to a layer that trusts the session's RS256 and ES256 keys (`trusting`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from apiguard import JWTAuth
from apiguard.testing import SigningKey, generate_key
from tests.auth._helpers import AUDIENCE, ISSUER, b64, claims, sign_raw

FUTURE = 4_102_444_800  # 2100
GOOD = {**claims(), "exp": FUTURE}
Keys = dict[str, SigningKey]


def _attacker() -> SigningKey:
    return generate_key("RS256", kid="rs256-1")  # the same kid as the real key


ATTACKER = _attacker()


def _header(key: SigningKey, **extra: Any) -> dict[str, Any]:
    return {"alg": key.algorithm, "kid": key.kid, "typ": "JWT", **extra}


def _forge_hmac(secret: bytes, kid: str | None) -> str:
    """An HS256 token whose HMAC key is public material (the key-confusion attack)."""
    header = {"alg": "HS256", "typ": "JWT", **({"kid": kid} if kid else {})}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(GOOD).encode())}"
    import hashlib
    import hmac

    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def _none(spelling: str, signature: str = "") -> Callable[[Keys], str]:
    def build(keys: Keys) -> str:
        header = b64(json.dumps({"alg": spelling, "typ": "JWT"}).encode())
        return f"{header}.{b64(json.dumps(GOOD).encode())}.{signature}"

    return build


def _with_segment(index: int, change: Callable[[str], str]) -> Callable[[Keys], str]:
    def build(keys: Keys) -> str:
        parts = sign_raw(keys["RS256"], _header(keys["RS256"]), GOOD).split(".")
        parts[index] = change(parts[index])
        return ".".join(parts)

    return build


def _signed(
    header: bytes | dict[str, Any] | None = None, payload: Any = None
) -> Callable[[Keys], str]:
    """A token signed by the real RS256 key, with the header or payload given."""

    def build(keys: Keys) -> str:
        key = keys["RS256"]
        return sign_raw(
            key,
            header if header is not None else _header(key),
            payload if payload is not None else GOOD,
        )

    return build


def _by_attacker(**header: Any) -> Callable[[Keys], str]:
    """Signed by the attacker's key, which the header offers in some way."""

    def build(keys: Keys) -> str:
        return sign_raw(ATTACKER, _header(ATTACKER, **header), GOOD)

    return build


def _flip_spare_bits(segment: str) -> str:
    """Same bytes, another spelling: set the unused low bits of the last character."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    index = alphabet.index(segment[-1])
    spare = {2: 0b1111, 3: 0b11}[len(segment) % 4]
    return segment[:-1] + alphabet[index | spare]


def _psychic(keys: Keys) -> str:
    """CVE-2022-21449: an ECDSA signature of r = s = 0 verifies anything on broken Javas."""
    key = keys["ES256"]
    signing_input = sign_raw(key, _header(key), GOOD).rsplit(".", 1)[0]
    return f"{signing_input}.{b64(bytes(64))}"


def _utf16(keys: Keys) -> str:
    key = keys["RS256"]
    return sign_raw(key, _header(key), json.dumps(GOOD).encode("utf-16"))


HOSTILE: dict[str, Callable[[Keys], str]] = {
    # alg none in every spelling, with and without a signature
    "alg-none": _none("none"),
    "alg-None": _none("None"),
    "alg-NONE": _none("NONE"),
    "alg-nOnE": _none("nOnE"),
    "alg-none-with-signature": _none("none", b64(b"\x00" * 32)),
    "alg-empty": _none(""),
    "alg-missing": lambda k: sign_raw(k["RS256"], {"kid": "rs256-1"}, GOOD),
    "alg-not-a-string": lambda k: sign_raw(k["RS256"], {"alg": ["RS256"]}, GOOD),
    "alg-not-allowed": _signed({"alg": "PS256", "kid": "rs256-1"}),
    "alg-of-the-other-key": _signed({"alg": "ES256", "kid": "rs256-1"}),
    # key confusion: the public key (or its JWK) used as an HMAC secret
    "hs256-with-public-pem": lambda k: _forge_hmac(k["RS256"].public_pem().encode(), "rs256-1"),
    "hs256-with-public-pem-no-kid": lambda k: _forge_hmac(k["RS256"].public_pem().encode(), None),
    "hs256-with-public-jwk": lambda k: _forge_hmac(
        json.dumps(k["RS256"].public_jwk()).encode(), "rs256-1"
    ),
    # signatures: empty, stripped, truncated, another key's, the psychic one
    "empty-signature": _with_segment(2, lambda s: ""),
    "stripped-signature": lambda k: sign_raw(k["RS256"], _header(k["RS256"]), GOOD).rsplit(".", 1)[
        0
    ],
    # Whole 4-character groups: canonical base64url, so the signature check
    # itself refuses (cutting mid-group is the non-canonical case, tested apart).
    "truncated-signature": _with_segment(2, lambda s: s[: len(s) - len(s) % 4 - 8]),
    "signature-of-another-token": lambda k: ".".join(
        sign_raw(k["RS256"], _header(k["RS256"]), GOOD).split(".")[:2]
        + sign_raw(k["RS256"], _header(k["RS256"]), {**GOOD, "sub": "eve"}).split(".")[2:]
    ),
    "attacker-key-same-kid": _by_attacker(),
    "ecdsa-psychic-signature": _psychic,
    "ecdsa-signature-as-der": lambda k: (
        sign_raw(k["ES256"], _header(k["ES256"]), GOOD).rsplit(".", 1)[0]
        + "."
        + b64(b"\x30\x06\x02\x01\x00\x02\x01\x00")
    ),
    # kid: traversal, injection, wrong types, unknown
    "kid-path-traversal": lambda k: sign_raw(
        k["RS256"], _header(k["RS256"], kid="../../../../dev/null"), GOOD
    ),
    "kid-sql-injection": lambda k: sign_raw(
        k["RS256"], _header(k["RS256"], kid="x' UNION SELECT 'secret"), GOOD
    ),
    "kid-prefix-of-real-kid": lambda k: sign_raw(
        k["RS256"], _header(k["RS256"], kid="rs256"), GOOD
    ),
    "kid-real-kid-plus-suffix": lambda k: sign_raw(
        k["RS256"], _header(k["RS256"], kid="rs256-1 "), GOOD
    ),
    "kid-number": lambda k: sign_raw(k["RS256"], _header(k["RS256"], kid=1), GOOD),
    "kid-list": lambda k: sign_raw(k["RS256"], _header(k["RS256"], kid=["rs256-1"]), GOOD),
    "kid-unknown": lambda k: sign_raw(k["RS256"], _header(k["RS256"], kid="nobody"), GOOD),
    # keys offered by the token itself are never trusted
    "jku-header": _by_attacker(jku="https://evil.example/jwks.json"),
    "x5u-header": _by_attacker(x5u="https://evil.example/cert.pem"),
    "embedded-jwk": lambda k: sign_raw(
        ATTACKER, _header(ATTACKER, jwk=ATTACKER.public_jwk()), GOOD
    ),
    "embedded-x5c": _by_attacker(x5c=["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]),
    "embedded-jwk-real-key-signature": _signed(
        {"alg": "RS256", "kid": "rs256-1", "jwk": {"kty": "RSA"}}
    ),
    # header parameters that are refused outright
    "crit-header": _signed({"alg": "RS256", "kid": "rs256-1", "crit": ["exp"], "exp": 1}),
    "b64-false": _signed({"alg": "RS256", "kid": "rs256-1", "b64": False, "crit": ["b64"]}),
    "nested-jwt-cty": _signed({"alg": "RS256", "kid": "rs256-1", "cty": "JWT"}),
    "typ-dpop": _signed({"alg": "RS256", "kid": "rs256-1", "typ": "dpop+jwt"}),
    "typ-jwe": _signed({"alg": "RS256", "kid": "rs256-1", "typ": "JOSE+JSON"}),
    "typ-not-a-string": _signed({"alg": "RS256", "kid": "rs256-1", "typ": 1}),
    # time claims
    "expired": _signed(payload={**GOOD, "exp": 1_000_000_000}),
    "expired-within-a-minute": lambda k: k["RS256"].token(claims(), expires_in=-60),
    "not-yet-valid": _signed(payload={**GOOD, "nbf": FUTURE - 10}),
    "issued-in-the-future": _signed(payload={**GOOD, "iat": FUTURE - 10}),
    "missing-exp": _signed(payload=claims()),
    "exp-digit-string": _signed(payload={**GOOD, "exp": str(FUTURE)}),
    "exp-true": _signed(payload={**GOOD, "exp": True}),
    "exp-null": _signed(payload={**GOOD, "exp": None}),
    "exp-huge": _signed(
        payload=b'{"sub":"ada","aud":"orders","iss":"https://id.example/","exp":'
        + b"9" * 400
        + b"}"
    ),
    "exp-1e999": _signed(
        payload=b'{"sub":"ada","aud":"orders","iss":"https://id.example/","exp":1e999}'
    ),
    "exp-nan": _signed(
        payload=b'{"sub":"ada","aud":"orders","iss":"https://id.example/","exp":NaN}'
    ),
    "nbf-infinity": _signed(
        payload=b'{"sub":"ada","aud":"orders","iss":"https://id.example/","exp":4102444800,"nbf":-Infinity}'
    ),
    "iat-string": _signed(payload={**GOOD, "iat": "yesterday"}),
    # audience and issuer
    "wrong-aud": _signed(payload={**GOOD, "aud": "billing"}),
    "aud-missing": _signed(payload={k: v for k, v in GOOD.items() if k != "aud"}),
    "aud-list-without-us": _signed(payload={**GOOD, "aud": ["billing", "shipping"]}),
    "aud-empty-list": _signed(payload={**GOOD, "aud": []}),
    "aud-prefix": _signed(payload={**GOOD, "aud": "order"}),
    "aud-superstring": _signed(payload={**GOOD, "aud": "orders-admin"}),
    "aud-not-a-string": _signed(payload={**GOOD, "aud": {"orders": True}}),
    "wrong-iss": _signed(payload={**GOOD, "iss": "https://evil.example/"}),
    "iss-prefix-of-expected": _signed(payload={**GOOD, "iss": "https://id.example"}),
    "iss-expected-is-prefix": _signed(payload={**GOOD, "iss": "https://id.example/.evil"}),
    "iss-substring": _signed(payload={**GOOD, "iss": "id.example"}),
    "iss-other-case": _signed(payload={**GOOD, "iss": "https://ID.example/"}),
    "iss-missing": _signed(payload={k: v for k, v in GOOD.items() if k != "iss"}),
    "iss-list": _signed(payload={**GOOD, "iss": [ISSUER]}),
    "sub-not-a-string": _signed(payload={**GOOD, "sub": 42}),
    "no-subject": _signed(payload={k: v for k, v in GOOD.items() if k != "sub"}),
    "scope-not-a-string": _signed(payload={**GOOD, "scope": {"admin": True}}),
    # shape and encoding
    "one-segment": lambda k: b64(json.dumps(GOOD).encode()),
    "four-segments": lambda k: sign_raw(k["RS256"], _header(k["RS256"]), GOOD) + ".e30",
    "five-segments-jwe": lambda k: "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a.b.c.d",
    "not-base64": _with_segment(1, lambda s: "!!!!" + s),
    "standard-base64-alphabet": _with_segment(2, lambda s: "+/" + s[2:]),
    "padding-on-header": _with_segment(0, lambda s: s + "=" * (-len(s) % 4 or 4)),
    "padding-on-signature": _with_segment(2, lambda s: s + "=" * (-len(s) % 4 or 4)),
    "non-canonical-signature": _with_segment(2, _flip_spare_bits),
    "impossible-length": _with_segment(1, lambda s: s + "A" * ((1 - len(s)) % 4)),
    "header-not-json": lambda k: sign_raw(k["RS256"], b"alg=RS256", GOOD),
    "payload-not-json": _signed(payload=b"sub=ada"),
    "payload-array": _signed(payload=b'["sub","ada"]'),
    "payload-string": _signed(payload=b'"ada"'),
    "payload-trailing-garbage": _signed(payload=json.dumps(GOOD).encode() + b"garbage"),
    "header-array": lambda k: sign_raw(k["RS256"], b'["RS256"]', GOOD),
    "duplicate-alg": _signed(b'{"alg":"none","alg":"RS256","kid":"rs256-1"}'),
    "duplicate-kid": _signed(b'{"alg":"RS256","kid":"nobody","kid":"rs256-1"}'),
    "duplicate-exp": _signed(
        payload=b'{"sub":"ada","aud":"orders","iss":"https://id.example/","exp":1,"exp":4102444800}'
    ),
    "duplicate-sub": _signed(
        payload=b'{"sub":"eve","sub":"ada","aud":"orders","iss":"https://id.example/","exp":4102444800}'
    ),
    "duplicate-nested": _signed(
        payload=b'{"sub":"ada","aud":"orders","iss":"https://id.example/","exp":4102444800,"x":{"a":1,"a":2}}'
    ),
    "utf16-payload": _utf16,
    "utf16-header": lambda k: sign_raw(
        k["RS256"], json.dumps(_header(k["RS256"])).encode("utf-16"), GOOD
    ),
    "utf8-bom-payload": _signed(payload=b"\xef\xbb\xbf" + json.dumps(GOOD).encode()),
    "invalid-utf8-payload": _signed(payload=b'{"sub":"\xff\xfe","aud":"orders","exp":4102444800}'),
    # RFC 7493 §2.1 (I-JSON): no unpaired surrogates, which `json` decodes to
    # strings that cannot be encoded (a 500 wherever a later layer encodes them)
    "lone-high-surrogate-sub": _signed(
        payload=b'{"sub":"\\ud800evil","aud":"orders","iss":"https://id.example/","exp":4102444800}'
    ),
    "lone-low-surrogate-sub": _signed(
        payload=b'{"sub":"ada\\udfff","aud":"orders","iss":"https://id.example/","exp":4102444800}'
    ),
    "reversed-surrogate-pair": _signed(
        payload=b'{"sub":"\\ude00\\ud83d","aud":"orders","iss":"https://id.example/","exp":4102444800}'
    ),
    "lone-surrogate-member-name": _signed(
        payload=b'{"sub":"ada","aud":"orders","iss":"https://id.example/","exp":4102444800,"\\udbff":1}'
    ),
    "lone-surrogate-in-list": _signed(
        payload=b'{"sub":"ada","aud":["orders","\\ud800"],"iss":"https://id.example/","exp":4102444800}'
    ),
    "lone-surrogate-kid": _signed(b'{"alg":"RS256","kid":"rs256-1\\ud800"}'),
    "deeply-nested": _signed(
        payload=b'{"sub":"ada","exp":4102444800,"x":' + b"[" * 1500 + b"]" * 1500 + b"}"
    ),
    "oversized": lambda k: sign_raw(k["RS256"], _header(k["RS256"]), {**GOOD, "pad": "x" * 9000}),
    "dots-only": lambda k: "..",
}


def trusting(keys: Keys) -> JWTAuth:
    """Trusts the real RS256 and ES256 keys, by kid."""
    return JWTAuth(
        key={"rs256-1": keys["RS256"].verification_key, "es256-1": keys["ES256"].verification_key},
        algorithms=["RS256", "ES256"],
        audience=AUDIENCE,
        issuer=ISSUER,
    )
