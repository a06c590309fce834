"""What a request says about itself, as the HTTP semantic conventions name it.

Methods (`_OTHER` for the unknown), the server's authority from `Host`, the
query string with credentials redacted, and a propagation getter over the
raw header pairs. Everything here is computed from bytes the server gave,
with small bounded caches for the values that repeat (a service answers for
a handful of hosts).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Final
from urllib.parse import unquote_plus

from opentelemetry.propagators.textmap import Getter

__all__ = [
    "DEFAULT_KNOWN_METHODS",
    "DEFAULT_REDACTED_QUERY",
    "OTHER",
    "RAW_GETTER",
    "QueryRedactor",
    "authority",
    "known_methods",
]

#: RFC 9110's methods, PATCH (RFC 5789) and QUERY (httpbis-safe-method-w-body):
#: the semantic conventions' default "known" methods.
DEFAULT_KNOWN_METHODS: Final = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE"}
)
#: What `http.request.method` says for a method not in the known list.
OTHER: Final = "_OTHER"
_KNOWN_METHODS_ENV: Final = "OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS"

#: Query parameters whose values never reach a span, compared without case
#: after percent-decoding: the conventions' list for `url.query` (signed URLs
#: of S3, Azure and GCS), AWS SigV4's query credentials, and the usual names
#: of credentials sent in a query (RFC 6750 §2.3's `access_token`, API keys).
DEFAULT_REDACTED_QUERY: Final = frozenset(
    {
        "awsaccesskeyid",
        "signature",
        "sig",
        "x-goog-signature",
        "x-goog-credential",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
        "access_token",
        "id_token",
        "refresh_token",
        "client_secret",
        "password",
        "api_key",
        "apikey",
        "key",
        "token",
    }
)
REDACTED: Final = "REDACTED"

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_CACHE_SIZE: Final = 256
_CACHED_HOST_BYTES: Final = 256


def known_methods() -> frozenset[str]:
    """The known methods: `OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS` when set, else the default.

    The variable is a comma-separated, case-sensitive list that replaces the
    default list whole (it does not add to it), as the conventions require.
    """
    listed = os.environ.get(_KNOWN_METHODS_ENV, "").strip()
    if not listed:
        return DEFAULT_KNOWN_METHODS
    return frozenset(method.strip() for method in listed.split(",") if method.strip())


_authorities: dict[tuple[bytes, str], tuple[str, int | None] | None] = {}


def authority(host: bytes, scheme: str) -> tuple[str, int | None] | None:
    """`server.address` and `server.port` from a `Host` value (the scheme's port by default).

    `None` for a value that is not an authority (a malformed or hostile
    `Host`): the attributes are then left out rather than guessed.
    """
    key = (host, scheme)
    found = _authorities.get(key, False)
    if found is not False:
        return found  # type: ignore[return-value]
    parsed = _parse_authority(host, scheme)
    if len(host) <= _CACHED_HOST_BYTES:
        if len(_authorities) >= _CACHE_SIZE:
            _authorities.clear()  # random Host values (an attack) cannot grow it
        _authorities[key] = parsed
    return parsed


def _parse_authority(host: bytes, scheme: str) -> tuple[str, int | None] | None:
    text = host.decode("latin-1").strip()
    if not text or any(c in text for c in "/?#@ \t"):
        return None
    port_text = ""
    if text.startswith("["):  # an IPv6 literal, RFC 3986 §3.2.2
        address, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:]
    else:
        address, _, port_text = text.partition(":")
        if ":" in port_text:
            return None
    if not address:
        return None
    port: int | None = _DEFAULT_PORTS.get(scheme)
    if port_text:
        if not port_text.isascii() or not port_text.isdigit() or int(port_text) > 65535:
            return None
        port = int(port_text)
    return address.lower(), port


class QueryRedactor:
    """Turns a raw query string into `url.query`, credentials' values replaced by `REDACTED`.

    Parameter names are compared without case after percent-decoding, as a
    framework decodes them before an endpoint or an authenticator reads
    them: `Access%5Ftoken=...` is redacted like `access_token=...`. The rest
    of the query is kept as sent.
    """

    __slots__ = ("names",)

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(name.lower() for name in names)

    def __call__(self, raw: bytes) -> str:
        text = raw.decode("latin-1")
        names = self.names
        parts = text.split("&")
        changed = False
        for index, part in enumerate(parts):
            name, equals, _ = part.partition("=")
            if not equals:
                continue
            key = unquote_plus(name) if "%" in name or "+" in name else name
            if key.lower() in names:
                parts[index] = f"{name}={REDACTED}"
                changed = True
        return "&".join(parts) if changed else text


class _RawHeaders(Getter[list[tuple[bytes, bytes]]]):
    """The propagators' view of the raw ASGI header pairs (no `Headers` object built)."""

    def get(self, carrier: list[tuple[bytes, bytes]], key: str) -> list[str] | None:
        name = key.lower().encode("latin-1")
        values = [value.decode("latin-1") for header, value in carrier if header == name]
        if not values:
            return None
        if name == b"baggage" and len(values) > 1:
            # Several fields are one list (RFC 9110 §5.3); the W3C baggage
            # propagator reads only the first value it is given.
            return [",".join(values)]
        return values

    def keys(self, carrier: list[tuple[bytes, bytes]]) -> list[str]:
        return [header.decode("latin-1") for header, _ in carrier]


RAW_GETTER: Final = _RawHeaders()
