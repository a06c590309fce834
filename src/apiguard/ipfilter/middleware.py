"""`IPFilterMiddleware`: allow and deny lists of networks, for the app and per route."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Final

from apiguard._types import ASGIApp, Receive, Scope, Send
from apiguard.address import ClientAddress
from apiguard.context import CONTEXT_KEY, Decision, RequestContext, get_context
from apiguard.ipfilter._networks import Network, Verdicts, parse_networks
from apiguard.ipfilter.rules import IPRules
from apiguard.layer import Answer, Description, JSONValue, Options, checked
from apiguard.problems import Problem, ProblemResponse
from apiguard.routing import RoutePolicies

__all__ = ["IPFilterMiddleware"]

_LAYER: Final = "ipfilter"
_KINDS: Final = frozenset({"http", "websocket"})
#: One detail for every refusal: which list, or which entry, is not the client's business.
_DETAIL: Final = "Requests from this address are not allowed here."


class IPFilterMiddleware:
    """Refuses requests by the client's address: allow and deny lists of networks.

    The client's address is the core's (see
    [`ClientAddress`][apiguard.address.ClientAddress]): the peer the server
    reports, or, only when that peer is one of `trusted_proxies`, the client
    named in `proxy_header`. A forwarding header sent by anyone else changes
    nothing. IPv4-mapped IPv6 addresses (`::ffff:203.0.113.9`, as a
    dual-stack socket reports IPv4 peers) are their IPv4 address, and match
    IPv4 rules; IPv6 rules match IPv6 clients.

    Precedence: a deny entry always wins. A request is refused when its
    address is on the deny list (the layer's, plus the route's), or when an
    allow list is in force and the address is not on it; the route's allow
    list, when it has one, replaces the layer's. So adding an allow entry
    never opens an address someone denied, and a route cannot lift the
    layer's deny list; to carve a hole in an allowed network, deny it
    (`allow=["10.0.0.0/8"], deny=["10.6.6.0/24"]`).

    A refusal is `403 Forbidden` in problem details, the same for every
    reason (the decision records which). WebSocket handshakes are filtered
    like requests, and refused with the 403 as an HTTP response where the
    server supports it (a close with code 1008 otherwise). A client whose
    address is not an address (a unix socket peer not behind a trusted
    proxy, a test client's name) matches no rule: it passes where no allow
    list is in force, and is refused where one is.

    Cost: the lists are compiled into sorted ranges at start-up; an address
    is judged by one bisection, whatever the number of rules, and the
    verdict cached per address, so a request pays a dictionary lookup.

    Args:
        app: The ASGI app to protect.
        name: The layer's name, in its decisions, metrics and the policy report.
        allow: CIDRs (`"10.0.0.0/8"`, `"2001:db8::/32"`) or addresses allowed;
            every other address is refused. `None` (the default): every
            address not denied.
        deny: CIDRs or addresses refused, everywhere, whatever `allow` says.
        routes: Route keys (`"/admin/{path:path}"`, `"POST /webhooks"`) to
            [`IPRules`][apiguard.ipfilter.IPRules]: an allow list in place of
            `allow`, and a deny list added to `deny`.
        trusted_proxies: Your proxies (CIDRs, addresses, `"unix"`): only a
            request from one of them has its `proxy_header` believed.
        proxy_header: `"X-Forwarded-For"` or `"Forwarded"` (RFC 7239): the
            one header your proxies append the client to.

    Raises:
        ConfigError: a network is malformed or has host bits set, a list is
            empty or not a list, a route key names no route of the app.

    Examples:
        >>> from starlette.applications import Starlette
        >>> from starlette.middleware import Middleware
        >>> from apiguard import guard
        >>> from apiguard.ipfilter import IPRules
        >>> app = guard(
        ...     Starlette(),
        ...     Middleware(
        ...         IPFilterMiddleware,
        ...         deny=["192.0.2.0/24"],
        ...         routes={"/admin": IPRules(allow=["10.0.0.0/8"])},
        ...     ),
        ... )
    """

    @checked("IPFilterMiddleware", name="ipfilter")
    def __init__(
        self,
        app: ASGIApp,
        *,
        name: str = "ipfilter",
        allow: Iterable[str] | None = None,
        deny: Iterable[str] = (),
        routes: Mapping[str, IPRules] | None = None,
        trusted_proxies: Iterable[str] = (),
        proxy_header: str = "X-Forwarded-For",
    ) -> None:
        self.name = Options().layer_name(name)
        options = Options.of("IPFilterMiddleware", name)
        self.client = ClientAddress(
            trusted_proxies=trusted_proxies, proxy_header=proxy_header, owner=options.owner
        )
        self._trusted = bool(self.client.trusted_proxies)
        if isinstance(allow, list | tuple) and not allow:
            options.fail("allow", allow, "lets no address in; leave allow out to let every one in")
        allowed = None if allow is None else parse_networks(options, "allow", allow)
        denied = parse_networks(options, "deny", deny) if _given(deny) else ()
        self.default = Verdicts(allowed, denied)
        table: dict[str, Verdicts] = {}
        for key, rules in options.mapping("routes", routes).items():
            table[key] = self._route(options, key, rules, allowed, denied)
        with options.checking():
            self.routes: RoutePolicies[Verdicts] = RoutePolicies("routes", table, self.default)
        self._per_route = bool(table)
        self._allow = Decision(_LAYER, "allow", name)
        self._refusal = ProblemResponse(Problem(status=403, detail=_DETAIL))

        self.app = options.bind_at_startup(app, self.routes)

    @staticmethod
    def _route(
        options: Options,
        key: str,
        rules: object,
        allowed: tuple[Network, ...] | None,
        denied: tuple[Network, ...],
    ) -> Verdicts:
        if not isinstance(rules, IPRules):
            options.fail(f"routes[{key!r}]", rules, "is not IPRules(allow=..., deny=...)")
        if rules.allow is not None:
            allowed = parse_networks(options, f"routes[{key!r}].allow", rules.allow)
        if _given(rules.deny):
            denied += parse_networks(options, f"routes[{key!r}].deny", rules.deny)
        return Verdicts(allowed, denied)

    def describe(self, method: str, key: str) -> Description:
        """The allow and deny lists in force for requests of `method` on route `key`."""
        verdicts = self.routes.get(method, key)
        summary: dict[str, JSONValue] = {
            "allow": "any" if verdicts.allow is None else [str(n) for n in verdicts.allow],
            "deny": [str(network) for network in verdicts.deny],
        }
        if self._trusted:
            summary["trusted_proxies"] = list(self.client.trusted_proxies)
            summary["proxy_header"] = self.client.proxy_header
        if not verdicts.restricts:
            return Description(_LAYER, self.name, False, summary)
        answer = Answer(403, "address-refused", description=_DETAIL)
        return Description(_LAYER, self.name, True, summary, (answer,))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, or refuse it, by the client's address."""
        if scope["type"] not in _KINDS:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        if client and not self._trusted and client[0]:
            host: str = client[0]  # the usual case, without a call
        else:
            host = self.client(scope)
        verdicts = self.routes.lookup(scope) if self._per_route else self.default
        allowed = verdicts._cache.get(host)
        if allowed is None:
            allowed = verdicts.allows(host)
        context: RequestContext | None = scope.get(CONTEXT_KEY)
        if context is None:
            context = get_context(scope)
        # The address as resolved, for telemetry and later layers.
        context.client = host
        context.client_resolver = self.client
        if allowed:
            context.record(self._allow)
            await self.app(scope, receive, send)
            return
        reason = "denied" if verdicts.denied(host) else "not-allowed"
        attributes = MappingProxyType({"client.address": host})
        context.record(Decision(_LAYER, "reject", self.name, reason, 403, attributes=attributes))
        await self._refusal.send(scope, send)


def _given(value: object) -> bool:
    """Whether a deny list was given (an empty tuple, the default, is none)."""
    return not (isinstance(value, tuple | list) and not value)
