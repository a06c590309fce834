"""Who a request counts against: key functions of the scope.

A key function takes the ASGI scope and returns a string, or `None` when the
request carries nothing to key on (the limiter then lets it through,
unlimited; put a `by_ip()` limiter in front). Any callable of the scope
works as `key=`; these are the usual ones.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable
from typing import Final

from apiguard._asgi import get_header
from apiguard._types import KeyFunc, Scope
from apiguard.address import ClientAddress, network_text, parse_address
from apiguard.context import principal_of
from apiguard.errors import ConfigError
from apiguard.layer import Options

__all__ = ["by_api_key", "by_header", "by_ip", "by_principal"]


#: Entries kept by the key cache before it is emptied and refilled: a flood
#: of new addresses costs a parse each, never unbounded memory.
_CACHE_SIZE: Final = 8192


class _ByIP(ClientAddress):
    """The client address (core resolution), grouped by prefix."""

    __slots__ = ("_cache", "ipv4_prefix", "ipv6_prefix")

    def __init__(
        self,
        trusted_proxies: Iterable[str],
        proxy_header: str,
        ipv4_prefix: int,
        ipv6_prefix: int,
    ) -> None:
        super().__init__(trusted_proxies=trusted_proxies, proxy_header=proxy_header, owner="by_ip")
        self.ipv4_prefix = ipv4_prefix
        self.ipv6_prefix = ipv6_prefix
        self._cache: dict[str, str] = {}

    def __repr__(self) -> str:
        return (
            f"by_ip(trusted_proxies={self.trusted_proxies!r}, "
            f"proxy_header={self.proxy_header!r}, "
            f"ipv4_prefix={self.ipv4_prefix}, ipv6_prefix={self.ipv6_prefix})"
        )

    def __call__(self, scope: Scope, /) -> str:
        client = scope.get("client")
        if client and not self._trusted and client[0]:
            host: str = client[0]  # the usual case, without a call
        else:
            host = ClientAddress.__call__(self, scope)
        key = self._cache.get(host)
        if key is None:
            key = self._normalise(host)
        return key

    def _normalise(self, host: str) -> str:
        # A new client: its key without `ipaddress` where the form allows
        # (a flood of source addresses outruns the cache).
        key = network_text(host, self.ipv4_prefix, self.ipv6_prefix)
        if key is None:
            key = self._parsed(host)
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[host] = key
        return key

    def _parsed(self, host: str) -> str:
        """The key of a form `inet_pton` refuses (a port, brackets, a name), via `ipaddress`."""
        address = parse_address(host)
        if address is None:
            return host  # not an address (a unix socket, a test client name)
        if isinstance(address, ipaddress.IPv4Address):
            if self.ipv4_prefix == 32:
                return str(address)
            return str(ipaddress.IPv4Network((address, self.ipv4_prefix), strict=False))
        if self.ipv6_prefix == 128:
            return str(address)
        return str(ipaddress.IPv6Network((address, self.ipv6_prefix), strict=False))


def by_ip(
    *,
    trusted_proxies: Iterable[str] = (),
    proxy_header: str = "X-Forwarded-For",
    ipv6_prefix: int = 64,
    ipv4_prefix: int = 32,
) -> KeyFunc:
    """Key by the client address, normalised.

    The address is the one the server puts in the scope: behind a proxy,
    run uvicorn with `--proxy-headers --forwarded-allow-ips=<proxy>` and
    the server itself puts the client's address there. Or give
    `trusted_proxies`: then, and only when the peer is one of them, the
    hops of `proxy_header` are read right to left, skipping trusted
    proxies, and the first untrusted one is the client.

    IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) count as the IPv4
    address; IPv6 addresses are grouped by prefix, since one host commonly
    holds a whole /64.

    A peer the server gives no address for (uvicorn `--uds`: a unix
    socket) is trusted as a proxy when `trusted_proxies` lists `"unix"`;
    otherwise every such request counts against one shared key, `"unix"`
    (logged once), never against none: a limiter that cannot tell clients
    apart limits them together rather than not at all.

    Security: the address is the core's
    [`ClientAddress`][apiguard.address.ClientAddress]: without
    `trusted_proxies` no forwarding header is read (any client can send
    one), and with them only `proxy_header`, only from those peers. List
    only proxies you run: a trusted hop's header is believed, and decides
    the key.

    Args:
        trusted_proxies: CIDRs (`"10.0.0.0/8"`) or addresses of your
            proxies, and `"unix"` for a proxy on the server's unix socket.
        proxy_header: The one header your proxies append the client to:
            `"X-Forwarded-For"` (nginx, HAProxy, AWS ALB, Cloudflare) or
            `"Forwarded"` (RFC 7239). Read only from trusted proxies.
        ipv6_prefix: Prefix length IPv6 clients are grouped by (1-128).
        ipv4_prefix: Prefix length IPv4 clients are grouped by (1-32).

    Raises:
        ConfigError: a proxy is not an address or network, `proxy_header`
            is neither header, or a prefix is out of range.

    Examples:
        >>> key = by_ip()
        >>> key({"type": "http", "client": ("::ffff:203.0.113.9", 4000), "headers": []})
        '203.0.113.9'
        >>> key({"type": "http", "client": ("2001:db8::1", 4000), "headers": []})
        '2001:db8::/64'
    """
    options = Options("by_ip")
    for option, value, top in (("ipv6_prefix", ipv6_prefix, 128), ("ipv4_prefix", ipv4_prefix, 32)):
        options.integer(option, value, low=1, high=top)
    return _ByIP(trusted_proxies, proxy_header, ipv4_prefix, ipv6_prefix)


#: Store keys by_principal() gives, one namespace each: a principal's
#: (`p:<method>:<id>`), a principal's with a long id hashed
#: (`h:<method>:<digest>`), an anonymous caller's (`ip:<fallback key>`). No
#: key of one namespace can be spelled in another, whatever the id.
PRINCIPAL_PREFIX: Final = "p:"
HASHED_PREFIX: Final = "h:"
ANONYMOUS_PREFIX: Final = "ip:"
#: Principal ids longer than this are hashed: no unbounded store keys.
_MAX_ID: Final = 256


class _ByPrincipal:
    __slots__ = ("_prefixes", "fallback")

    def __init__(self, fallback: KeyFunc | None) -> None:
        self.fallback = fallback
        self._prefixes: dict[str | None, str] = {}

    def __repr__(self) -> str:
        return f"by_principal(fallback={self.fallback!r})"

    def __call__(self, scope: Scope, /) -> str | None:
        principal = principal_of(scope)
        if principal is not None:
            method = principal.method
            prefix = self._prefixes.get(method)
            if prefix is None:
                prefix = self._prefix(method)
            principal_id: str = principal.id
            if len(principal_id) > _MAX_ID:
                raw = principal_id.encode("utf-8", "surrogatepass")
                return HASHED_PREFIX + prefix[2:] + hashlib.sha256(raw).hexdigest()[:32]
            return prefix + principal_id
        if self.fallback is None:
            return None
        key = self.fallback(scope)
        return None if key is None else ANONYMOUS_PREFIX + key

    def _prefix(self, method: str | None) -> str:
        """`p:<method>:`, the method escaped so that it holds no ':' (the id may)."""
        escaped = (method or "").replace("%", "%25").replace(":", "%3A")
        if len(self._prefixes) >= 64:  # methods are few; never grow without bound
            self._prefixes.clear()
        prefix = self._prefixes[method] = PRINCIPAL_PREFIX + escaped + ":"
        return prefix


def principal_id_of(key: str) -> str | None:
    """The principal id in a by_principal() key (`p:<method>:<id>`), else None."""
    if not key.startswith(PRINCIPAL_PREFIX):
        return None
    return key.split(":", 2)[2]


def by_principal(*, fallback: KeyFunc | None = None) -> KeyFunc:
    """Key by the authenticated principal's id; anonymous callers by address.

    Reads the principal the authentication layer put in the request context
    (`request.state.principal`), so this limiter goes after it. A principal
    is keyed `"p:<method>:<id>"` (ids over 256 characters hashed), a request
    with no principal `"ip:<address>"` by `fallback` (`by_ip()` by
    default), so anonymous traffic is still limited, apart from principals.

    Security: the namespaces cannot collide: a principal whose id reads
    `"ip:203.0.113.9"` does not count against that address's anonymous
    bucket, and a token subject `"acme"` does not share the bucket of the
    API-key principal `"acme"` (methods differ). `overrides` of the rate
    limiter still name principals by their id.

    Args:
        fallback: The key function for anonymous requests; `by_ip()` when
            not given.

    Examples:
        >>> from apiguard import Principal, get_context
        >>> scope = {"type": "http", "client": ("203.0.113.9", 4000), "headers": []}
        >>> by_principal()(scope)
        'ip:203.0.113.9'
        >>> get_context(scope).principal = Principal(id="partner", plan="pro", method="jwt")
        >>> by_principal()(scope)
        'p:jwt:partner'
    """
    return _ByPrincipal(_fallback("by_principal", fallback) or by_ip())


class _ByHeader:
    __slots__ = ("fallback", "hashed", "header", "name", "prefix")

    def __init__(self, name: str, hashed: bool, prefix: str, fallback: KeyFunc | None) -> None:
        self.name = name
        self.header = name.lower().encode("latin-1")
        self.hashed = hashed
        self.prefix = prefix
        self.fallback = fallback

    def __repr__(self) -> str:
        kind = "by_api_key" if self.hashed else "by_header"
        return f"{kind}({self.name!r}, fallback={self.fallback!r})"

    def __call__(self, scope: Scope, /) -> str | None:
        raw = get_header(scope, self.header)
        if raw is not None:
            raw = raw.strip()
        if not raw:
            return None if self.fallback is None else self.fallback(scope)
        if self.hashed or len(raw) > 256:
            # Never keep a credential (or an unbounded value) as a store key.
            return self.prefix + hashlib.sha256(raw).hexdigest()[:32]
        return raw.decode("latin-1")


def _header_name(kind: str, name: object) -> str:
    if not isinstance(name, str) or not name or not name.isascii() or " " in name or ":" in name:
        msg = f"{kind}: header {name!r} is not a header name like 'X-Tenant'"
        raise ConfigError(msg)
    return name


def _fallback(kind: str, fallback: object) -> KeyFunc | None:
    if fallback is not None and not callable(fallback):
        msg = f"{kind}: fallback {fallback!r} is not a key function"
        raise ConfigError(msg)
    return fallback


def by_api_key(header: str = "X-API-Key", *, fallback: KeyFunc | None = None) -> KeyFunc:
    """Key by the API key a client sends, hashed.

    The key is never stored: the store key is `"apikey:"` and 32 hex digits
    of its SHA-256. A request without the header is keyed by `fallback`, or
    not limited by this limiter when there is none (authentication normally
    refuses it first).

    Args:
        header: The header carrying the key.
        fallback: The key function for requests without the header.

    Raises:
        ConfigError: `header` is not a header name.

    Examples:
        >>> hashed = by_api_key()({"type": "http", "headers": [(b"x-api-key", b"k-123")]})
        >>> hashed.startswith("apikey:"), "k-123" in hashed
        (True, False)
    """
    return _ByHeader(
        _header_name("by_api_key", header), True, "apikey:", _fallback("by_api_key", fallback)
    )


def by_header(name: str, *, fallback: KeyFunc | None = None) -> KeyFunc:
    """Key by the value of a request header (a tenant id a gateway sets, ...).

    Values over 256 bytes are hashed, so that a client cannot make the
    store hold large keys. A request without the header is keyed by
    `fallback`, or not limited by this limiter when there is none.

    Security: a client can send any header; key by one only when a proxy or
    an earlier layer you run sets it (and strips the client's own).

    Args:
        name: The header's name (any case).
        fallback: The key function for requests without the header.

    Raises:
        ConfigError: `name` is not a header name.

    Examples:
        >>> by_header("X-Tenant")({"type": "http", "headers": [(b"x-tenant", b"acme")]})
        'acme'
    """
    return _ByHeader(
        _header_name("by_header", name), False, "sha256:", _fallback("by_header", fallback)
    )
