"""AuthMiddleware's own options: checked by guard(), route keys at start-up."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware

from apiguard import APIKeyAuth, AuthMiddleware, ConfigError, JWTAuth, Principal, guard
from apiguard.testing import SigningKey
from tests._lifespan import startup
from tests.auth._helpers import AUDIENCE, call, make_app, routes

pytestmark = pytest.mark.anyio


def keys_auth(**options: Any) -> APIKeyAuth:
    return APIKeyAuth(keys={"k-123456789": Principal(id="partner")}, **options)


def jwt_auth(key: SigningKey, **options: Any) -> JWTAuth:
    return JWTAuth(
        key=key.verification_key, algorithms=[key.algorithm], audience=AUDIENCE, **options
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"authenticators": []},
            r"^AuthMiddleware\[name='auth'\]: authenticators \[\] is not a list like",
        ),
        ({"authenticators": ["jwt"]}, "authenticators\\[0\\] 'jwt' is not JWTAuth or APIKeyAuth"),
        (
            {"authenticators": [keys_auth(), keys_auth()]},
            "items 0 and 1 both read 'header:x-api-key'",
        ),
        ({"public": "GET /health"}, "public 'GET /health' is not a list of route keys"),
        ({"public": ["get /health"]}, "public: route key 'get /health'"),
        ({"optional": [42]}, "optional: route key 42"),
        ({"scopes": ["GET /me"]}, "scopes \\['GET /me'\\] is not a mapping"),
        (
            {"scopes": {"GET /me": "orders:read"}},
            "scopes\\['GET /me'\\] 'orders:read' is not a list of scopes",
        ),
        ({"scopes": {"GET /me": ["two words"]}}, "'two words' is not a scope token"),
        ({"scopes": {"GET /me": ['quo"te']}}, "is not a scope token"),
        (
            {"public": ["GET /me"], "scopes": {"GET /me": ["a"]}},
            "route 'GET /me' is also in public",
        ),
        ({"public": ["/me"], "optional": ["/me"]}, "optional: route '/me' is also in public"),
        ({"realm": 'a"b'}, "realm 'a\"b' is not printable ASCII"),
        ({"realm": ""}, "realm '' is not printable"),
    ],
)
def test_bad_options_fail_when_guard_is_called(options: dict[str, Any], message: str) -> None:
    settings = {"authenticators": [keys_auth()], **options}
    with pytest.raises(ConfigError, match=message):
        guard(Starlette(routes=routes()), Middleware(AuthMiddleware, **settings))


def test_an_api_key_scheme_and_a_jwt_on_bearer_collide(rs256: SigningKey) -> None:
    with pytest.raises(ConfigError, match="both read 'authorization:bearer'"):
        guard(
            Starlette(routes=routes()),
            Middleware(
                AuthMiddleware,
                authenticators=[jwt_auth(rs256), keys_auth(header=None, scheme="Bearer")],
            ),
        )


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        (
            "public",
            ["GET /helth"],
            "public: route 'GET /helth' is not a route of the app; did you mean '/health'?",
        ),
        ("optional", ["DELETE /me"], "optional: route 'DELETE /me' does not accept DELETE"),
        ("scopes", {"POST /nope": ["a"]}, "scopes: route 'POST /nope' is not a route of the app"),
    ],
)
async def test_unknown_route_keys_fail_start_up(option: str, value: Any, message: str) -> None:
    """Contract 3/4: route keys are checked against the app when the stack is built."""
    app = make_app(keys_auth(), **{option: value})
    answer = await startup(app)
    assert answer["type"] == "lifespan.startup.failed"
    assert message in answer["message"]


async def test_more_specific_route_keys_win(rs256: SigningKey) -> None:
    """`GET /orders` public, `/orders` (any other method) needs a scope."""
    app = make_app(keys_auth(), public=["GET /orders"], scopes={"/orders": ["orders:write"]})
    assert (await call(app, "/orders")).status_code == 200
    assert (
        await call(app, "/orders", {"x-api-key": "k-123456789"}, method="POST")
    ).status_code == 403


def test_a_single_authenticator_may_be_given_without_a_list() -> None:
    guard(Starlette(routes=routes()), Middleware(AuthMiddleware, authenticators=keys_auth()))
