"""Key functions: addresses, proxies and spoofing, principals, API keys, headers."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from apiguard import ConfigError, Principal, get_context
from apiguard.context import set_principal
from apiguard.ratelimit import by_api_key, by_header, by_ip, by_principal
from tests.ratelimit._helpers import client, limited_app

pytestmark = pytest.mark.anyio

PROXY = "10.0.0.5"


def scope(peer: str | None, *headers: tuple[str, str]) -> dict[str, Any]:
    return {
        "type": "http",
        "client": (peer, 4000) if peer else None,
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
    }


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("::ffff:203.0.113.9", "203.0.113.9"),  # IPv4-mapped is the IPv4 address
        ("::ffff:cb00:7109", "203.0.113.9"),
        ("2001:db8::1", "2001:db8::/64"),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::/64"),  # expanded form
        ("2001:DB8::FFFF:1", "2001:db8::/64"),  # another host of the /64
        ("2001:db8:0:1::1", "2001:db8:0:1::/64"),
        ("testclient", "testclient"),
    ],
)
def test_addresses_are_normalised(peer: str, expected: str) -> None:
    assert by_ip()(scope(peer)) == expected


def test_ipv6_prefix_is_configurable() -> None:
    assert by_ip(ipv6_prefix=128)(scope("2001:db8::1")) == "2001:db8::1"
    assert by_ip(ipv6_prefix=48)(scope("2001:db8:1:2::1")) == "2001:db8:1::/48"
    assert by_ip(ipv4_prefix=24)(scope("203.0.113.9")) == "203.0.113.0/24"


def test_peers_without_an_address_share_one_key_and_are_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Review finding 6: no client address (a unix socket) is one shared key, never no key."""
    key = by_ip()
    with caplog.at_level(logging.WARNING, logger="apiguard"):
        assert key(scope(None)) == "unix"
        assert key({"type": "http", "client": ("", 0), "headers": []}) == "unix"
        assert key(scope(None, ("X-Forwarded-For", "198.51.100.7"))) == "unix"
    assert len([r for r in caplog.records if "unix" in r.getMessage()]) == 1


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([("X-Forwarded-For", "198.51.100.7")], "198.51.100.7"),
        ([("X-Forwarded-For", "1.2.3.4, 198.51.100.7, 10.1.2.3")], "198.51.100.7"),
        ([], "unix"),  # the proxy sent no header: the proxy is as far as we know
        ([("X-Forwarded-For", "unknown")], "unix"),
    ],
)
def test_unix_in_trusted_proxies_trusts_a_peer_without_an_address(
    headers: list[tuple[str, str]], expected: str
) -> None:
    key = by_ip(trusted_proxies=["unix", "10.0.0.0/8"])
    assert key(scope(None, *headers)) == expected
    # an addressed peer outside the networks is still not trusted
    assert key(scope("203.0.113.9", *headers)) == "203.0.113.9"


@pytest.mark.parametrize(
    "headers",
    [
        [("X-Forwarded-For", "198.51.100.7")],
        [("Forwarded", "for=198.51.100.7")],
        [("X-Forwarded-For", "198.51.100.7"), ("X-Forwarded-For", "198.51.100.8")],
    ],
)
def test_proxy_headers_from_an_untrusted_peer_are_ignored(headers: list[tuple[str, str]]) -> None:
    assert by_ip()(scope("203.0.113.9", *headers)) == "203.0.113.9"
    trusting = by_ip(trusted_proxies=["10.0.0.0/8"])
    assert trusting(scope("203.0.113.9", *headers)) == "203.0.113.9"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        # the client's own claim, then what our proxy appended: right to left
        ([("X-Forwarded-For", "1.2.3.4, 198.51.100.7")], "198.51.100.7"),
        # several headers are one list, in order
        ([("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-For", "198.51.100.7")], "198.51.100.7"),
        # trusted hops are skipped
        ([("X-Forwarded-For", "1.2.3.4, 198.51.100.7, 10.1.2.3")], "198.51.100.7"),
        # every hop trusted: the leftmost
        ([("X-Forwarded-For", "10.9.9.9, 10.1.2.3")], "10.9.9.9"),
        # a hop the proxy could not name: the proxy is as far as we know
        ([("X-Forwarded-For", "1.2.3.4, unknown")], PROXY),
        ([("X-Forwarded-For", "::ffff:198.51.100.7")], "198.51.100.7"),
        # only the configured header is read: a client's own Forwarded is not
        ([("X-Forwarded-For", "198.51.100.7"), ("Forwarded", "for=6.6.6.6")], "198.51.100.7"),
        ([("Forwarded", "for=6.6.6.6")], PROXY),
        ([], PROXY),
    ],
)
def test_trusted_proxies_are_read_right_to_left(
    headers: list[tuple[str, str]], expected: str
) -> None:
    key = by_ip(trusted_proxies=["10.0.0.0/8"])
    assert key(scope(PROXY, *headers)) == expected


def test_a_proxy_walk_remembered_is_the_walk_itself() -> None:
    """One key function over every case, twice: remembered answers equal fresh ones."""
    key = by_ip(trusted_proxies=["10.0.0.0/8"])
    cases = [
        (scope("10.0.0.5"), "10.0.0.5"),
        (scope("10.0.0.6"), "10.0.0.6"),  # the same (empty) header from another proxy
        (scope("10.0.0.5", ("X-Forwarded-For", "198.51.100.7")), "198.51.100.7"),
        (scope("10.0.0.6", ("X-Forwarded-For", "198.51.100.7")), "198.51.100.7"),
        (scope("10.0.0.5", ("X-Forwarded-For", "10.9.9.9")), "10.9.9.9"),
        (scope("10.0.0.5", ("X-Forwarded-For", "1.2.3.4, unknown")), "10.0.0.5"),
        (scope("10.0.0.6", ("X-Forwarded-For", "1.2.3.4, unknown")), "10.0.0.6"),
        # longer than any value remembered: read every time
        (scope("10.0.0.5", ("X-Forwarded-For", ", ".join(["10.1.1.1"] * 60 + ["192.0.2.1"]))),
         "192.0.2.1"),
    ]  # fmt: skip
    for _ in range(2):
        assert [key(s) for s, _ in cases] == [expected for _, expected in cases]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        # quoted, with ports, IPv6 in brackets, right to left
        ([("Forwarded", 'for=1.2.3.4, for="[2001:db8::7]:4711";proto=https')], "2001:db8::/64"),
        ([("Forwarded", "for=198.51.100.7:5000;by=10.0.0.5")], "198.51.100.7"),
        ([("Forwarded", "for=1.2.3.4"), ("Forwarded", "for=198.51.100.7")], "198.51.100.7"),
        ([("Forwarded", "for=_hidden")], PROXY),
        ([("Forwarded", "by=10.0.0.5")], PROXY),  # an element without for=: unknown hop
        # only the configured header is read: a client's own X-Forwarded-For is not
        ([("Forwarded", "for=198.51.100.7"), ("X-Forwarded-For", "6.6.6.6")], "198.51.100.7"),
        ([("X-Forwarded-For", "6.6.6.6")], PROXY),
    ],
)
def test_proxy_header_forwarded_reads_only_forwarded(
    headers: list[tuple[str, str]], expected: str
) -> None:
    key = by_ip(trusted_proxies=["10.0.0.0/8"], proxy_header="Forwarded")
    assert key(scope(PROXY, *headers)) == expected


async def test_a_client_sent_forwarded_header_gets_no_bucket_of_its_own() -> None:
    """Review finding 3: a fresh `Forwarded: for=` per request must not reset the count."""
    app = limited_app(limit="3/minute", key=by_ip(trusted_proxies=["10.0.0.0/8"]))
    codes = []
    async with client(app, (PROXY, 40000)) as http:
        for i in range(6):
            headers = {"x-forwarded-for": "203.0.113.7", "forwarded": f"for=198.51.100.{i}"}
            codes.append((await http.get("/orders", headers=headers)).status_code)
    assert codes == [200, 200, 200, 429, 429, 429]


async def test_spoofed_forwarded_for_does_not_change_the_key_through_the_layer() -> None:
    app = limited_app(limit="1/minute")
    async with client(app) as http:
        assert (await http.get("/orders", headers={"x-forwarded-for": "1.1.1.1"})).is_success
        second = await http.get("/orders", headers={"x-forwarded-for": "2.2.2.2"})
    assert second.status_code == 429


async def test_ipv4_mapped_and_expanded_ipv6_forms_share_a_limit() -> None:
    app = limited_app(limit="2/minute")
    async with client(app, ("::ffff:203.0.113.9", 1)) as mapped, client(app) as plain:
        assert (await mapped.get("/orders")).is_success
        assert (await plain.get("/orders")).is_success
        assert (await mapped.get("/orders")).status_code == 429
    async with (
        client(app, ("2001:db8::1", 1)) as short,
        client(app, ("2001:0db8:0:0:0:0:0:2", 1)) as expanded,
    ):
        assert (await short.get("/orders")).is_success
        assert (await expanded.get("/orders")).is_success
        assert (await short.get("/orders")).status_code == 429


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"trusted_proxies": "10.0.0.0/8"}, "not a list"),
        ({"trusted_proxies": ["10.0.0.300/8"]}, "'10.0.0.300/8' is not an address"),
        ({"ipv6_prefix": 0}, "ipv6_prefix 0"),
        ({"ipv4_prefix": 33}, "ipv4_prefix 33"),
        ({"ipv6_prefix": True}, "ipv6_prefix True"),
        ({"proxy_header": "X-Real-IP"}, "proxy_header 'X-Real-IP'"),
        ({"proxy_header": b"Forwarded"}, "proxy_header b'Forwarded'"),
    ],
)
def test_bad_by_ip_options(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        by_ip(**options)


def test_by_principal_reads_the_context_and_falls_back_to_the_address() -> None:
    request = scope("203.0.113.9")
    key = by_principal()
    assert key(request) == "ip:203.0.113.9"
    get_context(request).principal = Principal(id="partner", method="jwt")
    assert key(request) == "p:jwt:partner"


def test_by_principal_reads_the_principal_a_custom_layer_set() -> None:
    """A layer of the user's own sets the principal through the core: one source."""
    request = scope("203.0.113.9")
    set_principal(request, Principal(id="ada"), ())
    assert by_principal()(request) == "p::ada"
    assert request["state"]["principal"] == Principal(id="ada")


@pytest.mark.parametrize(
    ("principal", "expected"),
    [
        # principals never share a namespace with addresses, nor across methods
        (Principal(id="ip:203.0.113.9", method="api_key"), "p:api_key:ip:203.0.113.9"),
        (Principal(id="acme", method="jwt"), "p:jwt:acme"),
        (Principal(id="acme", method="api_key"), "p:api_key:acme"),
        # a ':' in the method cannot shift the boundary between method and id
        (Principal(id="b:c", method="a"), "p:a:b:c"),
        (Principal(id="c", method="a:b"), "p:a%3Ab:c"),
    ],
)
def test_by_principal_keys_principals_in_their_own_namespace(
    principal: Principal, expected: str
) -> None:
    request = scope("203.0.113.9")
    get_context(request).principal = principal
    assert by_principal()(request) == expected


def test_by_principal_hashes_long_ids() -> None:
    request = scope("203.0.113.9")
    get_context(request).principal = Principal(id="x" * 300, method="jwt")
    key = by_principal()(request)
    assert key is not None
    assert key.startswith("h:jwt:")
    assert len(key) == len("h:jwt:") + 32


def test_by_principal_takes_another_fallback() -> None:
    key = by_principal(fallback=by_header("X-Tenant"))
    assert key(scope("203.0.113.9", ("X-Tenant", "acme"))) == "ip:acme"
    assert key(scope("203.0.113.9")) is None


def test_by_api_key_hashes_the_key() -> None:
    key = by_api_key()
    hashed = key(scope("1.2.3.4", ("X-API-Key", "sk-live-1")))
    assert hashed is not None
    assert hashed.startswith("apikey:")
    assert "sk-live-1" not in hashed
    assert len(hashed) == len("apikey:") + 32
    assert key(scope("1.2.3.4", ("X-API-Key", "sk-live-2"))) != hashed
    assert key(scope("9.9.9.9", ("X-API-Key", "sk-live-1"))) == hashed


def test_by_api_key_without_the_header_uses_its_fallback() -> None:
    assert by_api_key()(scope("1.2.3.4")) is None
    assert by_api_key("Api-Token", fallback=by_ip())(scope("1.2.3.4")) == "1.2.3.4"
    assert by_api_key("Api-Token")(scope("1.2.3.4", ("api-token", "t"))) is not None


def test_by_header_keeps_short_values_and_hashes_long_ones() -> None:
    key = by_header("X-Tenant")
    assert key(scope("1.2.3.4", ("X-Tenant", " acme "))) == "acme"
    long_value = key(scope("1.2.3.4", ("X-Tenant", "x" * 300)))
    assert long_value is not None
    assert long_value.startswith("sha256:")
    assert key(scope("1.2.3.4", ("X-Tenant", ""))) is None


@pytest.mark.parametrize("name", ["", "X Tenant", "X-Tenant:", 7])
def test_bad_header_names(name: Any) -> None:
    with pytest.raises(ConfigError, match="is not a header name"):
        by_header(name)


def test_key_functions_say_what_they_are() -> None:
    assert repr(by_ip(trusted_proxies=["10.0.0.0/8"])).startswith("by_ip(trusted_proxies=")
    assert repr(by_api_key()) == "by_api_key('X-API-Key', fallback=None)"
