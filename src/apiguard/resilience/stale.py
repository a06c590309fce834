"""`StaleIfError`: the last good response to the same `GET`, served when the app cannot answer.

RFC 5861 §4 lets a cache serve a stale response when revalidation meets an
error; here the "revalidation" is the app's own answer, and the error a
timeout, an open breaker or a shed request. Good `GET` responses are kept
as they pass (see `_stored` for which ones may be), for a bounded time and
size, keyed so that a copy is never served to anyone it was not for.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Final, TypeAlias

from apiguard._asgi import get_headers
from apiguard._clock import clock
from apiguard._types import ASGIApp, Message, Scope, Send
from apiguard.context import CONTEXT_KEY, RequestContext
from apiguard.errors import StorageError
from apiguard.layer import Answer, Options, checked
from apiguard.principal import Principal
from apiguard.resilience._stored import (
    HOP_BY_HOP,
    VARY_MARK,
    Stored,
    cache_control,
    decode,
    encode,
    encode_vary,
    freshness,
    primary_key,
    variant_key,
)
from apiguard.resilience.fallbacks import Fallback, FallbackReason, fallback_decision
from apiguard.routing import RoutePolicies, request_method
from apiguard.storage import KeyValueStore, MemoryKeyValue, Store, open_store

__all__ = ["StaleIfError"]

logger = logging.getLogger("apiguard.resilience")

#: Directives that keep a response out of the store (see `_stored`).
_NEVER_KEEP: Final = frozenset(
    {"private", "no-store", "no-cache", "must-revalidate", "proxy-revalidate"}
)
#: A copy (one URL, caller and variant) is rewritten at most this often per
#: process: a hot `GET` costs the store one write a second, not one per
#: request, and no copying in between.
_REWRITE_AFTER: Final = 1.0
_MEMO_SIZE: Final = 10_000
_ANONYMOUS: Final = b"\x00anonymous"
_READS: Final = frozenset({"GET", "HEAD"})
_DETAIL: Final = {"timeout": b"timeout", "breaker": b"breaker", "shed": b"shed"}


#: Host, path, query, caller: what a copy is kept for, before its `Vary`.
_Ident: TypeAlias = tuple[bytes, bytes, bytes, bytes]
#: The values of the request headers a `Vary` names, as sent (absent: empty).
_Values: TypeAlias = tuple[tuple[bytes, ...], ...]


def _caller(principal: Principal | None) -> bytes:
    """The caller part of a copy's key: the principal's method and id, or anonymous."""
    if principal is None:
        return _ANONYMOUS
    method = principal.method or ""
    return f"{len(method)}:{method}:{principal.id}".encode()


def _values(scope: Scope, names: tuple[bytes, ...]) -> _Values:
    return tuple(tuple(get_headers(scope, name)) for name in names)


class _Route:
    """Where copies are kept on a route: at all, and for authenticated callers too."""

    __slots__ = ("authenticated", "kept")

    def __init__(self, kept: bool, authenticated: bool) -> None:
        self.kept = kept
        self.authenticated = authenticated


class StaleIfError(Fallback):
    """Serve the last good response to the same `GET`, for a while, when the app cannot answer.

    Good responses (a status in `statuses`, to `GET`) are kept as they pass
    through the layer that holds this fallback, and served (to `GET` and
    `HEAD`) when that layer does not let the app answer: marked with
    `Cache-Status` (RFC 9211: `apiguard; fwd=stale; ttl=-42; detail=timeout`,
    `ttl` being the copy's freshness left, negative once stale) and `Age`
    (RFC 9111 §5.1). `Warning` (110/111) is obsolete since RFC 9111 and is
    not sent.

    A copy is served to no one it was not for:

    - it is keyed by the URL (`Host`, path, query) and, for authenticated
      callers, by the principal; a request carrying `Authorization` with
      no principal established is never kept nor served, and a response
      whose principal was established inside the layer holding this
      fallback (authentication under an outer timeout) is never kept;
    - the request headers its `Vary` names are part of its key, and
      `Vary: *` is never kept;
    - `private`, `no-store`, `no-cache`, `must-revalidate`,
      `proxy-revalidate` and `Set-Cookie` responses are never kept, nor the
      response to a request that says `Cache-Control: no-store`; a request
      that says `no-cache` is never served a stale copy;
    - responses to authenticated callers are kept only on the routes listed
      in `authenticated`.

    Args:
        storage: `"memory://"` (the default: this process, bounded by
            `max_entries` and `max_bytes`) or a store URI with a key-value
            part (`"redis://host:6379/0"`, `rediss://`, `redis+cluster://`,
            `redis+sentinel://`), shared by every worker.
        ttl: Seconds after it became stale that a copy may be served, when
            the response does not say (`Cache-Control: stale-if-error=N`
            says, and wins).
        max_ttl: The most seconds any copy is kept, whatever the response
            says (its freshness plus its `stale-if-error`).
        statuses: The statuses of the responses kept.
        max_body_bytes: Bodies larger than this are not kept.
        max_entries: Copies held at most in memory.
        max_bytes: Bytes of copies held at most in memory.
        routes: Route keys (`"GET /menu"`) where copies are kept; by default
            every route.
        authenticated: Route keys where responses to authenticated callers
            are kept too, each for its principal alone.
        timeout: Seconds a store call may take (less when the request's
            deadline leaves less, while it runs).
        name: The fallback's name in decisions and store keys.

    Raises:
        ConfigError: an option is out of range, a route key is malformed,
            or `storage` has no key-value part (`memcached://`, `mongodb://`).

    Examples:
        >>> stale = StaleIfError(ttl=600, authenticated=["GET /me/orders"])
        >>> stale.ttl, stale.store_display
        (600.0, 'memory://')
    """

    @checked("StaleIfError")
    def __init__(
        self,
        *,
        storage: str = "memory://",
        ttl: float = 300.0,
        max_ttl: float = 86_400.0,
        statuses: Iterable[int] = (200,),
        max_body_bytes: int = 1_048_576,
        max_entries: int = 10_000,
        max_bytes: int = 16 * 1_048_576,
        routes: Iterable[str] | None = None,
        authenticated: Iterable[str] = (),
        timeout: float = 0.25,
        name: str = "stale",
    ) -> None:
        options = Options("StaleIfError")
        self.name = options.layer_name(name)
        self.max_ttl = options.seconds("max_ttl", max_ttl, high=30 * 86_400.0)
        self.ttl = options.seconds("ttl", ttl, high=self.max_ttl, zero=True)
        if isinstance(statuses, str | bytes) or not isinstance(statuses, Iterable):
            options.fail("statuses", statuses, "is not a list of HTTP statuses")
        self.statuses = frozenset(
            options.integer("statuses", status, low=200, high=299) for status in statuses
        )
        self.max_body_bytes = options.integer(
            "max_body_bytes", max_body_bytes, low=0, high=64 * 1_048_576
        )
        entries = options.integer("max_entries", max_entries, low=1, high=10_000_000)
        size = options.integer("max_bytes", max_bytes, low=1024, high=2**40)
        self.timeout = options.seconds("timeout", timeout, high=60.0)
        kept = None if routes is None else options.strings("routes", routes)
        opted = options.strings("authenticated", authenticated)
        table: dict[str, _Route] = {}
        for key in kept or ():
            table[key] = _Route(True, key in opted)
        for key in opted:
            table.setdefault(key, _Route(True, True))
        default = _Route(kept is None, False)
        self.routes: RoutePolicies[_Route] = RoutePolicies("routes", table, default)
        self._route_checks = bool(table)
        self._store: Store | None = None
        if not isinstance(storage, str) or storage.partition("://")[0].lower() != "memory":
            store = open_store(storage, timeout=self.timeout)
            if store.kv is None:
                options.fail(
                    "storage",
                    store.display,
                    "has no key-value part; use 'memory://' or a Redis URI",
                )
            self._store = store
            self.kv: KeyValueStore = store.kv
            self.store_display = store.display
        else:
            self.kv = MemoryKeyValue(max_entries=entries, max_bytes=size)
            self.store_display = "memory://"
        #: What this process last wrote for each URL and caller: the request
        #: headers its copies vary on, and when the copy was written (for a
        #: copy without `Vary`); then when each variant was written.
        self._memo: dict[_Ident, tuple[tuple[bytes, ...], float]] = {}
        self._variants: dict[tuple[_Ident, _Values], float] = {}

    @property
    def store(self) -> Store | None:
        """The shared store copies live in (`None` for this process's memory)."""
        return self._store

    # --- the fallback protocol -------------------------------------------------------

    @property
    def watches(self) -> bool:
        """It keeps good responses as they pass."""
        return True

    def bind(self, app: ASGIApp) -> None:
        """Check the route keys against the app."""
        self.routes.bind(app)

    async def open(self) -> None:
        """Connect the shared store at start-up."""
        if self._store is not None:
            await self._store.open()

    async def aclose(self) -> None:
        """Close the shared store at shutdown."""
        if self._store is not None:
            await self._store.aclose()

    def answers(self) -> tuple[Answer, ...]:
        """A kept response: the statuses kept, marked with `Cache-Status` and `Age`."""
        return tuple(
            Answer(
                status,
                "stale-if-error",
                ("Cache-Status", "Age"),
                description="The last good response to this request, served stale.",
            )
            for status in sorted(self.statuses)
        )

    def _ident(self, scope: Scope, *, keeping: bool) -> _Ident | None:
        """What a copy for this request is kept under, or `None` when none may be.

        Host, path, query and caller, read from fields that routing never
        rewrites (`raw_path`, not `root_path`), so that the layer finds the
        same copy when it serves as when it kept.
        """
        host = b""
        authorization = False
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
            elif name == b"authorization":
                authorization = True
            elif name == b"cache-control":
                directives = cache_control(get_headers(scope, b"cache-control"))
                # RFC 9111 §5.2.1.5 (no-store: keep nothing), §5.2.1.4
                # (no-cache: the client wants no reuse without validation).
                if "no-store" in directives or (not keeping and "no-cache" in directives):
                    return None
        context: RequestContext | None = scope.get(CONTEXT_KEY)
        principal = context.principal if context is not None else None
        route = self.routes.lookup(scope) if self._route_checks or principal else None
        if route is not None and not route.kept:
            return None
        if principal is None:
            if authorization:
                return None  # a credential no layer turned into a principal: no key for it
            caller = _ANONYMOUS
        elif route is None or not route.authenticated:
            return None
        else:
            caller = _caller(principal)
        target: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        return host, target, scope.get("query_string", b""), caller

    def _wrote(self, scope: Scope, ident: _Ident, vary: list[bytes]) -> None:
        memo, variants = self._memo, self._variants
        if len(memo) >= _MEMO_SIZE or len(variants) >= _MEMO_SIZE:
            memo.clear()
            variants.clear()
        now = clock.monotonic()
        if vary:
            names = tuple(vary)
            memo[ident] = (names, -math.inf)
            variants[ident, _values(scope, names)] = now
        else:
            memo[ident] = ((), now)

    def watch(self, scope: Scope, send: Send) -> Send:
        """Keep the response to this `GET` if it turns out good."""
        if scope.get("method") != "GET":  # the method as sent: `get` is not GET here
            return send
        ident = self._ident(scope, keeping=True)
        if ident is None:
            return send
        entry = self._memo.get(ident)
        if entry is not None:
            names, written = entry
            if names:
                written = self._variants.get((ident, _values(scope, names)), -math.inf)
            if clock.monotonic() - written < _REWRITE_AFTER:
                return send  # kept less than a second ago: no copy of this one
        return _Keeper(self, scope, send, ident)

    async def serve(self, scope: Scope, reason: FallbackReason, send: Send) -> bool:
        """Send the kept copy for this request, if there is one still in its window."""
        method = request_method(scope)
        if method not in _READS:
            return False
        ident = self._ident(scope, keeping=False)
        if ident is None:
            return False
        key = primary_key(self.name, *ident)
        try:
            data = await self.kv.get(key, timeout=self.timeout)
            if data is not None and data[:4] == VARY_MARK:
                names = [name for name in data[4:].split(b",") if name]
                data = await self.kv.get(
                    variant_key(key, names, scope["headers"]), timeout=self.timeout
                )
        except StorageError as exc:
            logger.warning("apiguard: stale copies unavailable (%s)", exc)
            return False
        stored = decode(data) if data is not None else None
        now = clock.time()
        if stored is None or now > stored.until:
            return False
        age = max(int(now - stored.generated), 0)
        fresh = stored.lifetime - age
        status = b"fwd=stale" if reason == "timeout" else b"hit"
        headers = [
            *stored.headers,
            (b"content-length", b"%d" % len(stored.body)),
            (b"age", b"%d" % age),
            (
                b"cache-status",
                b"apiguard; %b; ttl=%d; detail=%b" % (status, fresh, _DETAIL[reason]),
            ),
        ]
        fallback_decision(scope, self.name, reason, stored.status, "stale", **{"stale.age": age})
        await send({"type": "http.response.start", "status": stored.status, "headers": headers})
        body = b"" if method == "HEAD" else stored.body
        await send({"type": "http.response.body", "body": body, "more_body": False})
        return True

    # --- keeping ---------------------------------------------------------------------

    async def keep(
        self,
        scope: Scope,
        ident: _Ident,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> None:
        """Store a good response (called once it has been sent whole)."""
        context: RequestContext | None = scope.get(CONTEXT_KEY)
        if _caller(context.principal if context is not None else None) != ident[3]:
            # The copy was keyed before a layer inside this one (authentication
            # under an outer timeout) established who is calling: the response
            # is that principal's, and the key says another caller's.
            return
        directives = cache_control(value for name, value in headers if name == b"cache-control")
        if _NEVER_KEEP.intersection(directives):
            return
        vary: list[bytes] = []
        kept: list[tuple[bytes, bytes]] = []
        age = 0
        for name, value in headers:
            lowered = name.lower()
            if lowered == b"set-cookie":
                return
            if lowered == b"vary":
                for item in value.split(b","):
                    item = item.strip().lower()
                    if item == b"*":
                        return  # RFC 9111 §4.1: matches no later request
                    if item and item not in vary:
                        vary.append(item)
            elif lowered == b"age" and value.strip().isdigit():
                age = int(value)
            if lowered not in HOP_BY_HOP and lowered != b"age":
                kept.append((lowered, value))
        lifetime, stale_for = freshness(directives)
        window = min(lifetime + (self.ttl if stale_for is None else stale_for), self.max_ttl)
        if window <= 0:
            return
        vary.sort()
        key = primary_key(self.name, *ident)
        target = variant_key(key, vary, scope["headers"]) if vary else key
        timeout = self.timeout if context is None else context.bound(self.timeout)
        if timeout <= 0.0:
            return  # the request's time is up: no write on its behalf
        now = clock.time()
        record = encode(Stored(status, kept, body, now - age, lifetime, now - age + window))
        # The store forgets the copy a second after its window: `until`,
        # checked when serving, is what decides.
        ttl = max(window - age, 0.0) + 1.0
        try:
            if vary:
                await self.kv.put(key, encode_vary(vary), ttl, timeout=timeout)
            await self.kv.put(target, record, ttl, timeout=timeout)
        except StorageError as exc:
            logger.debug("apiguard: a stale copy was not kept (%s)", exc)
            return
        self._wrote(scope, ident, vary)

    def __repr__(self) -> str:
        return f"StaleIfError(storage={self.store_display!r}, ttl={self.ttl:g}, name={self.name!r})"


class _Keeper:
    """The `send` of one `GET`: forwards everything, keeps a copy of a good response."""

    __slots__ = ("_body", "_headers", "_ident", "_scope", "_send", "_size", "_stale", "_status")

    def __init__(
        self,
        stale: StaleIfError,
        scope: Scope,
        send: Send,
        ident: tuple[bytes, bytes, bytes, bytes],
    ) -> None:
        self._stale = stale
        self._scope = scope
        self._send = send
        self._ident = ident
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] | None = None
        self._size = 0

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            status = message["status"]
            if status in self._stale.statuses:
                self._status = status
                self._headers = list(message.get("headers", ()))
                self._body = []
            await self._send(message)
            return
        body = self._body
        if kind != "http.response.body" or body is None:
            await self._send(message)
            return
        chunk: bytes = message.get("body", b"")
        more = message.get("more_body", False)
        self._size += len(chunk)
        if self._size > self._stale.max_body_bytes:
            self._body = None  # too large to keep: stop copying
        elif chunk:
            body.append(chunk)
        await self._send(message)
        if not more and self._body is not None:
            self._body = None
            await self._stale.keep(
                self._scope, self._ident, self._status, self._headers, b"".join(body)
            )
