"""The compiled lists: every verdict equals a scan of every rule, and the cache stays bounded."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from apiguard.address import parse_address
from apiguard.ipfilter._networks import RangeSet, Verdicts, _unmapped, address_number

V4 = st.builds(
    lambda address, prefix: ipaddress.IPv4Network((address, prefix), strict=False),
    st.integers(0, 2**32 - 1),
    st.integers(0, 32),
)
V6 = st.builds(
    lambda address, prefix: ipaddress.IPv6Network((address, prefix), strict=False),
    st.integers(0, 2**128 - 1),
    st.integers(0, 128),
)
NETWORKS = st.lists(st.one_of(V4, V6), max_size=12)


def scanned(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
    allow: list[ipaddress.IPv4Network | ipaddress.IPv6Network] | None,
    deny: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> bool:
    """The rule the layer documents, written as the naive scan of every network."""
    if any(address in network for network in deny):
        return False
    return allow is None or any(address in network for network in allow)


def near(networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> list[str]:
    """Addresses at and around every range's edges, where an off-by-one would show."""
    found = []
    for network in networks:
        top = 2**32 - 1 if network.version == 4 else 2**128 - 1
        make = ipaddress.IPv4Address if network.version == 4 else ipaddress.IPv6Address
        for edge in (int(network.network_address), int(network.broadcast_address)):
            found += [str(make(n)) for n in (edge - 1, edge, edge + 1) if 0 <= n <= top]
    return found


@settings(max_examples=300, deadline=None)
@given(
    allow=st.one_of(st.none(), NETWORKS),
    deny=NETWORKS,
    extra=st.lists(st.ip_addresses().map(str), max_size=5),
)
def test_a_bisection_agrees_with_scanning_every_rule(
    allow: list[ipaddress.IPv4Network | ipaddress.IPv6Network] | None,
    deny: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
    extra: list[str],
) -> None:
    # As the layer reads them: a network in the IPv4-mapped block is its IPv4
    # network, and a mapped client address its IPv4 address.
    allow = None if allow is None else [_unmapped(network) for network in allow]
    deny = [_unmapped(network) for network in deny]
    verdicts = Verdicts(allow, deny)
    for host in [*near([*(allow or []), *deny]), *extra]:
        address = parse_address(host)
        assert address is not None
        assert verdicts.allows(host) == scanned(address, allow, deny), host


def test_ranges_merge_where_they_overlap_or_touch() -> None:
    networks = [ipaddress.ip_network(n) for n in ("10.0.0.0/25", "10.0.0.128/25", "10.0.0.64/26")]
    ranges = RangeSet.of(networks)
    assert len(ranges) == 1
    assert int(ipaddress.ip_address("10.0.0.255")) in ranges
    assert int(ipaddress.ip_address("10.0.1.0")) not in ranges


def test_ten_thousand_networks_compile_to_ranges() -> None:
    """A blocklist of /24s: looked up by bisection, not scanned."""
    deny = [ipaddress.IPv4Network((i << 12, 24)) for i in range(10_000)]
    verdicts = Verdicts(None, deny)
    assert not verdicts.allows(str(ipaddress.IPv4Address((9_999 << 12) + 7)))
    assert verdicts.allows(str(ipaddress.IPv4Address((9_999 << 12) + 256)))


def test_the_verdict_cache_stays_bounded() -> None:
    verdicts = Verdicts(None, [ipaddress.ip_network("192.0.2.0/24")])
    for i in range(20_000):
        verdicts.allows(str(ipaddress.IPv6Address((0x20010DB8 << 96) + i)))
    assert len(verdicts._cache) <= 8192


def _spellings(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[str]:
    forms = [str(address), address.exploded]
    if address.version == 4:
        forms += [f"::ffff:{address}", f"{address}:8080", f"[::ffff:{address}]:1"]
    else:
        forms += [f"[{address}]:443", f'"{address}"', f"{address}%eth0"]
    return forms


@settings(max_examples=300, deadline=None)
@given(
    address=st.ip_addresses(),
    noise=st.text(alphabet='0123456789abcdef.:[]%"x \x00', max_size=24),
)
def test_the_fast_parse_agrees_with_the_core(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, noise: str
) -> None:
    """`inet_pton` first, `parse_address` for the rest: one answer for every spelling."""
    for host in [*_spellings(address), noise]:
        expected = parse_address(host)
        answer = address_number(host)
        if expected is None:
            assert answer is None, host
        else:
            assert answer == (expected.version, int(expected)), host
