"""Apps, tokens and raw ASGI calls for the authentication tests."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

import httpx
from jwt.algorithms import get_default_algorithms
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from apiguard import AuthMiddleware, get_context, guard
from apiguard.testing import SigningKey

AUDIENCE = "orders"
ISSUER = "https://id.example/"
CLIENT = ("203.0.113.9", 4000)


def claims(**extra: Any) -> dict[str, Any]:
    """The claims of a good token, with `extra` on top."""
    return {"sub": "ada", "aud": AUDIENCE, "iss": ISSUER, "scope": "orders:read", **extra}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sign_raw(
    key: SigningKey, header: bytes | dict[str, Any], payload: bytes | dict[str, Any]
) -> str:
    """A token whose header and payload bytes are exactly as given, signed with `key`."""
    header_bytes = header if isinstance(header, bytes) else json.dumps(header).encode()
    payload_bytes = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = f"{b64(header_bytes)}.{b64(payload_bytes)}"
    algorithm = get_default_algorithms()[key.algorithm]
    signature = algorithm.sign(signing_input.encode(), algorithm.prepare_key(key.private_key))
    return f"{signing_input}.{b64(signature)}"


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def whoami(request: Request) -> JSONResponse:
    """Everything the layer told the endpoint about the caller."""
    context = get_context(request.scope)
    principal = request.state.principal
    return JSONResponse(
        {
            "authenticated": request.user.is_authenticated,
            "name": request.user.display_name,
            "scopes": request.auth.scopes,
            "state": principal.id if principal is not None else None,
            "context": context.principal.id if context.principal is not None else None,
            "plan": getattr(principal, "plan", None),
            "method": getattr(principal, "method", None),
            # Each decision: the layer kind, what it did, the layer's name, why,
            # and for authentication, the authenticator's method.
            "decisions": [
                [d.layer, d.outcome, d.name, d.reason, (d.attributes or {}).get("auth.method")]
                for d in context.decisions
            ],
        }
    )


@requires("orders:read")
async def needs_read(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


@requires("admin")
async def needs_admin(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


async def ws_endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json({"id": websocket.user.display_name})
    await websocket.close()


def routes() -> list[Any]:
    return [
        Route("/me", whoami),
        Route("/health", whoami),
        Route("/orders", whoami, methods=["GET", "POST"]),
        Route("/orders/{order_id:int}", whoami),
        Route("/needs-read", needs_read),
        Route("/needs-admin", needs_admin),
        WebSocketRoute("/ws", ws_endpoint),
    ]


def make_app(*authenticators: Any, **options: Any) -> Starlette:
    """A Starlette app of `routes()` behind `AuthMiddleware`."""
    return guard(
        Starlette(routes=routes()),
        Middleware(AuthMiddleware, authenticators=list(authenticators), **options),
    )


async def call(
    app: Any,
    path: str = "/me",
    headers: dict[str, str] | Sequence[tuple[str, str]] | None = None,
    method: str = "GET",
) -> httpx.Response:
    """One request through the real ASGI app."""
    transport = httpx.ASGITransport(app, client=CLIENT)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.example.com") as client:
        return await client.request(method, path, headers=headers)


async def raw_call(
    app: Any, headers: list[tuple[bytes, bytes]], path: str = "/me", query: bytes = b""
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """A request with header bytes exactly as given (no client-side checks)."""
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"api.example.com"), *headers],
        "client": CLIENT,
        "server": ("127.0.0.1", 8000),
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], list(start["headers"]), body


async def websocket(
    app: Any, headers: list[tuple[bytes, bytes]], path: str = "/ws", http_response: bool = False
) -> list[dict[str, Any]]:
    """A WebSocket handshake through the real ASGI app; the messages the app sent."""
    sent: list[dict[str, Any]] = []
    incoming = [{"type": "websocket.connect"}]

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"api.example.com"), *headers],
        "client": CLIENT,
        "server": ("127.0.0.1", 8000),
        "subprotocols": [],
        "extensions": {"websocket.http.response": {}} if http_response else {},
    }
    await app(scope, receive, send)
    return sent


def challenges(response: httpx.Response) -> list[str]:
    """Each WWW-Authenticate field, as sent."""
    return response.headers.get_list("www-authenticate")
