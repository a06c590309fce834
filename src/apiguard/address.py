"""Who is on the other end: the client's address, behind the proxies you trust.

One implementation for every layer that needs it: the rate limiter's
[`by_ip`][apiguard.by_ip], tracing's `client.address`, the audit log and the
IP filter. Without `trusted_proxies` it is the address the server puts in
the scope; with them, and only when the peer is one of them, the proxy
header's hops are read right to left, skipping trusted proxies, and the first
untrusted hop is the client.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
from collections.abc import Iterable
from typing import Final

from apiguard._types import Scope
from apiguard.layer import Options

__all__ = ["UNIX", "ClientAddress", "network_text", "packed_address", "parse_address"]

logger = logging.getLogger("apiguard")

#: The address, and the `trusted_proxies` entry, of a peer the server gives no
#: address for: a unix socket (uvicorn `--uds` sets `scope["client"]` to
#: None). Not an address, so it never collides with a client's.
UNIX: Final = "unix"

#: Entries kept by each cache before it is emptied and refilled: a flood of
#: new addresses costs a parse each, never unbounded memory.
_CACHE_SIZE: Final = 8192
#: Proxy header values longer than this are parsed each time, not cached.
_CACHED_HEADER_BYTES: Final = 256

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The proxy headers that can be read, by lowercase name, as written in docs.
_PROXY_HEADERS: Final = {"x-forwarded-for": "X-Forwarded-For", "forwarded": "Forwarded"}


def parse_address(text: str) -> IPAddress | None:
    """An address from a peer or a proxy hop: `1.2.3.4`, `1.2.3.4:80`, `[::1]:80`, `::1`.

    IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) are their IPv4 address.
    `None` when the text is not an address (`unknown`, an obfuscated id).
    """
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ClientAddress:
    """Finds a request's client address: the peer, or the client behind trusted proxies.

    Args:
        trusted_proxies: CIDRs (`"10.0.0.0/8"`) or addresses of your proxies,
            and `"unix"` for a proxy on the server's unix socket.
        proxy_header: The one header your proxies append the client to:
            `"X-Forwarded-For"` (nginx, HAProxy, AWS ALB, Cloudflare) or
            `"Forwarded"` (RFC 7239). Read only from trusted proxies.
        owner: Who is configuring it, for error messages (`"by_ip"`).

    Calling it with a scope returns the client's address as text (IPv4-mapped
    IPv6 addresses as IPv4), the peer's name as the server gave it when it is
    not an address (a test client's), or `"unix"` for a unix-socket peer that
    is not trusted (logged once: such requests cannot be told apart).

    Security: without `trusted_proxies`, `X-Forwarded-For` and `Forwarded`
    are ignored, since any client can send them. List only proxies you run:
    a trusted hop's header is believed. Only `proxy_header` is read, never
    the other one: proxies append the client to the header they write and
    pass the client's own copy of the other through, so reading whichever
    is present would let a client pick its own address.

    Raises:
        ConfigError: a proxy is not an address, a network or `"unix"`, or
            `proxy_header` is neither header.

    Examples:
        >>> address = ClientAddress(trusted_proxies=["10.0.0.0/8"])
        >>> address({"client": ("10.0.0.5", 1), "headers": [(b"x-forwarded-for", b"203.0.113.9")]})
        '203.0.113.9'
        >>> address({"client": ("198.51.100.7", 1), "headers": [(b"x-forwarded-for", b"1.2.3.4")]})
        '198.51.100.7'
    """

    __slots__ = (
        "_header",
        "_hops",
        "_hops_cache",
        "_trust_cache",
        "_trust_unix",
        "_trusted",
        "_warned",
        "proxy_header",
    )

    def __init__(
        self,
        *,
        trusted_proxies: Iterable[str] = (),
        proxy_header: str = "X-Forwarded-For",
        owner: str = "ClientAddress",
    ) -> None:
        options = Options(owner)
        if isinstance(trusted_proxies, str | bytes) or not isinstance(trusted_proxies, Iterable):
            options.fail("trusted_proxies", trusted_proxies, "is not a list of CIDRs")
        networks: list[Network] = []
        trust_unix = False
        for proxy in trusted_proxies:
            if proxy == UNIX:
                trust_unix = True
                continue
            try:
                networks.append(ipaddress.ip_network(proxy, strict=False))
            except (TypeError, ValueError):
                options.fail(
                    "trusted proxy", proxy, "is not an address, a CIDR like '10.0.0.0/8', or 'unix'"
                )
        header: object = proxy_header
        if not isinstance(header, str) or header.lower() not in _PROXY_HEADERS:
            options.fail("proxy_header", header, "is not 'X-Forwarded-For' or 'Forwarded'")
        self._trusted: tuple[Network, ...] = tuple(networks)
        self._trust_unix = trust_unix
        self._warned = False
        self.proxy_header = _PROXY_HEADERS[proxy_header.lower()]
        self._header = proxy_header.lower().encode("latin-1")
        self._hops = forwarded_hops if self._header == b"forwarded" else x_forwarded_for_hops
        self._trust_cache: dict[str, bool] = {}
        # (peer, proxy header) -> the client: a proxy's few peers send the same
        # few values again and again; parsing them costs ~3 µs a request.
        self._hops_cache: dict[tuple[str, bytes], str] = {}

    @property
    def trusted_proxies(self) -> list[str]:
        """The trusted proxies, as networks (and `"unix"`)."""
        return [str(network) for network in self._trusted] + [UNIX] * self._trust_unix

    def __repr__(self) -> str:
        return (
            f"ClientAddress(trusted_proxies={self.trusted_proxies!r}, "
            f"proxy_header={self.proxy_header!r})"
        )

    def __call__(self, scope: Scope) -> str:
        """The client's address for this request (see the class)."""
        client = scope.get("client")
        if not client or not client[0]:
            return self._unix(scope)
        host: str = client[0]
        if self._trusted and self._is_trusted(host):
            return self._through_proxies(scope, host)
        return host

    def _unix(self, scope: Scope) -> str:
        """A peer without an address: the client behind it, or one shared name."""
        if self._trust_unix:
            return self._through_proxies(scope, UNIX)
        if not self._warned:
            self._warned = True
            logger.warning(
                "apiguard: a request without a client address (a unix socket?): all such "
                "requests share the address %r. Behind a proxy on a unix socket, add %r to "
                "trusted_proxies to see each client's address.",
                UNIX,
                UNIX,
            )
        return UNIX

    def _is_trusted(self, host: str) -> bool:
        trusted = self._trust_cache.get(host)
        if trusted is None:
            address = parse_address(host)
            trusted = address is not None and any(address in net for net in self._trusted)
            if len(self._trust_cache) >= _CACHE_SIZE:
                self._trust_cache.clear()
            self._trust_cache[host] = trusted
        return trusted

    def _through_proxies(self, scope: Scope, peer: str) -> str:
        """The first untrusted hop, reading the proxy header right to left."""
        name = self._header
        values = [v for k, v in scope["headers"] if k == name]
        # Several fields of one name are one list (RFC 9110 §5.3), in order.
        raw = values[0] if len(values) == 1 else b",".join(values)
        if len(raw) > _CACHED_HEADER_BYTES:  # never hold long values in memory
            return self._walk(peer, raw)
        cache = self._hops_cache
        host = cache.get((peer, raw))
        if host is None:
            host = self._walk(peer, raw)
            if len(cache) >= _CACHE_SIZE:
                cache.clear()  # random values (an attack) cannot grow it
            cache[peer, raw] = host
        return host

    def _walk(self, peer: str, raw: bytes) -> str:
        hops = self._hops(raw.decode("latin-1")) if raw else []
        current = peer
        for hop in reversed(hops):
            address = parse_address(hop)
            if address is None:
                # A trusted proxy reported something that is not an address
                # ("unknown", an obfuscated id): the proxy is as far as we know.
                return current
            text = str(address)
            if not self._is_trusted(text):
                return text
            current = text
        return current


def _split_outside_quotes(value: str, separator: str) -> list[str]:
    """Split on `separator` where it is not inside a quoted-string (RFC 9110 §5.6.4)."""
    parts: list[str] = []
    start = 0
    quoted = False
    escaped = False
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append(value[start:index])
            start = index + 1
    parts.append(value[start:])
    return parts


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner = value[1:-1]
        out = []
        escaped = False
        for char in inner:
            if escaped or char != "\\":
                out.append(char)
                escaped = False
            else:
                escaped = True
        return "".join(out)
    return value


def forwarded_hops(value: str) -> list[str]:
    """The `for=` value of each element of a `Forwarded` list (RFC 7239 §4), in order.

    Elements and parameters are split outside quoted strings, so that a
    quoted `by="proxy,internal"` is one value, not two hops.
    """
    hops = []
    for element in _split_outside_quotes(value, ","):
        if not element.strip():
            continue
        for pair in _split_outside_quotes(element, ";"):
            name, _, node = pair.strip().partition("=")
            if name.strip().lower() == "for":
                hops.append(_unquote(node))
                break
        else:
            hops.append("")  # an element without for=: an unknown hop
    return hops


def x_forwarded_for_hops(value: str) -> list[str]:
    """The hops of an `X-Forwarded-For` list, in order."""
    return [hop for hop in value.split(",") if hop.strip()]


_AF_INET: Final = socket.AF_INET
_AF_INET6: Final = socket.AF_INET6
#: The first 12 bytes of an IPv4-mapped IPv6 address (RFC 4291 §2.5.5.2).
_MAPPED: Final = bytes(10) + b"\xff\xff"


def packed_address(host: str) -> tuple[int, bytes] | None:
    """`(IP version, packed address)` of a plain address, IPv4-mapped IPv6 as IPv4.

    `inet_pton` (0.1 µs) rather than `ipaddress` (1.7 µs), so that a client
    cycling through source addresses pays a layer's cache miss little.
    `None` for the forms `inet_pton` refuses (a port, brackets, quotes, a
    zone id): parse those with [`parse_address`][apiguard.address.parse_address].
    """
    try:
        return 4, socket.inet_pton(_AF_INET, host)
    except (OSError, ValueError):
        pass
    try:
        packed = socket.inet_pton(_AF_INET6, host)
    except (OSError, ValueError):
        return None
    if packed[:12] == _MAPPED:
        return 4, packed[12:]
    return 6, packed


def network_text(host: str, ipv4_prefix: int = 32, ipv6_prefix: int = 128) -> str | None:
    """The address's network of the given prefix, as `ipaddress` writes it; `None` if unsure.

    The plain forms a server reports (`192.0.2.1`, `2001:db8::1`, IPv4-mapped
    IPv6 as IPv4) are read by [`packed_address`][apiguard.address.packed_address]
    and written out here, about fifteen times faster than through
    `ipaddress`; any other form gives `None` (the caller parses it with
    [`parse_address`][apiguard.address.parse_address]). The text is the
    same as `str()` of the `ipaddress` address (full prefix) or network.

    Examples:
        >>> network_text("192.0.2.77")
        '192.0.2.77'
        >>> network_text("::ffff:192.0.2.77", ipv4_prefix=24)
        '192.0.2.0/24'
        >>> network_text("2001:db8:0:0:1::7", ipv6_prefix=64)
        '2001:db8::/64'
        >>> network_text("[::1]:80") is None
        True
    """
    found = packed_address(host)
    if found is None:
        return None
    version, packed = found
    if version == 6:
        if ipv6_prefix == 128:
            return _ipv6_text(packed)
        number = int.from_bytes(packed) >> (128 - ipv6_prefix) << (128 - ipv6_prefix)
        return f"{_ipv6_text(number.to_bytes(16))}/{ipv6_prefix}"
    if ipv4_prefix == 32:
        return socket.inet_ntop(_AF_INET, packed)
    number = int.from_bytes(packed) >> (32 - ipv4_prefix) << (32 - ipv4_prefix)
    return f"{socket.inet_ntop(_AF_INET, number.to_bytes(4))}/{ipv4_prefix}"


def _ipv6_text(packed: bytes) -> str:
    """RFC 5952 text as `ipaddress` writes it: the first longest run of zeros, if 2+, as `::`."""
    words = [format(word, "x") for word in struct.unpack("!8H", packed)]
    best_start = best_length = 0
    start = length = 0
    for index, word in enumerate(words):
        if word == "0":
            if not length:
                start = index
            length += 1
            if length > best_length:
                best_start, best_length = start, length
        else:
            length = 0
    if best_length > 1:
        end = best_start + best_length
        if end == len(words):
            words.append("")
        words[best_start:end] = [""]
        if best_start == 0:
            words.insert(0, "")
    return ":".join(words)
