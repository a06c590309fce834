"""JWTAuth: keys and algorithms, claims, the principal hook, token locations, the cache."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import NameOID

from apiguard import ConfigError, JWTAuth, Principal
from apiguard.auth._base import Failure, Grant
from apiguard.auth._keys import VerifyingKey
from apiguard.testing import FrozenClock, SigningKey, generate_key, jwks
from tests.auth._helpers import AUDIENCE, ISSUER, bearer, call, claims, make_app, sign_raw
from tests.auth.conftest import ALGORITHMS

pytestmark = pytest.mark.anyio
Keys = dict[str, SigningKey]


def verifier(key: SigningKey, **options: Any) -> JWTAuth:
    settings: dict[str, Any] = {
        "key": key.verification_key,
        "algorithms": [key.algorithm],
        "audience": AUDIENCE,
        "issuer": ISSUER,
        **options,
    }
    return JWTAuth(**settings)


def accepts(auth: JWTAuth, token: str) -> bool:
    result = auth.check(token.encode())
    assert isinstance(result, Grant | Failure)
    return isinstance(result, Grant)


@pytest.mark.parametrize("alg", ALGORITHMS)
async def test_each_algorithm_verifies_its_own_tokens(keys: Keys, alg: str) -> None:
    app = make_app(verifier(keys[alg]))
    response = await call(app, headers=bearer(keys[alg].token(claims())))
    assert response.status_code == 200
    assert response.json()["name"] == "ada"


def test_key_forms_are_all_accepted(rs256: SigningKey) -> None:
    """A PEM string or bytes, a private key, a certificate, a JWK Set, keys by kid."""
    private_pem = rs256.private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    token = rs256.token(claims())
    forms: list[dict[str, Any]] = [
        {"key": rs256.public_pem()},
        {"key": rs256.public_pem().encode()},
        {"key": rs256.private_key},
        {"key": private_pem},
        {"key": _certificate(rs256)},
        {"key": {"rs256-1": rs256.public_pem(), "other": generate_key("RS256").public_pem()}},
        {"jwks": jwks(rs256)},
    ]
    for form in forms:
        auth = JWTAuth(algorithms=["RS256"], audience=AUDIENCE, **form)
        assert accepts(auth, token), form


def _certificate(key: SigningKey) -> bytes:
    import datetime

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "id.example")])
    now = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.verification_key)
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key.private_key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.PEM)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"algorithms": []}, "algorithms: the allow-list is empty"),
        ({"algorithms": "RS256"}, "algorithms: expected a list"),
        ({"algorithms": ["none"]}, "'none' is not allowed"),
        ({"algorithms": ["None"]}, "'None' is not allowed"),
        ({"algorithms": ["RS256", "NONE"]}, "'NONE' is not allowed"),
        ({"algorithms": ["RS257"]}, "unknown algorithm 'RS257'"),
        ({"algorithms": ["RS256", "HS256"]}, "mixes HMAC with asymmetric"),
        ({"algorithms": ["HS256"]}, "an RSA-2048 key cannot verify \\['HS256'\\]"),
        ({"algorithms": ["ES256"]}, "an RSA-2048 key cannot verify \\['ES256'\\]"),
        ({"audience": []}, "audience .* is empty"),
        ({"audience": [""]}, "audience '' is not a non-empty string"),
        ({"issuer": ""}, "issuer: expected the exact 'iss' string"),
        ({"leeway": -1}, "leeway -1 is not a number of seconds"),
        ({"leeway": 3600}, "leeway 3600 is not a number of seconds"),
        ({"leeway": float("nan")}, "leeway .* is not a number of seconds"),
        ({"required_claims": "exp"}, "required_claims .* is not a list of strings"),
        ({"scopes_claim": ""}, "scopes_claim: expected a claim name"),
        ({"principal": "not callable"}, "principal: expected a callable"),
        ({"token_locations": []}, "token_locations .* is empty"),
        ({"token_locations": ["body"]}, "'body' is not a token location"),
        ({"token_locations": ["header:Authorization"]}, "use 'authorization'"),
        ({"token_locations": ["query", "query"]}, "lists a location twice"),
        ({"token_types": "JWT"}, "token_types .* is not a list"),
        ({"max_token_bytes": 10}, "max_token_bytes .* is not a whole number"),
        ({"cache_size": -1}, "cache_size .* is not a whole number"),
        ({"timeout": 0}, "timeout 0 is not a number of seconds"),
        (
            {"jwks_min_refresh_interval": 0},
            "jwks_min_refresh_interval 0 is not a number of seconds",
        ),
        ({"jwks": {"keys": []}}, "key and jwks: give one source of keys"),
    ],
)
def test_bad_options_are_refused(rs256: SigningKey, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        verifier(rs256, **options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"key": "short-secret", "algorithms": ["HS256"]},
            "the HMAC secret is 12 bytes; HS256 needs at least 32",
        ),
        ({"key": "s" * 40, "algorithms": ["HS384"]}, "HS384 needs at least 48"),
        ({"key": "s" * 40, "algorithms": ["RS256"]}, "an HMAC secret cannot verify \\['RS256'\\]"),
        ({"key": b"", "algorithms": ["HS256"]}, "key: the key is empty"),
        (
            {
                "key": "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----",
                "algorithms": ["RS256"],
            },
            "the PEM key does not load",
        ),
        ({"key": 42, "algorithms": ["RS256"]}, "expected an HMAC secret, a PEM key"),
        ({"key": {}, "algorithms": ["RS256"]}, "the mapping of kid to key is empty"),
        ({"key": {"": "s" * 32}, "algorithms": ["HS256"]}, "kid '' is not a non-empty string"),
        ({"jwks": {"keys": []}, "algorithms": ["RS256"]}, "jwks: the key set is empty"),
        ({"jwks": {"nope": 1}, "algorithms": ["RS256"]}, "jwks: not a JWK Set"),
        (
            {"jwks": {"keys": [{"kty": "RSA", "use": "enc"}]}, "algorithms": ["RS256"]},
            "use is 'enc'",
        ),
        ({"algorithms": ["RS256"]}, "key, jwks, jwks_url or issuer: give one"),
        ({"jwks_url": "http://keys.example/jwks", "algorithms": ["RS256"]}, "is plain http"),
        (
            {"jwks_url": "https://u:pw@keys.example/jwks", "algorithms": ["RS256"]},
            "carries credentials",
        ),
        ({"jwks_url": "ftp://keys.example/jwks", "algorithms": ["RS256"]}, "is not an https URL"),
        (
            {"jwks_url": "https://keys.example/jwks", "algorithms": ["HS256"]},
            "a key server publishes public keys only",
        ),
        (
            {"issuer": "http://id.internal/", "algorithms": ["RS256"]},
            "issuer: 'http://id.internal/' is plain http",
        ),
    ],
)
def test_keys_must_fit_the_algorithms(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        JWTAuth(audience=AUDIENCE, **options)


def test_weak_or_mismatched_asymmetric_keys_are_refused() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the weak key under test
    with pytest.raises(ConfigError, match="the RSA key has 1024 bits; at least 2048"):
        JWTAuth(key=weak.public_key(), algorithms=["RS256"], audience=AUDIENCE)
    p256 = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ConfigError, match="an EC secp256r1 key cannot verify \\['ES384'\\]"):
        JWTAuth(key=p256.public_key(), algorithms=["ES384"], audience=AUDIENCE)


def test_a_key_fitting_some_algorithms_uses_only_those(keys: Keys) -> None:
    """A P-256 key in an ES256+ES384 verifier verifies ES256 only."""
    auth = JWTAuth(
        key=keys["ES256"].verification_key, algorithms=["ES256", "ES384"], audience=AUDIENCE
    )
    assert accepts(auth, keys["ES256"].token(claims()))


def test_config_errors_never_repeat_a_secret() -> None:
    secret = "hunter2-but-too-short"
    with pytest.raises(ConfigError) as raised:
        JWTAuth(key=secret, algorithms=["HS256"], audience=AUDIENCE)
    assert secret not in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        JWTAuth(jwks_url="https://user:s3cret@keys.example/", algorithms=["RS256"], audience=None)
    assert "s3cret" not in str(raised.value)


def test_issuer_and_http_loopback_are_allowed_without_fetching() -> None:
    """Remote keys are never fetched by the constructor (no I/O in __init__)."""
    auth = JWTAuth(jwks_url="http://127.0.0.1:9/jwks", algorithms=["RS256"], audience=AUDIENCE)
    assert auth.keys.fetches == 0  # type: ignore[union-attr]
    JWTAuth(issuer="https://id.example/", algorithms=["ES256"], audience=AUDIENCE)
    JWTAuth(
        jwks_url="http://keycloak:8080/certs",
        algorithms=["RS256"],
        audience=AUDIENCE,
        allow_insecure_http=True,
    )


# --- claims ---------------------------------------------------------------------------


def test_exp_is_required_by_default_and_can_be_waived(rs256: SigningKey) -> None:
    token = rs256.token(claims(), expires_in=None)
    assert not accepts(verifier(rs256), token)
    assert accepts(verifier(rs256, required_claims=()), token)


def test_required_claims_are_required(rs256: SigningKey) -> None:
    auth = verifier(rs256, required_claims=["exp", "jti"])
    assert not accepts(auth, rs256.token(claims()))
    assert accepts(auth, rs256.token(claims(jti="1")))


def test_leeway_applies_to_exp_nbf_and_iat(rs256: SigningKey) -> None:
    with FrozenClock(wall=1_700_000_000) as frozen:
        now = frozen.time()
        late = rs256.token(claims(exp=now - 20))
        early = rs256.token(claims(nbf=now + 20, exp=now + 300))
        future = rs256.token(claims(iat=now + 20, exp=now + 300))
        for token in (late, early, future):
            assert not accepts(verifier(rs256, leeway=10), token)
            assert accepts(verifier(rs256, leeway=30), token)


def test_exp_is_exclusive(rs256: SigningKey) -> None:
    """RFC 7519 §4.1.4: the token must be used before exp, not at it."""
    with FrozenClock(wall=1_700_000_000) as frozen:
        token = rs256.token(claims(exp=frozen.time() + 10))
        auth = verifier(rs256, leeway=0, cache_size=0)
        frozen.advance(9.5)
        assert accepts(auth, token)
        frozen.advance(0.5)
        assert not accepts(auth, token)


def test_audience_may_be_a_list_and_the_claim_a_list(rs256: SigningKey) -> None:
    auth = verifier(rs256, audience=["orders", "billing"])
    assert accepts(auth, rs256.token(claims(aud="billing")))
    assert accepts(auth, rs256.token(claims(aud=["shipping", "orders"])))
    assert not accepts(auth, rs256.token(claims(aud=["shipping", 7])))


def test_audience_none_refuses_tokens_that_name_an_audience(rs256: SigningKey) -> None:
    """RFC 7519 §4.1.3: a service not named in `aud` must refuse the token."""
    auth = verifier(rs256, audience=None)
    assert accepts(auth, rs256.token({"sub": "ada", "iss": ISSUER}))
    assert not accepts(auth, rs256.token(claims()))


def test_no_issuer_configured_accepts_any_issuer(rs256: SigningKey) -> None:
    auth = verifier(rs256, issuer=None)
    assert accepts(auth, rs256.token(claims(iss="https://other.example/")))


@pytest.mark.parametrize(
    ("token_claims", "options", "scopes"),
    [
        ({"scope": "b a  c"}, {}, ("a", "b", "c")),
        ({"scp": ["x", "y"]}, {}, ("x", "y")),
        ({"scp": "User.Read Files.Read"}, {}, ("Files.Read", "User.Read")),
        ({"scope": "a", "scp": ["b"]}, {}, ("a",)),
        ({"roles": ["Orders.Admin"]}, {"scopes_claim": "roles"}, ("Orders.Admin",)),
        ({"scope": "a"}, {"scopes_claim": "roles"}, ()),
        ({}, {}, ()),
    ],
)
def test_scopes_come_from_scope_scp_or_the_configured_claim(
    rs256: SigningKey,
    token_claims: dict[str, Any],
    options: dict[str, Any],
    scopes: tuple[str, ...],
) -> None:
    base = {"sub": "ada", "aud": AUDIENCE, "iss": ISSUER}
    result = verifier(rs256, **options).check(rs256.token({**base, **token_claims}).encode())
    assert isinstance(result, Grant)
    assert result.scopes == scopes


@pytest.mark.parametrize(
    ("subject_claims", "expected"),
    [
        ({"sub": "ada", "client_id": "app"}, "ada"),
        ({"client_id": "app-1"}, "app-1"),
        ({"azp": "spa"}, "spa"),
    ],
)
def test_principal_id_is_sub_then_client_id_then_azp(
    rs256: SigningKey, subject_claims: dict[str, str], expected: str
) -> None:
    token = rs256.token({"aud": AUDIENCE, "iss": ISSUER, **subject_claims})
    result = verifier(rs256).check(token.encode())
    assert isinstance(result, Grant)
    assert result.principal.id == expected
    assert result.principal.method == "jwt"
    assert result.principal.claims["iss"] == ISSUER


# --- the principal hook ---------------------------------------------------------------


async def test_principal_hook_maps_the_principal_and_is_cached(rs256: SigningKey) -> None:
    calls: list[str] = []

    def with_plan(principal: Principal) -> Principal:
        calls.append(principal.id)
        return Principal(id=principal.id, plan=principal.claims.get("plan"), scopes=["x"])

    app = make_app(verifier(rs256, principal=with_plan))
    headers = bearer(rs256.token(claims(plan="pro")))
    for _ in range(3):
        body = (await call(app, headers=headers)).json()
        assert (body["plan"], body["scopes"], body["method"]) == ("pro", ["x"], "jwt")
    assert calls == ["ada"]


async def test_async_principal_hook(rs256: SigningKey) -> None:
    async def look_up(principal: Principal) -> Principal | None:
        await asyncio.sleep(0)
        return None if principal.id == "eve" else principal

    app = make_app(verifier(rs256, principal=look_up))
    assert (await call(app, headers=bearer(rs256.token(claims())))).status_code == 200
    assert (await call(app, headers=bearer(rs256.token(claims(sub="eve"))))).status_code == 401


@pytest.mark.parametrize(
    "hook",
    [
        pytest.param(lambda p: 1 / 0, id="raises"),
        pytest.param(lambda p: "ada", id="returns-a-string"),
        pytest.param(lambda p: asyncio.sleep(10), id="hangs"),
    ],
)
async def test_failing_principal_hook_is_a_503_never_a_500(
    rs256: SigningKey, hook: Any, caplog: pytest.LogCaptureFixture
) -> None:
    token = rs256.token(claims())
    app = make_app(verifier(rs256, principal=hook, timeout=0.05))
    response = await call(app, headers=bearer(token))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert token not in caplog.text


# --- where tokens come from -----------------------------------------------------------


async def test_query_and_cookie_are_read_only_when_opted_in(rs256: SigningKey) -> None:
    token = rs256.token(claims())
    default = make_app(verifier(rs256))
    assert (await call(default, f"/me?access_token={token}")).status_code == 401
    assert (await call(default, headers={"cookie": f"at={token}"})).status_code == 401
    opted = make_app(
        verifier(rs256, token_locations=["query:token", "cookie:at", "header:X-Access-Token"])
    )
    assert (await call(opted, f"/me?token={token}")).status_code == 200
    assert (await call(opted, headers={"cookie": f"theme=dark; at={token}"})).status_code == 200
    assert (await call(opted, headers={"x-access-token": token})).status_code == 200
    assert (await call(opted, headers=bearer(token))).status_code == 401  # not opted in


async def test_a_token_sent_twice_in_one_place_is_malformed(rs256: SigningKey) -> None:
    token = rs256.token(claims())
    app = make_app(verifier(rs256, token_locations=["cookie:at", "query"]))
    assert (await call(app, headers={"cookie": f"at={token}; at={token}"})).status_code == 400
    path = f"/me?access_token={token}&access_token={token}"
    assert (await call(app, path)).status_code == 400
    assert (
        await call(app, f"/me?access_token={token}", {"cookie": f"at={token}"})
    ).status_code == 400


@pytest.mark.parametrize(
    ("typ", "accepted"),
    [
        ("JWT", True),
        ("jwt", True),
        ("at+jwt", True),
        ("application/at+JWT", True),
        ("dpop+jwt", False),
    ],
)
def test_typ_is_checked_when_present(rs256: SigningKey, typ: str, accepted: bool) -> None:
    token = rs256.token(claims(), headers={"typ": typ})
    assert accepts(verifier(rs256), token) is accepted


def test_token_types_are_configurable(rs256: SigningKey) -> None:
    auth = verifier(rs256, token_types=["at+jwt"])
    assert accepts(auth, rs256.token(claims(), headers={"typ": "at+jwt"}))
    assert not accepts(auth, rs256.token(claims(), headers={"typ": "JWT"}))


def test_tokens_over_max_token_bytes_are_refused_first(rs256: SigningKey) -> None:
    token = rs256.token(claims(pad="x" * 600))
    assert accepts(verifier(rs256, max_token_bytes=2048), token)
    result = verifier(rs256, max_token_bytes=len(token) - 1).check(token.encode())
    assert isinstance(result, Failure)
    assert result.cause == "oversized"


# --- the token cache ------------------------------------------------------------------


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


def test_a_repeat_token_costs_no_signature_check(
    rs256: SigningKey, signature_checks: list[str]
) -> None:
    auth = verifier(rs256)
    token = rs256.token(claims()).encode()
    for _ in range(5):
        assert isinstance(auth.check(token), Grant)
    assert signature_checks == ["RS256"]


def test_the_cache_is_keyed_by_a_digest_not_the_token(rs256: SigningKey) -> None:
    auth = verifier(rs256)
    token = rs256.token(claims()).encode()
    auth.check(token)
    [key] = auth._cache.keys()
    assert len(key) == 32
    assert token not in key


def test_cached_tokens_never_outlive_exp(rs256: SigningKey) -> None:
    with FrozenClock(wall=1_700_000_000) as frozen:
        auth = verifier(rs256, leeway=0)
        token = rs256.token(claims(), expires_in=60).encode()
        assert isinstance(auth.check(token), Grant)
        frozen.advance(59)
        assert isinstance(auth.check(token), Grant)
        frozen.advance(1)
        assert isinstance(auth.check(token), Failure)
        assert len(auth._cache) == 0


def test_the_cache_is_bounded(rs256: SigningKey) -> None:
    auth = verifier(rs256, cache_size=3)
    tokens = [rs256.token(claims(sub=f"user-{n}")).encode() for n in range(10)]
    for token in tokens:
        auth.check(token)
    assert len(auth._cache) == 3


def test_cache_size_zero_disables_the_cache(rs256: SigningKey, signature_checks: list[str]) -> None:
    auth = verifier(rs256, cache_size=0)
    token = rs256.token(claims()).encode()
    for _ in range(3):
        auth.check(token)
    assert len(signature_checks) == 3
    assert len(auth._cache) == 0


def test_tokens_without_exp_are_not_cached(rs256: SigningKey) -> None:
    auth = verifier(rs256, required_claims=())
    auth.check(rs256.token(claims(), expires_in=None).encode())
    assert len(auth._cache) == 0


def test_cheap_refusals_compute_no_signature(
    rs256: SigningKey, signature_checks: list[str]
) -> None:
    """Malformed, oversized, disallowed alg, unknown kid: refused before any signature."""
    auth = JWTAuth(key={"rs256-1": rs256.verification_key}, algorithms=["RS256"], audience=AUDIENCE)
    good = rs256.token(claims())
    header, payload, signature = good.split(".")
    auth.check((good[:-4] + "AAAA").encode())  # a forged signature does get checked ...
    assert signature_checks == ["RS256"]  # ... so the counter counts
    cheap = [
        f"{header}.{payload}",
        f"{header}.{payload[:-3]}!!!.{signature}",
        f"{header}.bm90IGpzb24.{signature}",
        "x" * 9000,
        generate_key("RS256", kid="unknown").token(claims()),
        sign_raw(rs256, {"alg": "HS256", "kid": "rs256-1"}, claims()),
    ]
    for token in cheap:
        assert isinstance(auth.check(token.encode()), Failure)
    assert signature_checks == ["RS256"]


def test_option_errors_name_the_authenticator() -> None:
    """One message form: the owner, the option, the value."""
    with pytest.raises(ConfigError, match=r"^JWTAuth: leeway -1 is not a number of seconds"):
        JWTAuth(key="k" * 40, algorithms=["HS256"], audience="orders", leeway=-1)
