"""Forwarding headers: believed from trusted proxies only; from anyone else they change nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from apiguard import IPFilterMiddleware, guard

pytestmark = pytest.mark.anyio

PROXY = "10.0.0.5"
OFFICE = "203.0.113.0/24"


async def ok(request: Any) -> PlainTextResponse:
    return PlainTextResponse("ok")


def app(**options: Any) -> Starlette:
    return guard(Starlette(routes=[Route("/", ok)]), Middleware(IPFilterMiddleware, **options))


ALLOW_OFFICE = app(allow=[OFFICE], trusted_proxies=["10.0.0.0/8"])
DENY_OFFICE = app(deny=[OFFICE], trusted_proxies=["10.0.0.0/8"])
ALLOW_OFFICE_FORWARDED = app(
    allow=[OFFICE], trusted_proxies=["10.0.0.0/8"], proxy_header="Forwarded"
)


async def status(target: Any, peer: str, headers: list[tuple[str, str]]) -> int:
    transport = httpx.ASGITransport(target, client=(peer, 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        return (await http.get("/", headers=headers)).status_code


@pytest.mark.parametrize(
    ("target", "peer", "headers", "expected"),
    [
        # Behind the trusted proxy, the header names the client.
        pytest.param(
            ALLOW_OFFICE, PROXY, [("x-forwarded-for", "203.0.113.7")], 200, id="via-proxy"
        ),
        pytest.param(
            ALLOW_OFFICE, PROXY, [("x-forwarded-for", "198.51.100.1")], 403, id="outsider"
        ),
        pytest.param(
            ALLOW_OFFICE_FORWARDED, PROXY, [("forwarded", 'for="203.0.113.7"')], 200, id="forwarded"
        ),
        # An untrusted peer claiming to be in the office: still itself.
        pytest.param(
            ALLOW_OFFICE, "198.51.100.1", [("x-forwarded-for", "203.0.113.7")], 403, id="spoof-in"
        ),
        pytest.param(
            ALLOW_OFFICE, "198.51.100.1", [("forwarded", "for=203.0.113.7")], 403, id="spoof-fwd"
        ),
        pytest.param(
            ALLOW_OFFICE, "198.51.100.1", [("x-real-ip", "203.0.113.7")], 403, id="x-real"
        ),
        # A client prepending the office to what the proxy appends: the proxy's hop is read.
        pytest.param(
            ALLOW_OFFICE,
            PROXY,
            [("x-forwarded-for", "203.0.113.7, 198.51.100.1")],
            403,
            id="prepended",
        ),
        # A denied client claiming another address through an untrusted peer.
        pytest.param(
            DENY_OFFICE, "203.0.113.7", [("x-forwarded-for", "198.51.100.1")], 403, id="spoof-out"
        ),
        # The header the proxy does not write is passed through untouched: never read.
        pytest.param(
            ALLOW_OFFICE_FORWARDED,
            PROXY,
            [("forwarded", "for=198.51.100.1"), ("x-forwarded-for", "203.0.113.7")],
            403,
            id="other-header",
        ),
    ],
)
async def test_forwarding_headers(
    target: Any, peer: str, headers: list[tuple[str, str]], expected: int
) -> None:
    assert await status(target, peer, headers) == expected


HEADER_NAMES = st.sampled_from(["x-forwarded-for", "forwarded", "x-real-ip", "X-Forwarded-For"])
ADDRESSES = st.ip_addresses().map(str)
VALUES = st.one_of(
    ADDRESSES,
    st.lists(ADDRESSES, min_size=1, max_size=4).map(", ".join),
    ADDRESSES.map(lambda a: f'for="{a}"'),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
)
UNTRUSTED_PEERS = st.sampled_from(
    ["198.51.100.1", "203.0.113.7", "::ffff:203.0.113.8", "2001:db8::1"]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    peer=UNTRUSTED_PEERS,
    headers=st.lists(st.tuples(HEADER_NAMES, VALUES), max_size=3),
)
async def test_spoofed_headers_from_untrusted_peers_change_nothing(
    peer: str, headers: list[tuple[str, str]]
) -> None:
    """Whatever forwarding headers an untrusted peer sends, it is judged by its own address."""
    for target in (ALLOW_OFFICE, DENY_OFFICE, ALLOW_OFFICE_FORWARDED):
        assert await status(target, peer, headers) == await status(target, peer, [])
