"""The IP filter through a real app: allow and deny lists, per route, 403 problem details."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from apiguard import ConfigError, IPFilterMiddleware, get_context, guard
from apiguard.ipfilter import IPRules
from tests._lifespan import startup

pytestmark = pytest.mark.anyio


async def decisions(request: Request) -> JSONResponse:
    context = get_context(request.scope)
    return JSONResponse(
        {"decisions": [d.outcome for d in context.decisions], "client": context.client}
    )


def app(**options: Any) -> Starlette:
    return guard(
        Starlette(
            routes=[
                Route("/orders", decisions, methods=["GET", "POST"]),
                Route("/admin/stats", decisions),
                Route("/webhooks", decisions, methods=["POST"]),
            ]
        ),
        Middleware(IPFilterMiddleware, **options),
    )


async def call(
    target: Starlette,
    client: str,
    path: str = "/orders",
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    transport = httpx.ASGITransport(target, client=(client, 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        return await http.request(method, path, headers=headers)


@pytest.mark.parametrize(
    ("options", "client", "status"),
    [
        pytest.param({"deny": ["192.0.2.0/24"]}, "192.0.2.77", 403, id="denied"),
        pytest.param({"deny": ["192.0.2.0/24"]}, "198.51.100.1", 200, id="not-denied"),
        pytest.param({"allow": ["10.0.0.0/8"]}, "10.1.2.3", 200, id="allowed"),
        pytest.param({"allow": ["10.0.0.0/8"]}, "11.0.0.1", 403, id="outside-allow"),
        pytest.param({"allow": ["203.0.113.9"]}, "203.0.113.9", 200, id="single-address"),
        pytest.param({"allow": ["2001:db8::/32"]}, "2001:db8::42", 200, id="ipv6-allowed"),
        pytest.param({"allow": ["2001:db8::/32"]}, "2001:db9::1", 403, id="ipv6-outside"),
        pytest.param({"deny": ["2001:db8::/32"]}, "192.0.2.1", 200, id="ipv6-rule-ipv4-client"),
        # A deny entry wins over an allow entry covering the same address.
        pytest.param(
            {"allow": ["10.0.0.0/8"], "deny": ["10.6.6.0/24"]}, "10.6.6.6", 403, id="deny-wins"
        ),
        pytest.param(
            {"allow": ["10.0.0.0/8"], "deny": ["10.6.6.0/24"]}, "10.6.7.1", 200, id="beside-hole"
        ),
        pytest.param({"allow": ["10.0.0.0/8"], "deny": ["10.0.0.0/8"]}, "10.0.0.1", 403, id="tie"),
    ],
)
async def test_lists_decide(options: dict[str, Any], client: str, status: int) -> None:
    """One table of addresses against allow and deny lists."""
    assert (await call(app(**options), client)).status_code == status


@pytest.mark.parametrize(
    ("client", "rule"),
    [
        pytest.param("::ffff:192.0.2.77", "192.0.2.0/24", id="mapped-client-ipv4-rule"),
        pytest.param("192.0.2.77", "::ffff:192.0.2.0/120", id="ipv4-client-mapped-rule"),
        pytest.param("::ffff:c000:24d", "192.0.2.0/24", id="mapped-client-hex-form"),
    ],
)
async def test_ipv4_mapped_forms_match_their_ipv4_rule(client: str, rule: str) -> None:
    """A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d: the same client."""
    assert (await call(app(deny=[rule]), client)).status_code == 403
    assert (await call(app(allow=[rule]), client)).status_code == 200


async def test_a_refusal_is_403_problem_details_that_names_no_rule() -> None:
    response = await call(app(deny=["192.0.2.0/24"]), "192.0.2.9")
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": "about:blank",
        "title": "Forbidden",
        "status": 403,
        "detail": "Requests from this address are not allowed here.",
    }
    assert "192.0.2" not in response.text


async def test_decisions_record_the_outcome_and_the_address() -> None:
    """The allowed request's decision reaches the endpoint; the refusal's reason is kept."""
    target = app(allow=["10.0.0.0/8"], deny=["10.6.6.0/24"])
    allowed = await call(target, "10.0.0.1")
    assert allowed.json() == {"decisions": ["allow"], "client": "10.0.0.1"}
    seen: list[Any] = []

    async def probe(scope: Any, receive: Any, send: Any) -> None:
        await filtered(scope, receive, send)
        seen.append(get_context(scope).decisions[-1])

    filtered = IPFilterMiddleware(target, allow=["10.0.0.0/8"], deny=["10.6.6.0/24"])
    transport = httpx.ASGITransport(probe, client=("10.6.6.6", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        await http.get("/orders")
    transport = httpx.ASGITransport(probe, client=("11.0.0.1", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        await http.get("/orders")
    assert [(d.layer, d.outcome, d.reason, d.status) for d in seen] == [
        ("ipfilter", "reject", "denied", 403),
        ("ipfilter", "reject", "not-allowed", 403),
    ]
    assert seen[0].attributes == {"client.address": "10.6.6.6"}


async def test_a_route_allow_list_replaces_the_layers() -> None:
    """The office may reach /admin only; the payment provider may post webhooks only."""
    target = app(
        allow=["10.0.0.0/8"],
        routes={
            "/admin/stats": IPRules(allow=["10.20.0.0/16"]),
            "POST /webhooks": IPRules(allow=["198.51.100.0/24"]),
        },
    )
    assert (await call(target, "10.20.1.1", "/admin/stats")).status_code == 200
    assert (await call(target, "10.30.1.1", "/admin/stats")).status_code == 403
    assert (await call(target, "10.30.1.1", "/orders")).status_code == 200
    assert (await call(target, "198.51.100.5", "/webhooks", "POST")).status_code == 200
    assert (await call(target, "198.51.100.5", "/orders")).status_code == 403


async def test_a_route_adds_to_the_deny_list_and_cannot_lift_the_layers() -> None:
    target = app(
        deny=["192.0.2.0/24"],
        routes={
            "/admin/stats": IPRules(deny=["198.51.100.0/24"]),
            "/orders": IPRules(allow=["0.0.0.0/0", "::/0"]),
        },
    )
    assert (await call(target, "198.51.100.1", "/admin/stats")).status_code == 403
    assert (await call(target, "198.51.100.1", "/orders")).status_code == 200
    assert (await call(target, "192.0.2.1", "/orders")).status_code == 403  # still denied


async def test_no_path_spelling_escapes_a_route_rule() -> None:
    """The route is resolved as the router dispatches it: variants get its rules."""
    target = app(routes={"/admin/stats": IPRules(allow=["10.0.0.0/8"])})
    for path in ("/admin/stats", "/admin/%73tats", "/admin/./stats", "/ADMIN/stats"):
        response = await call(target, "192.0.2.1", path)
        assert response.status_code in (403, 404), path
        assert response.status_code != 200, path


@pytest.mark.parametrize(
    ("options", "status"),
    [
        pytest.param({"allow": ["10.0.0.0/8"]}, 403, id="allow-list-refuses"),
        pytest.param({"deny": ["10.0.0.0/8"]}, 200, id="deny-list-passes"),
    ],
)
async def test_a_client_without_an_address_matches_no_rule(
    options: dict[str, Any], status: int
) -> None:
    """A peer the server names but gives no address for (a test client's name)."""
    assert (await call(app(**options), "testclient")).status_code == status


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"allow": []}, "allow [] lets no address in"),
        ({"allow": "10.0.0.0/8"}, "allow '10.0.0.0/8' is not a list of strings"),
        (
            {"deny": ["10.0.0.1/8"]},
            "deny '10.0.0.1/8' has host bits set: did you mean '10.0.0.0/8'",
        ),
        ({"deny": ["10.0.0.0/33"]}, "deny '10.0.0.0/33' is not an address or a CIDR"),
        ({"deny": ["example.com"]}, "deny 'example.com' is not an address or a CIDR"),
        (
            {"routes": {"/orders": ["10.0.0.0/8"]}},
            "routes['/orders'] ['10.0.0.0/8'] is not IPRules",
        ),
        (
            {"routes": {"/orders": IPRules(allow=["10.0.0.0/8x"])}},
            "routes['/orders'].allow '10.0.0.0/8x' is not an address",
        ),
        ({"trusted_proxies": ["proxy"]}, "trusted proxy 'proxy' is not an address"),
        ({"proxy_header": "X-Real-IP"}, "proxy_header 'X-Real-IP' is not"),
        ({"name": "a b"}, "name 'a b' is not"),
    ],
)
def test_bad_options_fail_at_construction(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        IPFilterMiddleware(Starlette(), **options)
    assert str(error.value).startswith("IPFilterMiddleware")
    assert message in str(error.value)


async def test_a_route_key_the_app_lacks_fails_start_up() -> None:
    target = app(routes={"/admn/stats": IPRules(allow=["10.0.0.0/8"])})
    answer = await startup(target)
    assert answer["type"] == "lifespan.startup.failed"
    error = answer["message"]
    assert (
        "IPFilterMiddleware[name='ipfilter']: routes: route '/admn/stats' is not a route" in error
    )
    assert "did you mean '/admin/stats'" in error


async def test_lifespan_passes_through() -> None:
    assert (await startup(app(deny=["192.0.2.0/24"])))["type"] == "lifespan.startup.complete"


def test_describe_gives_the_lists_in_force_on_each_route() -> None:
    layer = IPFilterMiddleware(
        Starlette(),
        deny=["192.0.2.0/24"],
        trusted_proxies=["10.0.0.0/8"],
        routes={"/admin/stats": IPRules(allow=["10.20.0.0/16"], deny=["10.20.9.0/24"])},
    )
    admin = layer.describe("GET", "/admin/stats")
    assert (admin.layer, admin.name, admin.applies) == ("ipfilter", "ipfilter", True)
    assert admin.summary == {
        "allow": ["10.20.0.0/16"],
        "deny": ["192.0.2.0/24", "10.20.9.0/24"],
        "trusted_proxies": ["10.0.0.0/8"],
        "proxy_header": "X-Forwarded-For",
    }
    assert [(a.status, a.reason) for a in admin.answers] == [(403, "address-refused")]
    assert layer.describe("GET", "/orders").summary["allow"] == "any"
    open_layer = IPFilterMiddleware(Starlette(), routes={"/x": IPRules(deny=["192.0.2.1"])})
    everywhere = open_layer.describe("WEBSOCKET", "/live")
    assert (everywhere.applies, everywhere.answers) == (False, ())
    assert open_layer.describe("POST", "/x").summary["deny"] == ["192.0.2.1/32"]
