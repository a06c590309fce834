"""A real JWKS / OpenID Connect key server on loopback, for the JWKS tests."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from apiguard import JWTAuth
from apiguard.testing import SigningKey, jwks
from tests._servers import ThreadedUvicorn, free_port


class KeyServer:
    """Serves a JWK Set it can rotate, break or slow down, and counts the fetches."""

    def __init__(self, *keys: SigningKey, port: int | None = None) -> None:
        self.keys = list(keys)
        self.port = port or free_port()
        self.fetches = 0
        self.discoveries = 0
        self.delay = 0.0
        self.status = 200
        self.cache_control: str | None = None
        self.body: bytes | None = None
        self.document: dict[str, Any] | None = None
        self.discovered_issuer: str | None = None
        self.app = Starlette(
            routes=[
                Route("/jwks.json", self._jwks),
                Route("/.well-known/openid-configuration", self._discovery),
            ]
        )
        self._server: ThreadedUvicorn | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        return self.url + "/"

    @property
    def jwks_url(self) -> str:
        return self.url + "/jwks.json"

    async def _jwks(self, request: Request) -> Response:
        self.fetches += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        headers = {"cache-control": self.cache_control} if self.cache_control else {}
        if self.body is not None:
            return Response(self.body, self.status, headers, media_type="application/json")
        document = self.document if self.document is not None else jwks(*self.keys)
        return JSONResponse(document, self.status, headers)

    async def _discovery(self, request: Request) -> Response:
        self.discoveries += 1
        issuer = self.discovered_issuer or self.issuer
        return JSONResponse({"issuer": issuer, "jwks_uri": self.jwks_url})

    def start(self) -> KeyServer:
        server = ThreadedUvicorn(self.app)
        server.port = self.port  # the same address across a stop and a start
        server.server.config.port = self.port
        self._server = server.__enter__()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.__exit__(None, None, None)
            self._server = None


async def settle(auth: JWTAuth) -> None:
    """Wait for a background key refresh under way, if any, to finish."""
    task = getattr(auth.keys, "_inflight", None)
    if task is not None and not task.done():
        await asyncio.wait_for(asyncio.shield(task), 10)
