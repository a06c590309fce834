"""One method rule: apiguard decides on the method uppercased, and never rewrites it.

h11 (uvicorn's default) passes a lowercase `post` through to the app.
Starlette's routes compare methods case-sensitively and answer 405, but an
app that accepts any method (a `Mount` of an ASGI or WSGI app, `Route(path,
asgi_app)`) may uppercase it, as Django and WSGI apps behind a bridge do, and
run it as POST. So policies are chosen by the uppercased method: never looser
than what the app does with the request.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

from apiguard import APIKeyAuth, AuthMiddleware, Principal, Rules, ValidationMiddleware, guard
from apiguard.routing import RoutePolicies, request_method
from tests._servers import ThreadedUvicorn
from tests.routing._drive import call

pytestmark = pytest.mark.anyio

KEYS = {
    "k-reader-00000001": Principal(id="reader", scopes=["read"]),
    "k-admin-000000001": Principal(id="root", scopes=["admin"]),
}
READER = [(b"x-api-key", b"k-reader-00000001")]
ADMIN = [(b"x-api-key", b"k-admin-000000001")]


class UppercasingApp:
    """Dispatches on the method uppercased, as Django (and WSGI apps behind a bridge) do."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.seen.append(scope["method"])
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        effect = "wrote" if scope["method"].upper() == "POST" else "read"
        await PlainTextResponse(f"{effect} {scope['method']} {len(body)}")(scope, receive, send)


@pytest.mark.parametrize(
    ("method", "decided"),
    [
        ("GET", "GET"),
        ("get", "GET"),
        ("gEt", "GET"),
        ("head", "HEAD"),
        ("Head", "HEAD"),
        ("post", "POST"),
        ("PROPFIND", "PROPFIND"),
        ("propfind", "PROPFIND"),
    ],
)
def test_request_method_is_the_method_uppercased(method: str, decided: str) -> None:
    """The method apiguard decides on; the scope keeps what the client sent."""
    scope = {"type": "http", "method": method}
    assert request_method(scope) == decided
    assert scope["method"] == method


def _auth_on_legacy(**options: Any) -> tuple[Starlette, UppercasingApp]:
    legacy = UppercasingApp()
    app = guard(
        Starlette(routes=[Mount("/legacy", app=legacy), Route("/hook", legacy)]),
        Middleware(AuthMiddleware, authenticators=[APIKeyAuth(keys=KEYS)], **options),
    )
    return app, legacy


@pytest.mark.parametrize("method", ["post", "Post", "POST"])
@pytest.mark.parametrize("path", ["/legacy/orders", "/hook"])
async def test_lowercase_method_gets_the_method_specific_scopes(method: str, path: str) -> None:
    """`post` on a route taking any method needs what `"POST ..."` asks: 403 for a reader."""
    app, legacy = _auth_on_legacy(
        scopes={"POST /legacy/{path}": ["admin"], "POST /hook": ["admin"]}
    )
    refused, _, _ = await call(app, method, path, READER)
    allowed, _, body = await call(app, method, path, ADMIN)
    assert refused == 403
    assert allowed == 200
    assert body == f"wrote {method} 0".encode()
    assert legacy.seen == [method]  # the app still sees the method as sent


@pytest.mark.parametrize("method", ["get", "gEt", "GET", "head", "Head", "HEAD"])
async def test_mixed_case_get_and_head_get_the_get_policy(method: str) -> None:
    """`"GET /legacy/{path}"` public: any case of GET and of HEAD (as GET) is public."""
    app, _ = _auth_on_legacy(public=["GET /legacy/{path}"])
    status, _, _ = await call(app, method, "/legacy/page")
    assert status == 200


@pytest.mark.parametrize("method", ["post", "delete", "put"])
async def test_other_methods_in_any_case_are_not_public(method: str) -> None:
    """A public GET key does not make a lowercase POST public."""
    app, legacy = _auth_on_legacy(public=["GET /legacy/{path}"])
    status, _, _ = await call(app, method, "/legacy/page")
    assert status == 401
    assert legacy.seen == []


async def test_a_case_sensitive_route_answers_405_to_a_lowercase_method() -> None:
    """On a Starlette route `post` reaches no endpoint: the default policy, then 405."""
    calls: list[str] = []

    async def create(request: Request) -> Response:
        calls.append(request.method)
        return PlainTextResponse("created")

    app = guard(
        Starlette(routes=[Route("/orders", create, methods=["POST"])]),
        Middleware(
            AuthMiddleware,
            authenticators=[APIKeyAuth(keys=KEYS)],
            scopes={"POST /orders": ["admin"]},
        ),
    )
    anonymous, _, _ = await call(app, "post", "/orders")
    reader, _, _ = await call(app, "post", "/orders", READER)
    assert anonymous == 401  # the default policy: a credential
    assert reader == 405  # the router refuses it; the endpoint never ran
    assert calls == []


async def test_the_option_templates_of_a_plain_app_match_any_case() -> None:
    """Without a router (guard() around a plain ASGI app), `post` matches `"POST /x"`."""
    legacy = UppercasingApp()
    app = guard(
        legacy,
        Middleware(
            AuthMiddleware, authenticators=[APIKeyAuth(keys=KEYS)], scopes={"POST /x": ["admin"]}
        ),
    )
    refused, _, _ = await call(app, "post", "/x", READER)
    read, _, _ = await call(app, "get", "/x", READER)
    assert refused == 403
    assert read == 200


class _Item(BaseModel):
    sku: str


def _validated() -> Starlette:
    legacy = UppercasingApp()
    return guard(
        Starlette(routes=[Mount("/legacy", app=legacy), Route("/hook", legacy)]),
        Middleware(
            ValidationMiddleware,
            routes={"POST /legacy/{path}": Rules(body=_Item), "POST /hook": Rules(body=_Item)},
        ),
    )


@pytest.mark.parametrize("path", ["/legacy/items", "/hook"])
async def test_lowercase_method_gets_the_method_specific_validation(path: str) -> None:
    """`post` with a body the POST rule refuses gets 422, as POST would."""
    json_type = [(b"content-type", b"application/json")]
    refused, _, _ = await call(_validated(), "post", path, json_type, b'{"qty": 1}')
    accepted, _, _ = await call(_validated(), "post", path, json_type, b'{"sku": "A-1"}')
    assert refused == 422
    assert accepted == 200


@pytest.mark.parametrize("method", ["get", "Get", "head", "delete", "options", "trace"])
async def test_lowercase_no_body_method_with_a_body_is_refused(method: str) -> None:
    """`no_body_methods` holds in any case: a `get` with a body is a 413."""
    status, _, body = await call(
        _validated(), method, "/hook", [(b"content-type", b"application/json")], b'{"a": 1}'
    )
    assert status == 413
    assert json.loads(body)["status"] == 413


async def test_lowercase_patch_with_a_wrong_type_gets_accept_patch() -> None:
    """RFC 5789 §2.2: a 415 to a PATCH lists Accept-Patch, in any case."""
    status, headers, _ = await call(
        _validated(), "patch", "/hook", [(b"content-type", b"text/plain")], b"x"
    )
    assert status == 415
    assert b"accept-patch" in headers


def test_policies_are_looked_up_by_the_uppercased_method() -> None:
    """`RoutePolicies.lookup` folds case, HEAD-as-GET included, on any-method routes."""
    app = Starlette(routes=[Mount("/legacy", app=UppercasingApp())])
    policies = RoutePolicies(
        "routes", {"POST /legacy/{path}": "write", "GET /legacy/{path}": "read"}, "default"
    )
    policies.bind(app)
    for method, expected in [
        ("post", "write"),
        ("hEAD", "read"),
        ("get", "read"),
        ("put", "default"),
    ]:
        scope = {
            "type": "http",
            "method": method,
            "path": "/legacy/x",
            "root_path": "",
            "headers": [],
        }
        assert policies.lookup(scope) == expected, method


def _raw_request(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_uvicorn_passes_a_lowercase_method_through_and_it_gets_posts_policy() -> None:
    """Under uvicorn (h11), `post` arrives lowercase: still refused for a reader."""
    app, legacy = _auth_on_legacy(scopes={"POST /legacy/{path}": ["admin"]})
    with ThreadedUvicorn(app, http="h11") as server:
        refused = _raw_request(
            server.port,
            b"post /legacy/orders HTTP/1.1\r\nHost: t\r\nx-api-key: k-reader-00000001\r\n"
            b"Connection: close\r\n\r\n",
        )
        allowed = _raw_request(
            server.port,
            b"post /legacy/orders HTTP/1.1\r\nHost: t\r\nx-api-key: k-admin-000000001\r\n"
            b"Connection: close\r\n\r\n",
        )
    assert refused.startswith(b"HTTP/1.1 403 ")
    assert allowed.startswith(b"HTTP/1.1 200 ")
    assert legacy.seen == ["post"]
