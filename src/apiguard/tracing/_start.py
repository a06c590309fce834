"""The span's attributes known when a request arrives, from the scope alone.

The stable HTTP server conventions: method (and the original spelling when
it was folded), path, scheme, protocol version, `http.route` when resolved,
the query with credentials redacted, server and peer addresses, the client
as the core resolves it (trusted proxies applied), the user agent; and
whether a propagation header came with the request, so that context
extraction is skipped when none did.
"""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry import propagate

from apiguard._types import Scope
from apiguard.context import AttributeValue
from apiguard.tracing._request import QueryRedactor, authority

__all__ = ["PropagationFields", "start_attributes"]


class PropagationFields:
    """The header names the global propagator reads, lowercase bytes, re-read when it changes."""

    __slots__ = ("_fields", "_seen")

    def __init__(self) -> None:
        self._seen: object = None
        self._fields: frozenset[bytes] = frozenset()

    def current(self) -> frozenset[bytes]:
        """The fields of the propagator in force now."""
        textmap = propagate.get_global_textmap()
        if textmap is not self._seen:
            self._fields = frozenset(field.lower().encode("latin-1") for field in textmap.fields)
            self._seen = textmap
        return self._fields


def start_attributes(
    scope: Scope,
    method: str,
    route: str | None,
    redact: QueryRedactor | None,
    client: Callable[[Scope], str],
    fields: frozenset[bytes],
) -> tuple[dict[str, AttributeValue], bool]:
    """The span's attributes known at its start, and whether context was propagated."""
    scheme: str = scope.get("scheme", "http")
    attributes: dict[str, AttributeValue] = {
        "http.request.method": method,
        "url.path": scope["path"],
        "url.scheme": scheme,
    }
    raw_method: str = scope["method"]
    if raw_method != method:
        attributes["http.request.method_original"] = raw_method
    version = scope.get("http_version")
    if version:
        attributes["network.protocol.version"] = version
    if route is not None:
        attributes["http.route"] = route
    query: bytes = scope.get("query_string", b"")
    if query and redact is not None:
        attributes["url.query"] = redact(query)
    host = agent = None
    propagated = False
    for header, value in scope["headers"]:
        if header == b"host":
            if host is None:
                host = value
        elif header == b"user-agent":
            agent = value
        elif header in fields:
            propagated = True
    server = authority(host, scheme) if host is not None else scope.get("server")
    if server:
        attributes["server.address"] = server[0]
        if server[1] is not None:
            attributes["server.port"] = server[1]
    peer = scope.get("client")
    if peer:
        attributes["network.peer.address"] = peer[0]
        attributes["network.peer.port"] = peer[1]
    attributes["client.address"] = client(scope)
    if agent is not None:
        attributes["user_agent.original"] = agent.decode("latin-1")
    return attributes, propagated
