"""Per-route policy: resolve a request to the route the app will dispatch it to.

Options that vary by route take a mapping from `"METHOD /template"` or
`"/template"` (Starlette path syntax) to a policy. A request is resolved to
exactly the route the app's own router would dispatch it to, or to none: the
resolver walks the router's routes as Starlette and FastAPI walk them
(mounts, sub-applications, `Host` routes, `root_path`, FastAPI's nested
included routers) and matches with the framework's own compiled regexes, so
that no path variant reaches an endpoint while escaping that route's policy.

Cost: a segment trie narrows the routes to try to those whose literal segments
fit the path, so an uncached resolution does not grow with the number of
routes; a bounded cache serves repeated paths, and admits a path only on its
second sighting and evicts only entries not used since the last sweep, so an
attacker sending random ids neither fills it nor flushes it.

The package, one concern a module: `_keys` (the route-key grammar), `_tree`
(the compiled levels and their trie), `_framework` (the compiler, and every
detail of Starlette's and FastAPI's internals it reads), `_resolver` (the
resolver, its cache, the shared resolvers) and `_policies` (per-route
policies).
"""

from __future__ import annotations

from apiguard.routing._framework import find_router, router_of
from apiguard.routing._keys import WEBSOCKET, normalize_template, parse_route_key, request_method
from apiguard.routing._policies import RoutePolicies
from apiguard.routing._resolver import Resolver, resolve, resolver_for, routes_of
from apiguard.routing._tree import RouteInfo, RouteMatch

__all__ = [
    "WEBSOCKET",
    "Resolver",
    "RouteInfo",
    "RouteMatch",
    "RoutePolicies",
    "find_router",
    "normalize_template",
    "parse_route_key",
    "request_method",
    "resolve",
    "resolver_for",
    "router_of",
    "routes_of",
]
