"""Garbage in, never a 500: any Authorization bytes, token-shaped text, signed arbitrary claims.

And JSON escapes in a signed token: those I-JSON allows are accepted, an
unpaired surrogate is refused before anything (a Redis rate-limit key, say)
could choke on it.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.middleware import Middleware

from apiguard import AuthMiddleware, JWTAuth, RateLimitMiddleware, by_principal, guard
from tests.auth._helpers import bearer, call, make_app, raw_call, routes, sign_raw
from tests.auth._hostile import HOSTILE, Keys, _header, _signed, trusting

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def verifier(keys: Keys) -> JWTAuth:
    """Trusts the real RS256 and ES256 keys, by kid."""
    return trusting(keys)


@pytest.fixture(scope="module")
def app(verifier: JWTAuth) -> Starlette:
    return make_app(verifier)


_TOKEN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \t"


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=st.binary(max_size=300))
async def test_garbage_authorization_header_never_500(app: Starlette, value: bytes) -> None:
    """Any bytes at all in Authorization: a 400 or 401, never a 500."""
    status, _, _ = await raw_call(app, [(b"authorization", value)])
    assert status in (400, 401)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(token=st.text(alphabet=_TOKEN_CHARS, max_size=400))
async def test_garbage_bearer_token_never_500(app: Starlette, token: str) -> None:
    """Token-shaped garbage after `Bearer `: a 400 or 401, never a 500."""
    status, _, _ = await raw_call(app, [(b"authorization", b"Bearer " + token.encode())])
    assert status in (400, 401)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    header=st.dictionaries(
        st.sampled_from(["alg", "kid", "typ", "crit", "jku", "cty", "x"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.text(max_size=10),
            st.lists(st.text(max_size=3), max_size=2),
        ),
    ),
    payload=st.dictionaries(
        st.sampled_from(["exp", "nbf", "iat", "aud", "iss", "sub", "scope", "scp"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(allow_nan=False),
            st.text(max_size=10),
            st.lists(st.text(max_size=3), max_size=2),
        ),
    ),
)
async def test_signed_garbage_claims_never_500(
    app: Starlette, keys: Keys, header: dict[str, Any], payload: dict[str, Any]
) -> None:
    """Properly signed tokens with arbitrary header and claim values: never a 500."""
    status, _, _ = await raw_call(
        app, [(b"authorization", b"Bearer " + sign_raw(keys["RS256"], header, payload).encode())]
    )
    assert status in (200, 401)


@pytest.mark.parametrize(
    ("escaped", "sub"),
    [
        (b"\\ud83d\\ude00", "\U0001f600"),  # a surrogate pair: one code point, I-JSON
        (b"\\\\ud800", "\\ud800"),  # an escaped backslash, then text
        (b"\\u00e9\\u4e2d", "\u00e9\u4e2d"),
    ],
)
async def test_escapes_that_are_i_json_are_accepted(
    app: Starlette, keys: Keys, escaped: bytes, sub: str
) -> None:
    """Only unpaired surrogates are refused, not escapes or characters beyond the BMP."""
    payload = (
        b'{"sub":"' + escaped + b'","aud":"orders","iss":"https://id.example/","exp":4102444800}'
    )
    token = sign_raw(keys["RS256"], _header(keys["RS256"]), payload)
    response = await call(app, headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.json()["name"] == sub


@pytest.mark.usefixtures("close_stores")
async def test_a_lone_surrogate_sub_never_reaches_a_redis_rate_limit(
    keys: Keys, verifier: JWTAuth, redis_url: str
) -> None:
    """The reviewer's chain: such a `sub` keyed a Redis counter and answered 500."""
    guarded = guard(
        Starlette(routes=routes()),
        Middleware(AuthMiddleware, authenticators=[verifier]),
        Middleware(RateLimitMiddleware, limit="100/minute", key=by_principal(), storage=redis_url),
    )
    token = HOSTILE["lone-high-surrogate-sub"](keys)
    response = await call(guarded, headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    good = await call(guarded, headers=bearer(_signed()(keys)))
    assert good.status_code == 200
    # The good token's request was counted in Redis: the first one counted.
    assert good.headers["ratelimit"].startswith('"default-0";r=99;')
