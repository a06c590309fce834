"""AuthMiddleware through a real Starlette app: RFC 6750 answers, routes, contract 5."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from apiguard import APIKeyAuth, AuthMiddleware, JWTAuth, Principal, guard
from apiguard.testing import SigningKey
from tests.auth._helpers import (
    AUDIENCE,
    ISSUER,
    bearer,
    call,
    challenges,
    claims,
    make_app,
    raw_call,
    routes,
    websocket,
)

pytestmark = pytest.mark.anyio

PARTNER_KEY = "pk-4f9c2a7e1b3d8c6a5e0f"


def jwt_auth(key: SigningKey, **options: Any) -> JWTAuth:
    return JWTAuth(
        key=key.verification_key,
        algorithms=[key.algorithm],
        audience=AUDIENCE,
        issuer=ISSUER,
        **options,
    )


def api_keys(**options: Any) -> APIKeyAuth:
    return APIKeyAuth(keys={PARTNER_KEY: Principal(id="partner", plan="pro")}, **options)


@pytest.fixture
def app(rs256: SigningKey) -> Starlette:
    return make_app(
        jwt_auth(rs256),
        api_keys(),
        public=["GET /health"],
        optional=["GET /orders"],
        scopes={"POST /orders": ["orders:write", "orders:read"], "/orders/{order_id}": ["admin"]},
    )


async def test_no_credential_gets_401_with_challenges_and_no_error_code(app: Starlette) -> None:
    """RFC 6750 §3.1: a request with no credential gets no error code."""
    response = await call(app)
    assert response.status_code == 401
    assert challenges(response) == ['Bearer realm="api"', 'ApiKey realm="api"']
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": "about:blank",
        "title": "Unauthorized",
        "status": 401,
        "detail": "This resource needs a credential.",
    }


async def test_valid_token_sets_user_auth_state_and_context(
    app: Starlette, rs256: SigningKey
) -> None:
    """Contract 5: request.user, request.auth, request.state.principal, the context."""
    token = rs256.token(claims(scope="orders:write orders:read"))
    response = await call(app, headers=bearer(token))
    assert response.status_code == 200
    assert response.json() == {
        "authenticated": True,
        "name": "ada",
        "scopes": ["orders:read", "orders:write"],
        "state": "ada",
        "context": "ada",
        "plan": None,
        "method": "jwt",
        "decisions": [["auth", "allow", "auth", None, "jwt"]],
    }


async def test_starlette_requires_sees_the_scopes(app: Starlette, rs256: SigningKey) -> None:
    """Starlette's @requires reads request.auth.scopes as with its own middleware."""
    headers = bearer(rs256.token(claims(scope="orders:read")))
    assert (await call(app, "/needs-read", headers)).status_code == 200
    assert (await call(app, "/needs-admin", headers)).status_code == 403


async def test_invalid_token_gets_401_invalid_token(app: Starlette, rs256: SigningKey) -> None:
    response = await call(app, headers=bearer(rs256.token(claims(aud="billing"))))
    assert response.status_code == 401
    assert challenges(response) == ['Bearer realm="api", error="invalid_token"']
    assert response.json()["error"] == "invalid_token"


async def test_refusals_do_not_say_which_check_failed(
    app: Starlette, rs256: SigningKey, other_rs256: SigningKey
) -> None:
    """Expired, forged, wrong audience: one body, one header (no oracle for attackers)."""
    tokens = [
        rs256.token(claims(), expires_in=-60),
        other_rs256.token(claims(), headers={"kid": rs256.kid}),
        rs256.token(claims(aud="billing")),
        "eyJhbGciOiJub25lIn0.e30.",
    ]
    answers = set()
    for token in tokens:
        response = await call(app, headers=bearer(token))
        answers.add((response.status_code, response.headers["www-authenticate"], response.text))
    assert len(answers) == 1


async def test_decision_records_the_internal_cause(app: Starlette, rs256: SigningKey) -> None:
    """The cause goes to telemetry (the context), never to the client."""
    from apiguard import get_context

    seen: list[Any] = []

    async def spy(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)
        await app(scope, receive, send)

    await call(spy, headers=bearer(rs256.token(claims(), expires_in=-60)))
    [decision] = get_context(seen[0]).decisions
    assert (decision.outcome, decision.reason, decision.status) == ("reject", "invalid_token", 401)
    assert decision.attributes == {"auth.method": "jwt", "auth.cause": "expired"}


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(
            [("authorization", "Bearer a.b.c"), ("authorization", "Bearer d.e.f")],
            id="two-authorization-headers",
        ),
        pytest.param([("authorization", "Bearer")], id="scheme-without-token"),
        pytest.param([("authorization", "Bearer    ")], id="scheme-and-spaces"),
        pytest.param([("authorization", "Bearer abc def")], id="two-tokens"),
        pytest.param(
            [("authorization", "Bearer a.b.c"), ("authorization", "ApiKey k")], id="two-schemes"
        ),
    ],
)
async def test_malformed_request_gets_400_invalid_request(
    app: Starlette, headers: list[tuple[str, str]]
) -> None:
    response = await call(app, headers=headers)
    assert response.status_code == 400
    assert challenges(response) == ['Bearer realm="api", error="invalid_request"']
    assert response.json()["error"] == "invalid_request"


async def test_token_in_two_places_gets_400(rs256: SigningKey) -> None:
    """RFC 6750 §3.1: a client must not send the token by more than one method."""
    app = make_app(jwt_auth(rs256, token_locations=["authorization", "query"]))
    token = rs256.token(claims())
    response = await call(app, f"/me?access_token={token}", bearer(token))
    assert response.status_code == 400
    assert (await call(app, f"/me?access_token={token}")).status_code == 200


async def test_missing_scope_gets_403_insufficient_scope(app: Starlette, rs256: SigningKey) -> None:
    response = await call(
        app, "/orders", bearer(rs256.token(claims(scope="orders:read"))), method="POST"
    )
    assert response.status_code == 403
    assert challenges(response) == [
        'Bearer realm="api", error="insufficient_scope", scope="orders:read orders:write"'
    ]
    assert response.json()["scope"] == "orders:read orders:write"


async def test_a_caller_refused_for_scope_is_known_to_telemetry(
    app: Starlette, rs256: SigningKey
) -> None:
    """The 403's caller is in the context (telemetry, audit); the app never ran for it."""
    from apiguard import get_context

    seen: list[Any] = []

    async def spy(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)
        await app(scope, receive, send)

    token = rs256.token(claims(scope="orders:read"))
    response = await call(spy, "/orders", bearer(token), method="POST")
    assert response.status_code == 403
    principal = get_context(seen[0]).principal
    assert principal is not None
    assert principal.id == "ada"


async def test_api_key_without_scope_gets_403_without_a_bearer_challenge(app: Starlette) -> None:
    response = await call(app, "/orders", {"x-api-key": PARTNER_KEY}, method="POST")
    assert response.status_code == 403
    assert challenges(response) == []
    assert response.json()["error"] == "insufficient_scope"


async def test_scopes_hold_for_every_spelling_of_the_path(
    app: Starlette, rs256: SigningKey
) -> None:
    """Contract 4: percent-encoding or HEAD does not escape a route's scopes."""
    headers = bearer(rs256.token(claims()))
    for path, method in [("/orders/42", "GET"), ("/orders/%34%32", "GET"), ("/orders/42", "HEAD")]:
        assert (await call(app, path, headers, method=method)).status_code == 403


async def test_public_route_needs_nothing_and_checks_nothing(app: Starlette) -> None:
    for headers in [{}, bearer("garbage"), {"authorization": "Bearer"}]:
        response = await call(app, "/health", headers)
        assert response.status_code == 200
        assert response.json()["authenticated"] is False
        assert response.json()["decisions"] == [["auth", "skip", "auth", "public", None]]


async def test_public_is_per_method(app: Starlette) -> None:
    """`GET /health` is public; a route not listed (or another method) is not."""
    assert (await call(app, "/health", method="HEAD")).status_code == 200
    assert (await call(app, "/me")).status_code == 401


async def test_optional_route_lets_anonymous_callers_through(app: Starlette) -> None:
    response = await call(app, "/orders")
    assert response.status_code == 200
    body = response.json()
    assert (body["authenticated"], body["scopes"], body["state"]) == (False, [], None)
    assert body["decisions"] == [["auth", "allow", "auth", "anonymous", None]]


async def test_optional_route_still_refuses_a_bad_credential(app: Starlette) -> None:
    """A credential that is sent must be valid, even where it is optional."""
    assert (await call(app, "/orders", {"x-api-key": "wrong-key-123"})).status_code == 401


async def test_optional_route_identifies_a_good_credential(app: Starlette) -> None:
    response = await call(app, "/orders", {"x-api-key": PARTNER_KEY})
    assert response.json()["state"] == "partner"
    assert response.json()["plan"] == "pro"


async def test_unknown_path_needs_a_credential(app: Starlette) -> None:
    """A request that reaches no route gets the default policy: required."""
    assert (await call(app, "/no/such/route")).status_code == 401


async def test_first_authenticator_that_finds_a_credential_decides(rs256: SigningKey) -> None:
    """A present but invalid credential is refused, never passed on to the next one."""
    headers = {**bearer("not-a-token"), "x-api-key": PARTNER_KEY}
    assert (await call(make_app(jwt_auth(rs256), api_keys()), headers=headers)).status_code == 401
    assert (await call(make_app(api_keys(), jwt_auth(rs256)), headers=headers)).status_code == 200


async def test_cors_preflight_passes_and_cors_headers_are_added(app: Starlette) -> None:
    """OPTIONS with Access-Control-Request-Method carries no credentials."""
    cors = guard(
        Starlette(routes=routes()),
        Middleware(CORSMiddleware, allow_origins=["https://app.example"], allow_methods=["*"]),
        Middleware(AuthMiddleware, authenticators=[api_keys()]),
    )
    preflight = {"origin": "https://app.example", "access-control-request-method": "POST"}
    response = await call(cors, "/orders", preflight, method="OPTIONS")
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://app.example"
    refused = await call(cors, "/orders", {"origin": "https://app.example"}, method="POST")
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == "https://app.example"


async def test_options_without_preflight_header_is_authenticated(app: Starlette) -> None:
    assert (await call(app, "/me", method="OPTIONS")).status_code == 401


async def test_websocket_without_credential_never_reaches_the_app(app: Starlette) -> None:
    sent = await websocket(app, [])
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": ""}]


async def test_websocket_refusal_is_a_401_where_the_server_supports_it(app: Starlette) -> None:
    sent = await websocket(app, [], http_response=True)
    assert sent[0]["type"] == "websocket.http.response.start"
    assert sent[0]["status"] == 401
    assert (b"www-authenticate", b'Bearer realm="api"') in sent[0]["headers"]


async def test_websocket_with_credential_is_accepted(app: Starlette, rs256: SigningKey) -> None:
    token = rs256.token(claims()).encode()
    sent = await websocket(app, [(b"authorization", b"Bearer " + token)])
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["text"] == '{"id":"ada"}'


async def test_lifespan_passes_through(rs256: SigningKey) -> None:
    from tests._lifespan import startup

    answer = await startup(make_app(jwt_auth(rs256)))
    assert answer["type"] == "lifespan.startup.complete"


async def test_custom_realm_is_in_every_challenge(rs256: SigningKey) -> None:
    app = make_app(jwt_auth(rs256), realm="orders-api")
    assert challenges(await call(app)) == ['Bearer realm="orders-api"']


async def test_non_ascii_header_bytes_are_refused_not_crashed(app: Starlette) -> None:
    status, _, _ = await raw_call(app, [(b"authorization", b"Bearer \xff\xfe.\x00.\x80")])
    assert status == 401
    status, _, _ = await raw_call(app, [(b"x-api-key", "clé-ünïcode".encode())])
    assert status == 401


async def test_works_when_added_with_add_middleware(rs256: SigningKey) -> None:
    """Contract 2: app.add_middleware and Starlette(middleware=[...]) work too."""
    added = Starlette(routes=routes())
    added.add_middleware(AuthMiddleware, authenticators=[jwt_auth(rs256)])
    listed = Starlette(
        routes=routes(), middleware=[Middleware(AuthMiddleware, authenticators=[jwt_auth(rs256)])]
    )
    headers = bearer(rs256.token(claims()))
    for app in (added, listed):
        assert (await call(app, headers=headers)).json()["name"] == "ada"
        assert (await call(app)).status_code == 401


async def test_an_authenticator_bug_fails_closed_not_500(
    rs256: SigningKey, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    authenticator = jwt_auth(rs256)

    def broken(credential: bytes) -> Any:
        raise KeyError("a bug")

    monkeypatch.setattr(authenticator, "check", broken)
    token = rs256.token(claims())
    response = await call(make_app(authenticator), headers=bearer(token))
    assert response.status_code == 503
    assert "failed unexpectedly" in caplog.text
    assert token not in caplog.text


async def test_plain_asgi_app_uses_the_listed_templates(rs256: SigningKey) -> None:
    """Without a Starlette router, route keys match the layer's own templates."""

    async def plain(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    app = AuthMiddleware(
        plain,
        authenticators=[jwt_auth(rs256)],
        public=["GET /health"],
        scopes={"POST /items/{item_id}": ["items:write"]},
    )
    assert (await call(app, "/health")).status_code == 200
    assert (await call(app, "/items/7")).status_code == 401
    token = bearer(rs256.token(claims()))
    assert (await call(app, "/items/7", token)).status_code == 200
    assert (await call(app, "/items/7", token, method="POST")).status_code == 403
