"""The IP filter: allow and deny lists of networks, for the app and per route.

[`IPFilterMiddleware`][apiguard.IPFilterMiddleware] refuses a request (or a
WebSocket handshake) with `403` problem details when the client's address,
resolved behind your trusted proxies only, is denied or outside an allow
list; [`IPRules`][apiguard.ipfilter.IPRules] gives one route lists of its own.
"""

from __future__ import annotations

from apiguard.ipfilter.middleware import IPFilterMiddleware
from apiguard.ipfilter.rules import IPRules

__all__ = ["IPFilterMiddleware", "IPRules"]
