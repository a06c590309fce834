"""`network_text`: a new client's key without `ipaddress`, the same text as through it."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from apiguard.address import network_text, parse_address
from apiguard.ratelimit import by_ip


def _slow(host: str, v4: int, v6: int) -> str:
    address = parse_address(host)
    assert address is not None
    if isinstance(address, ipaddress.IPv4Address):
        return str(address) if v4 == 32 else str(ipaddress.IPv4Network((address, v4), strict=False))
    return str(address) if v6 == 128 else str(ipaddress.IPv6Network((address, v6), strict=False))


# Addresses with runs of zero hextets: where the text's `::` is decided.
_hextets = st.lists(st.sampled_from([0, 0, 0, 1, 0xFFFF, 0xDB8, 0x2001]), min_size=8, max_size=8)


@given(
    st.integers(0, 2**32 - 1)
    | _hextets.map(lambda h: sum(w << (16 * (7 - i)) for i, w in enumerate(h))),
    st.integers(0, 2**128 - 1),
    st.integers(1, 32),
    st.integers(1, 128),
)
def test_the_text_is_ipaddress_s_own(v4: int, v6: int, v4_prefix: int, v6_prefix: int) -> None:
    for number in (v4, v6):
        address = ipaddress.ip_address(number) if number < 2**32 else ipaddress.IPv6Address(number)
        for host in {str(address), address.exploded}:
            assert network_text(host, v4_prefix, v6_prefix) == _slow(host, v4_prefix, v6_prefix)
    mapped = f"::ffff:{ipaddress.IPv4Address(v4 % 2**32)}"
    assert network_text(mapped, v4_prefix, v6_prefix) == _slow(mapped, v4_prefix, v6_prefix)


def test_forms_a_server_does_not_report_take_the_slow_path() -> None:
    for host in ("[::1]:80", "192.0.2.1:80", '"192.0.2.1"', "fe80::1%eth0", "unknown", "01.2.3.4"):
        assert network_text(host) is None


def test_by_ip_keys_a_flood_of_new_clients_as_before() -> None:
    key = by_ip(ipv6_prefix=64)
    for n in range(20_000):  # past the cache's 8,192 entries
        host = str(ipaddress.IPv4Address(0x0A000000 + n))
        assert key({"type": "http", "client": (host, 1)}) == host
    assert key({"type": "http", "client": ("2001:db8::5:1", 1)}) == "2001:db8::/64"
    assert key({"type": "http", "client": ("::ffff:10.0.0.1", 1)}) == "10.0.0.1"
