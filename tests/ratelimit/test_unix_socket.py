"""by_ip() behind a proxy on a unix socket: uvicorn `--uds` gives no client address."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from apiguard import get_context, guard
from apiguard.ratelimit import RateLimitMiddleware, by_ip
from tests._servers import ThreadedUvicorn

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def _echo(request: Request) -> Response:
    decisions = get_context(request.scope).decisions_of("ratelimit")
    return JSONResponse(
        {"client": request.scope.get("client"), "reasons": [d.reason for d in decisions]}
    )


def _app() -> Starlette:
    """`/proxied` trusts the socket's peer as a proxy; `/plain` trusts nothing."""
    return guard(
        Starlette(routes=[Route("/proxied", _echo), Route("/plain", _echo)]),
        Middleware(
            RateLimitMiddleware,
            name="proxied",
            limit="3/minute",
            key=by_ip(trusted_proxies=["unix"]),
            exempt=["GET /plain"],
        ),
        Middleware(RateLimitMiddleware, name="plain", limit="3/minute", exempt=["GET /proxied"]),
    )


@pytest.fixture
def socket_path(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "api.sock")
    with ThreadedUvicorn(_app(), uds=path):
        yield path


def _client(path: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=path), base_url="http://api")


async def test_requests_over_a_unix_socket_are_limited_without_trusted_proxies(
    socket_path: str,
) -> None:
    """Review finding 6: no client address used to mean no key, and no limit at all."""
    async with _client(socket_path) as http:
        codes = []
        for i in range(6):
            response = await http.get("/plain", headers={"x-forwarded-for": f"198.51.100.{i}"})
            codes.append(response.status_code)
    assert codes == [200, 200, 200, 429, 429, 429]


async def test_unix_in_trusted_proxies_keys_each_forwarded_client(socket_path: str) -> None:
    async with _client(socket_path) as http:
        first = await http.get("/proxied", headers={"x-forwarded-for": "203.0.113.7"})
        assert first.json()["client"] is None  # what uvicorn gives for a unix socket peer
        for _ in range(2):
            response = await http.get("/proxied", headers={"x-forwarded-for": "203.0.113.7"})
            assert response.status_code == 200
        refused = await http.get("/proxied", headers={"x-forwarded-for": "203.0.113.7"})
        other = await http.get("/proxied", headers={"x-forwarded-for": "203.0.113.8"})
    assert refused.status_code == 429
    assert other.status_code == 200
