"""Authentication: the layer's cost per request over the bare app, and PyJWT's own.

Each credential kind is timed cached (the same token every request: a
digest and a dictionary lookup) and uncached (`cache_size=0`: strict parsing,
the signature check, the claims, every request). Refusals (a malformed
token, an unknown `kid`) are compared with a layer in the same place that
answers a canned 401 and does nothing else, so their overhead is what the
layer adds to refuse. PyJWT's
`jwt.decode` of the same tokens, with the same checks, is timed in the same
run; so is the usual hand-written alternative, Starlette's
`AuthenticationMiddleware` with a backend calling `jwt.decode`.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
from typing import Any

import jwt
from starlette.authentication import AuthCredentials
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware

from apiguard import APIKeyAuth, AuthMiddleware, JWTAuth, Principal, guard
from apiguard._asgi import CannedResponse
from apiguard.auth._base import Grant
from apiguard.testing import SigningKey, generate_key, mint_token
from benchmarks.apps import NoopMiddleware, starlette_app
from benchmarks.driver import ASGICase, Case, FuncCase, Request
from benchmarks.peers import PyJWTBackend

#: The order of P-256 (SEC 2 §2.4.2): `(r, n - s)` is the other valid spelling of `(r, s)`.
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

AUDIENCE = "orders"
ISSUER = "https://id.example/"
API_KEY = "k-7Hq2xVb9LmN4pR8sT1wY6zC3"
ROUTES: dict[str, Any] = {"public": ["GET /health"], "scopes": {"POST /orders": ["orders:write"]}}
FAR_FUTURE = 4_102_444_800  # 2100-01-01: the tokens stay valid for any run


def _token(key: SigningKey) -> str:
    claims = {"sub": "user-1", "aud": AUDIENCE, "iss": ISSUER, "scope": "orders:read"}
    return mint_token(key, {**claims, "exp": FAR_FUTURE})


def _flip_s(token: str) -> str:
    """The other spelling of an ES256 token: the same signature with s replaced by n - s."""
    head, _, signature = token.rpartition(".")
    raw = base64.urlsafe_b64decode(signature + "==")
    s = int.from_bytes(raw[32:], "big")
    flipped = raw[:32] + (P256_ORDER - s).to_bytes(32, "big")
    return f"{head}.{base64.urlsafe_b64encode(flipped).rstrip(b'=').decode()}"


def _spelling(token: str, *, high: bool) -> str:
    """The low-s or the high-s spelling of an ES256 token, whichever it was minted with.

    Signers pick either at random; the cases pin one, so that a run does not
    time the fast path one day and the high-s path the next.
    """
    signature = base64.urlsafe_b64decode(token.rpartition(".")[2] + "==")
    is_high = int.from_bytes(signature[32:], "big") > P256_ORDER // 2
    return token if is_high == high else _flip_s(token)


def _bearer(token: str) -> Request:
    return Request("GET", "/orders/42", [(b"authorization", f"Bearer {token}".encode())])


def _guarded(authenticator: Any) -> Any:
    return guard(
        starlette_app(), Middleware(AuthMiddleware, authenticators=[authenticator], **ROUTES)
    )


def _jwt_auth(key: SigningKey, **options: Any) -> JWTAuth:
    return JWTAuth(
        key={key.kid or "k": key.verification_key},
        algorithms=[key.algorithm],
        audience=AUDIENCE,
        issuer=ISSUER,
        **options,
    )


def _lookup_auth() -> APIKeyAuth:
    """Keys found by a `lookup` (a database, say), remembered for the whole run."""
    partner = Principal(id="partner", plan="pro")
    return APIKeyAuth(lookup=lambda key: partner if key == API_KEY else None, cache_ttl=86_400.0)


class _CachedCheck(FuncCase):
    """`auth.check(credential)` timed once a first (possibly awaited) check has cached it."""

    def __init__(self, name: str, auth: Any, credential: bytes) -> None:
        super().__init__(name, lambda _i: auth.check(credential))
        self.auth = auth
        self.credential = credential

    async def check(self) -> None:
        first = self.auth.check(self.credential)
        if inspect.isawaitable(first):
            first = await first
        if type(first) is not Grant or type(self.auth.check(self.credential)) is not Grant:
            msg = f"{self.name}: the credential is not accepted from the cache"
            raise AssertionError(msg)


class _Refuse:
    """The floor of a refusal: a layer that answers a canned 401 and does nothing else."""

    response = CannedResponse(401, [(b"content-type", b"application/problem+json")], b"{}")

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.response.send(send)


def cases() -> list[Case]:
    keys = {alg: generate_key(alg, kid=f"{alg.lower()}-1") for alg in ("HS256", "RS256", "ES256")}
    tokens = {alg: _token(key) for alg, key in keys.items()}
    tokens["ES256"] = _spelling(tokens["ES256"], high=False)
    base = "starlette GET"
    refused = "starlette + layer answering a canned 401"
    out: list[Case] = [
        ASGICase(base, starlette_app(), Request("GET", "/orders/42")),
        ASGICase(
            refused,
            guard(starlette_app(), Middleware(_Refuse)),
            Request("GET", "/orders/42"),
            expect=401,
        ),
        ASGICase(
            "no-op layer on the core, per-route (the core's share)",
            guard(
                starlette_app(),
                Middleware(NoopMiddleware, routes={"GET /health": "public", "POST /orders": "w"}),
            ),
            Request("GET", "/orders/42"),
            baseline=base,
        ),
        ASGICase(
            "auth: API key",
            _guarded(APIKeyAuth(keys={API_KEY: Principal(id="partner", plan="pro")})),
            Request("GET", "/orders/42", [(b"x-api-key", API_KEY.encode())]),
            baseline=base,
        ),
        ASGICase(
            "auth: API key found by lookup, cached",
            _guarded(_lookup_auth()),
            Request("GET", "/orders/42", [(b"x-api-key", API_KEY.encode())]),
            baseline=base,
        ),
        ASGICase(
            "auth: ES256 cached, high-s spelling",
            _guarded(_jwt_auth(keys["ES256"])),
            _bearer(_spelling(tokens["ES256"], high=True)),
            baseline=base,
        ),
    ]
    for alg, key in keys.items():
        out += [
            ASGICase(
                f"auth: {alg} cached",
                _guarded(_jwt_auth(key)),
                _bearer(tokens[alg]),
                baseline=base,
            ),
            ASGICase(
                f"auth: {alg} uncached",
                _guarded(_jwt_auth(key, cache_size=0)),
                _bearer(tokens[alg]),
                baseline=base,
            ),
            FuncCase(
                f"PyJWT jwt.decode {alg}",
                lambda _i, k=key, t=tokens[alg], a=alg: jwt.decode(
                    t, k.verification_key, algorithms=[a], audience=AUDIENCE, issuer=ISSUER
                ),
            ),
        ]
    rs256 = keys["RS256"]
    stranger = generate_key("RS256", kid=None)
    out += _primitives(keys["HS256"], tokens["HS256"])
    out += [
        ASGICase(
            "auth: malformed token refused",
            _guarded(_jwt_auth(rs256)),
            _bearer("eyJhbGciOiJSUzI1NiJ9.not-json-at-all.c2ln"),
            expect=401,
            baseline=refused,
        ),
        ASGICase(
            "auth: unknown kid refused",
            _guarded(_jwt_auth(rs256)),
            _bearer(_token(generate_key("RS256", kid="someone-else"))),
            expect=401,
            baseline=refused,
        ),
        ASGICase(
            "auth: unknown kid refused, a new kid every request",
            _guarded(_jwt_auth(rs256)),
            lambda i: _bearer(stranger.token({"exp": FAR_FUTURE}, headers={"kid": f"k-{i}"})),
            expect=401,
            baseline=refused,
            variants=1000,  # beyond the 256 parsed headers kept: every header is parsed
        ),
        ASGICase(
            "starlette AuthenticationMiddleware + jwt.decode HS256",
            guard(
                starlette_app(),
                Middleware(
                    AuthenticationMiddleware,
                    backend=PyJWTBackend(keys["HS256"].verification_key, "HS256"),
                ),
            ),
            _bearer(tokens["HS256"]),
            baseline=base,
        ),
    ]
    return out


def _primitives(key: SigningKey, token: str) -> list[Case]:
    """Where the per-request cost goes: the parts of a request, timed alone."""
    raw = token.encode()
    cached = _jwt_auth(key)
    cached.check(raw)
    uncached = _jwt_auth(key, cache_size=0)
    api_keys = APIKeyAuth(keys={API_KEY: Principal(id="partner", plan="pro")})
    api_key = API_KEY.encode()
    scopes = ("orders:read",)
    return [
        FuncCase("part: JWTAuth.check, repeat token", lambda _i: cached.check(raw)),
        FuncCase("part: JWTAuth.check, HS256 uncached", lambda _i: uncached.check(raw)),
        FuncCase("part: APIKeyAuth.check", lambda _i: api_keys.check(api_key)),
        _CachedCheck("part: APIKeyAuth.check, lookup cached", _lookup_auth(), api_key),
        FuncCase("part: hashlib.sha256(token).digest()", lambda _i: hashlib.sha256(raw).digest()),
        FuncCase("part: AuthCredentials(scopes)", lambda _i: AuthCredentials(scopes)),
    ]


TITLE = "auth: µs per request over the bare app (cached = same token; uncached = cache off)"
