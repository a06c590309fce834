"""The IP filter: its cost per request over the bare app, flat in the number of rules.

Deny lists of 1 to 100,000 networks (random /24s, the shape of a
blocklist) and an allow list of 10,000 with the client inside one: the
lookup is a bisection over merged ranges, and the verdict is cached per
address, so every row should cost the same. The cache-miss row cycles
through 20,000 client addresses, more than the cache keeps, so that every
request parses its address and bisects; the per-route row resolves the
route too; the trusted-proxy row reads `X-Forwarded-For` behind a trusted
proxy. A refused request is compared with a layer in the same place that
answers a canned 403 and does nothing else.
"""

from __future__ import annotations

import ipaddress
import random
from typing import Any

from starlette.middleware import Middleware

from apiguard import IPFilterMiddleware, guard
from apiguard._asgi import CannedResponse
from apiguard.ipfilter import IPRules
from benchmarks.apps import starlette_app
from benchmarks.driver import ASGICase, Case, Request, Result, paired_overhead, quick

TITLE = "ipfilter: µs per request over the bare app, by the number of rules"

CLIENT = "203.0.113.9"
GET = Request("GET", "/orders/42", client=(CLIENT, 52144))


def _blocklist(count: int, seed: int = 7) -> list[str]:
    """`count` random /24s outside 203.0.113.0/24 (the client's)."""
    rng = random.Random(seed)
    found: set[str] = set()
    while len(found) < count:
        network = ipaddress.IPv4Network((rng.getrandbits(24) << 8, 24))
        if not network.overlaps(ipaddress.IPv4Network("203.0.113.0/24")):
            found.add(str(network))
    return sorted(found)


def _filtered(**options: Any) -> Any:
    return guard(starlette_app(), Middleware(IPFilterMiddleware, **options))


class Rotating(ASGICase):
    """Cycles through its requests across batches, not from the first one each batch.

    With more distinct clients than the verdict cache keeps (8,192), every
    request is a miss: the address is parsed and bisected.
    """

    async def batch(self, n: int) -> int:
        shift = n % len(self.templates)
        self.templates = self.templates[shift:] + self.templates[:shift]  # not timed
        return await super().batch(n)


class Refuse403:
    """A layer that answers a canned 403 and does nothing else: the floor for a refusal."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.response = CannedResponse(
            403, [(b"content-type", b"application/problem+json")], b'{"status":403}'
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.response(scope, receive, send)


def cases() -> list[Case]:
    base = "starlette GET"
    allow = [*_blocklist(9_999), "203.0.113.0/24"]

    def many_clients(i: int) -> Request:
        address = str(ipaddress.IPv4Address(0x0A000000 + i))
        return Request("GET", "/orders/42", client=(address, 52144))

    def via_proxy(i: int) -> Request:
        return Request(
            "GET",
            "/orders/42",
            [(b"x-forwarded-for", b"203.0.113.9")],
            client=("10.0.0.5", 52144),
        )

    return [
        ASGICase(base, starlette_app(), GET),
        *[
            ASGICase(
                f"ipfilter, deny {count:,} network{'s' * (count > 1)}",
                _filtered(deny=_blocklist(count)),
                GET,
                baseline=base,
            )
            for count in ((1, 100) if quick() else (1, 100, 10_000, 100_000))
        ],
        ASGICase("ipfilter, allow 10,000 networks", _filtered(allow=allow), GET, baseline=base),
        Rotating(
            "ipfilter, deny 10,000, every client new (cache miss)",
            _filtered(deny=_blocklist(10_000)),
            many_clients,
            variants=200 if quick() else 20_000,
            baseline=base,
        ),
        ASGICase(
            "ipfilter, per-route rules",
            _filtered(
                deny=_blocklist(100),
                routes={"/orders/{order_id}": IPRules(allow=["203.0.113.0/24"])},
            ),
            GET,
            baseline=base,
        ),
        ASGICase(
            "ipfilter, behind a trusted proxy",
            _filtered(deny=_blocklist(100), trusted_proxies=["10.0.0.0/8"]),
            via_proxy,
            baseline=base,
        ),
        ASGICase(
            "canned 403 layer",
            guard(starlette_app(), Middleware(Refuse403)),
            GET,
            expect=403,
        ),
        ASGICase(
            "ipfilter, refused (403)",
            _filtered(deny=["203.0.113.0/24"]),
            GET,
            expect=403,
            baseline="canned 403 layer",
        ),
    ]


#: The budget of one layer on the allowed path (the benchmark issue).
TARGET_US = 3.0


def summary(results: list[Result]) -> str:
    """Each allowed row against the 3 µs budget, and the spread from 1 to 100,000 rules."""
    by_name = {r.case.name: r for r in results}
    base = by_name["starlette GET"]
    rows = [
        (r.case.name, paired_overhead(r, base)[0])
        for r in results
        if r.case.baseline == "starlette GET"
    ]
    lines = [
        f"Target: <= {TARGET_US:.0f} µs over the bare app on the allowed path.",
        "",
        "| case | overhead µs | margin µs |",
        "|---|---:|---:|",
        *(f"| {name} | {over:.2f} | {TARGET_US - over:+.2f} |" for name, over in rows),
    ]
    few = dict(rows).get("ipfilter, deny 1 network")
    many = dict(rows).get("ipfilter, deny 100,000 networks")
    if few is not None and many is not None:
        lines += ["", f"1 rule to 100,000 rules: {many - few:+.2f} µs."]
    return "\n".join(lines)
