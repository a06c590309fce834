"""The core's client-address resolution: peers, trusted proxies and their headers."""

from __future__ import annotations

import pytest

from apiguard import ConfigError
from apiguard.address import ClientAddress, forwarded_hops, parse_address


def scope(peer: str | None, *headers: tuple[str, str]) -> dict[str, object]:
    return {
        "type": "http",
        "client": (peer, 4000) if peer is not None else None,
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers],
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("for=192.0.2.60;proto=http;by=203.0.113.43", ["192.0.2.60"]),
        ('for="[2001:db8:cafe::17]:4711"', ["[2001:db8:cafe::17]:4711"]),
        ('for=198.51.100.7;by="proxy,internal"', ["198.51.100.7"]),
        ('by="a;b,c";for=198.51.100.7, for=203.0.113.9', ["198.51.100.7", "203.0.113.9"]),
        ('for="\\"quoted\\""', ['"quoted"']),
        ("proto=https, for=203.0.113.9", ["", "203.0.113.9"]),
        ("For=203.0.113.9", ["203.0.113.9"]),
    ],
)
def test_forwarded_is_split_outside_quoted_strings(value: str, expected: list[str]) -> None:
    """RFC 7239 §4: a quoted value may hold commas and semicolons."""
    assert forwarded_hops(value) == expected


def test_a_trusted_hops_quoted_parameters_do_not_merge_clients() -> None:
    """A trusted proxy's `by="proxy,internal"` once made every client the proxy itself."""
    address = ClientAddress(trusted_proxies=["10.0.0.0/8"], proxy_header="Forwarded")
    for client in ("198.51.100.7", "203.0.113.9"):
        forwarded = ("Forwarded", f'for={client};by="proxy,internal"')
        assert address(scope("10.0.0.1", forwarded)) == client


@pytest.mark.parametrize(
    ("peer", "headers", "expected"),
    [
        ("198.51.100.7", [("X-Forwarded-For", "1.2.3.4")], "198.51.100.7"),  # untrusted peer
        ("10.0.0.1", [("X-Forwarded-For", "1.2.3.4, 10.0.0.2")], "1.2.3.4"),
        ("10.0.0.1", [("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-For", "10.0.0.9")], "1.2.3.4"),
        ("10.0.0.1", [("Forwarded", "for=5.6.7.8")], "10.0.0.1"),  # only the chosen header
        ("10.0.0.1", [], "10.0.0.1"),
        ("::ffff:10.0.0.1", [("X-Forwarded-For", "1.2.3.4")], "1.2.3.4"),
    ],
)
def test_only_trusted_peers_headers_are_read(
    peer: str, headers: list[tuple[str, str]], expected: str
) -> None:
    address = ClientAddress(trusted_proxies=["10.0.0.0/8"])
    assert address(scope(peer, *headers)) == expected


def test_ipv4_mapped_addresses_are_their_ipv4_address() -> None:
    assert str(parse_address("::ffff:192.0.2.1")) == "192.0.2.1"
    assert parse_address("unknown") is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"trusted_proxies": "10.0.0.0/8"}, "trusted_proxies '10.0.0.0/8' is not a list"),
        ({"trusted_proxies": ["10.0.0.0/33"]}, "trusted proxy '10.0.0.0/33' is not an address"),
        ({"proxy_header": "X-Real-IP"}, "proxy_header 'X-Real-IP' is not"),
    ],
)
def test_bad_options_name_the_option_and_the_value(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=f"^ClientAddress: {message}"):
        ClientAddress(**options)  # type: ignore[arg-type]
