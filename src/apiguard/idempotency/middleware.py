"""`IdempotencyMiddleware`: a keyed POST or PATCH runs once; a retry gets its response."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from typing import Final, Literal

from apiguard._asgi import (
    BodyTooLarge,
    ClientDisconnected,
    ReplayReceive,
    lifespan_hooks,
    read_body,
)
from apiguard._types import ASGIApp, Receive, Scope, Send
from apiguard.address import ClientAddress
from apiguard.context import AttributeValue, Decision, RequestContext, get_context
from apiguard.errors import StorageError
from apiguard.idempotency._flight import STORED, Flight
from apiguard.idempotency._key import MAX_KEY_LENGTH, Callers, fingerprint, parse_key, store_key
from apiguard.idempotency._policy import (
    MAX_TTL,
    Policy,
    RoutePolicy,
    byte_count,
    route_table,
)
from apiguard.idempotency._record import decode, replay
from apiguard.layer import Answer, Description, HeaderInfo, JSONValue, Options, checked
from apiguard.problems import Problem, ProblemResponse
from apiguard.routing import WEBSOCKET, RoutePolicies, request_method
from apiguard.routing._keys import fold_method
from apiguard.storage import Claim, KeyValueStore, MemoryStorage, Store, open_store

__all__ = ["IdempotencyMiddleware"]

logger = logging.getLogger("apiguard.idempotency")

OnStoreError = Literal["fail-open", "fail-closed"]

_LAYER: Final = "idempotency"
_HEADER: Final = b"idempotency-key"
_RETRY_AFTER: Final = b"retry-after"
_UNAVAILABLE: Final = "store-unavailable"

_DETAIL_MISSING: Final = "This resource needs an Idempotency-Key header."
_DETAIL_MALFORMED: Final = (
    f"The Idempotency-Key header must be one string of 1 to {MAX_KEY_LENGTH} characters."
)
_DETAIL_TOO_LARGE: Final = "The request body is too large to be made idempotent."
_DETAIL_CONFLICT: Final = (
    "A request with this Idempotency-Key is still being processed; retry after it completes."
)
_DETAIL_MISMATCH: Final = (
    "This Idempotency-Key was used for another request (method, host, path, query or body)."
)
_DETAIL_UNAVAILABLE: Final = "Idempotency keys cannot be checked right now; retry later."
_METHOD: Final = re.compile(r"^[A-Z][A-Z0-9_-]*$")
#: RFC 9110 §9.2.1: safe methods change nothing; there is nothing to run once.
_SAFE: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_KEY_DESCRIPTION: Final = (
    "A unique key per operation (a UUID), the same on every retry of it: the operation "
    "runs once and retries get its response."
)


def _problem(status: int, detail: str) -> ProblemResponse:
    return ProblemResponse(Problem(status=status, detail=detail))


class IdempotencyMiddleware:
    """Run a request carrying `Idempotency-Key` once; answer its retries with its response.

    Implements draft-ietf-httpapi-idempotency-key-header-07 for the routes
    and methods it covers (POST and PATCH everywhere, by default). A first
    request with a key claims the key and runs; its response (status,
    headers, body, up to `max_response_bytes`) is stored for `ttl` seconds
    and replayed, marked `Idempotent-Replayed: true`, to every later request
    with the same key and the same payload, without running the app. The
    same key with another payload (method, host, path, query or body) is 422; a
    repeat while the first is still running is 409; a missing key where
    `required` is 400, and so is a malformed one. Every refusal is problem
    details.

    Keys belong to the caller: the principal an authentication layer set
    (put this layer after it), else the client address. One caller can never
    replay another's response, nor block another's key.

    A claim is a lease of `lease` seconds, renewed every third of it while
    the request runs: a slow request is never run twice, and the claim of a
    worker that died expires. Responses of 5xx status (unless
    `store_server_errors`), 408, 425 and 429 are not stored, nor those of
    requests that raised, were cancelled or timed out (an inner timeout's
    504 or fallback, or any response a layer inside sent in the app's
    place, is not the operation's result), nor responses over
    `max_response_bytes` (passed through as they are): the claim is
    released, and a retry runs the request again.

    Args:
        app: The ASGI app to protect.
        name: The layer's name, in its decisions and store keys. Services
            sharing one store must name their layers apart.
        methods: The methods covered on every route (`routes` can add one
            on a route).
        required: Whether covered requests must carry a key (400 without).
        ttl: Seconds a response is kept and replayed (24 hours by default,
            as Stripe keeps them).
        lease: Seconds a claim lasts without renewal: how long a retry gets
            409 after the worker running the first request died.
        max_body_bytes: The largest request body fingerprinted (413 above),
            read before the app runs and handed to it unchanged.
        max_response_bytes: The largest response stored (headers and body).
        routes: Per-route [`RoutePolicy`][apiguard.idempotency.RoutePolicy],
            by route key (`"POST /payments"`).
        exempt: Route keys not covered (the key is ignored there).
        storage: Where claims and responses live: `"memory://"` (this
            process), `"redis://..."`, `"redis+cluster://..."`,
            `"redis+sentinel://..."`, as for the rate limiter. Stores
            without atomic claims (`memcached://`, `mongodb://`) are refused.
        store_timeout: Seconds a store call may take before it counts as a
            failure.
        on_store_error: `"fail-closed"` (the default: 503 + `Retry-After`,
            since failing open could run a payment twice) or `"fail-open"`
            (run the request without idempotency while the store is down).
        store_server_errors: Store 5xx responses too, so that a retry gets
            the same error rather than another try.
        trusted_proxies: The proxies whose `proxy_header` gives the address
            of an anonymous caller.
        proxy_header: `"X-Forwarded-For"` or `"Forwarded"`.

    Raises:
        ConfigError: an option is of the wrong type or out of range, a route
            key names no route, or the store has no key-value part.

    Examples:
        >>> from starlette.applications import Starlette
        >>> from starlette.middleware import Middleware
        >>> from apiguard import guard
        >>> app = guard(
        ...     Starlette(),
        ...     Middleware(IdempotencyMiddleware, required=True, storage="memory://"),
        ... )
    """

    @checked("IdempotencyMiddleware", name=_LAYER)
    def __init__(
        self,
        app: ASGIApp,
        *,
        name: str = _LAYER,
        methods: Iterable[str] = ("POST", "PATCH"),
        required: bool = False,
        ttl: float = 86400.0,
        lease: float = 30.0,
        max_body_bytes: int = 1_048_576,
        max_response_bytes: int = 1_048_576,
        routes: Mapping[str, RoutePolicy] | None = None,
        exempt: Iterable[str] | None = None,
        storage: str | MemoryStorage = "memory://",
        store_timeout: float = 0.25,
        on_store_error: OnStoreError = "fail-closed",
        store_server_errors: bool = False,
        trusted_proxies: Iterable[str] = (),
        proxy_header: str = "X-Forwarded-For",
    ) -> None:
        self.name = Options().layer_name(name)
        options = Options.of("IdempotencyMiddleware", name)
        self.lease = options.seconds("lease", lease, high=3600.0)
        self.store_timeout = options.seconds("store_timeout", store_timeout, high=60.0)
        self.on_store_error: OnStoreError = options.choice(  # type: ignore[assignment]
            "on_store_error", on_store_error, ("fail-open", "fail-closed")
        )
        self.store_server_errors = options.flag("store_server_errors", store_server_errors)
        self.default = Policy(
            _methods(options, methods),
            options.flag("required", required),
            options.seconds("ttl", ttl, high=MAX_TTL),
            byte_count(options, "max_body_bytes", max_body_bytes),
            byte_count(options, "max_response_bytes", max_response_bytes),
            False,
        )
        with options.checking():
            table = route_table(options, self.default, routes, exempt)
            self.routes: RoutePolicies[Policy] = RoutePolicies("routes", table, self.default)
            self.store: Store = open_store(storage, timeout=self.store_timeout)
            address = ClientAddress(
                trusted_proxies=trusted_proxies, proxy_header=proxy_header, owner=options.owner
            )
        kv = self.store.kv
        if kv is None:
            options.fail(
                "storage",
                storage,
                "has no atomic claims (a key-value part): use memory://, redis://, "
                "redis+cluster:// or redis+sentinel://",
            )
        self.kv: KeyValueStore = kv
        self._callers = Callers(address)
        self._missing = _problem(400, _DETAIL_MISSING)
        self._malformed = _problem(400, _DETAIL_MALFORMED)
        self._too_large = _problem(413, _DETAIL_TOO_LARGE)
        self._conflict = _problem(409, _DETAIL_CONFLICT)
        self._mismatch = _problem(422, _DETAIL_MISMATCH)
        self._unavailable = _problem(503, _DETAIL_UNAVAILABLE)
        self._skip_method = Decision(_LAYER, "skip", name, "method")
        self._skip_exempt = Decision(_LAYER, "skip", name, "exempt")
        self._skip_nokey = Decision(_LAYER, "skip", name, "no-key")
        self._reject_missing = Decision(_LAYER, "reject", name, "missing-key", 400)
        self._reject_malformed = Decision(_LAYER, "reject", name, "malformed-key", 400)
        self._reject_too_large = Decision(_LAYER, "reject", name, "content-too-large", 413)
        self._reject_conflict = Decision(_LAYER, "reject", name, "conflict", 409)
        self._reject_mismatch = Decision(_LAYER, "reject", name, "mismatch", 422)
        self._disconnected = Decision(_LAYER, "skip", name, "client-disconnected")
        self._claimed = Decision(_LAYER, "allow", name, "claimed")
        self._stored = Decision(_LAYER, "allow", name, STORED)

        self.app = options.bind_at_startup(app, self.routes)

    def describe(self, method: str, key: str) -> Description:
        """Whether requests of `method` on route `key` are made idempotent, and the answers."""
        if method == WEBSOCKET:
            return Description(_LAYER, self.name, False, {"websocket": "passes through"})
        policy = self.routes.get(method, key)
        summary: dict[str, JSONValue] = {
            "methods": [*sorted(policy.methods)],
            "store": self.store.display,
            "on_store_error": self.on_store_error,
        }
        if policy.exempt:
            summary["exempt"] = True
            return Description(_LAYER, self.name, False, summary)
        if fold_method(method) not in policy.methods:
            return Description(_LAYER, self.name, False, summary)
        summary.update(
            required=policy.required,
            ttl=policy.ttl,
            lease=self.lease,
            max_body_bytes=policy.max_body_bytes,
            max_response_bytes=policy.max_response_bytes,
        )
        answers = [
            Answer(400, "malformed-key", description=_DETAIL_MALFORMED),
            Answer(409, "conflict", description=_DETAIL_CONFLICT),
            Answer(413, "content-too-large", description=_DETAIL_TOO_LARGE),
            Answer(422, "mismatch", description=_DETAIL_MISMATCH),
        ]
        if policy.required:
            answers.insert(0, Answer(400, "missing-key", description=_DETAIL_MISSING))
        if self.on_store_error == "fail-closed":
            answers.append(
                Answer(503, _UNAVAILABLE, ("Retry-After",), description=_DETAIL_UNAVAILABLE)
            )
        header = HeaderInfo("Idempotency-Key", policy.required, _KEY_DESCRIPTION)
        return Description(
            _LAYER,
            self.name,
            True,
            summary,
            tuple(answers),
            request_headers=(header,),
            response_headers=("Idempotent-Replayed",),
        )

    async def aclose(self) -> None:
        """Close the store's connections (the memory store has none); runs at shutdown."""
        await self.store.aclose()

    # --- the request -----------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run a keyed request once, or answer it from the store."""
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                # Connect the store before the first request; close it at shutdown.
                await lifespan_hooks(
                    self.app, scope, receive, send, startup=self.store.open, shutdown=self.aclose
                )
                return
            await self.app(scope, receive, send)
            return
        policy = self.routes.lookup(scope)
        method: str = scope["method"]
        if method not in policy.methods:
            method = request_method(scope)  # `post` is covered as POST
            if method not in policy.methods:
                get_context(scope).record(self._skip_method)
                await self.app(scope, receive, send)
                return
        if policy.exempt:
            get_context(scope).record(self._skip_exempt)
            await self.app(scope, receive, send)
            return
        raw: bytes | None = None
        repeated = False
        for header, value in scope["headers"]:
            if header == _HEADER:
                repeated = raw is not None
                raw = value
        context = get_context(scope)
        if raw is None:
            if policy.required:
                context.record(self._reject_missing)
                await self._missing.send(scope, send)
                return
            context.record(self._skip_nokey)
            await self.app(scope, receive, send)
            return
        # RFC 9651 §3.1: an Item field sent twice is a list, not a key.
        key = None if repeated else parse_key(raw)
        if key is None:
            context.record(self._reject_malformed)
            await self._malformed.send(scope, send)
            return
        try:
            body = await read_body(receive, policy.max_body_bytes)
        except BodyTooLarge:
            context.record(self._reject_too_large)
            await self._too_large.send(scope, send)
            return
        except ClientDisconnected:
            context.record(self._disconnected)  # nobody to answer; the app never runs
            return
        digest = fingerprint(method, scope, body)
        claimed = store_key(self.name, self._callers(scope), key)
        try:
            claim = await self.kv.claim(
                claimed, self.lease, note=digest, timeout=context.remaining()
            )
        except StorageError as exc:
            await self._store_failed(scope, ReplayReceive(body, receive), send, context, exc)
            return
        token = claim.token
        if token is None:
            await self._answer_repeat(scope, receive, send, context, claim, digest, body)
            return
        context.record(self._claimed)
        flight = Flight(
            self.kv,
            claimed,
            token,
            digest,
            send,
            lease=self.lease,
            ttl=policy.ttl,
            max_bytes=policy.max_response_bytes,
            store_server_errors=self.store_server_errors,
            timeout=self.store_timeout,
            context=context,
        )
        flight.start()
        try:
            await self.app(scope, ReplayReceive(body, receive), flight)
        except Exception:
            await flight.finish()
            self._settled(context, flight)
            raise
        except BaseException:  # cancelled: the request is over, the claim must go
            flight.abandon()
            self._settled(context, flight)
            raise
        await flight.finish()
        self._settled(context, flight)

    async def _answer_repeat(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        context: RequestContext,
        claim: Claim,
        digest: bytes,
        body: bytes,
    ) -> None:
        """A key seen before: 409 while it runs, 422 for another payload, else the replay."""
        value = claim.value
        if value is None:
            # The first request still runs; its claim carries its fingerprint
            # (draft §2.7: another payload under the key is 422, even now).
            if claim.note and claim.note != digest:
                context.record(self._reject_mismatch)
                await self._mismatch.send(scope, send)
                return
            context.record(self._reject_conflict)
            await self._conflict.send(scope, send)
            return
        try:
            stored = decode(value)
        except ValueError as exc:
            logger.error("apiguard.idempotency: a stored response cannot be read (%s)", exc)
            error = StorageError(f"unreadable stored response: {exc}")
            await self._store_failed(scope, ReplayReceive(body, receive), send, context, error)
            return
        if stored.fingerprint != digest:
            context.record(self._reject_mismatch)
            await self._mismatch.send(scope, send)
            return
        context.record(
            Decision(
                _LAYER,
                "allow",
                self.name,
                "replayed",
                attributes={"idempotency.status": stored.status},
            )
        )
        await replay(stored, send)

    def _settled(self, context: RequestContext, flight: Flight) -> None:
        """Replace the request's `claimed` decision by what became of its response."""
        outcome = flight.outcome
        if outcome == STORED:
            decision = self._stored
        else:
            attributes: dict[str, AttributeValue] = {"idempotency.not_stored": outcome or ""}
            decision = Decision(_LAYER, "allow", self.name, "not-stored", attributes=attributes)
        decisions = context.decisions
        for index in range(len(decisions) - 1, -1, -1):
            if decisions[index] is self._claimed:
                decisions[index] = decision
                return
        decisions.append(decision)  # pragma: no cover - the claimed decision is always there

    async def _store_failed(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        context: RequestContext,
        error: StorageError,
    ) -> None:
        attributes: dict[str, AttributeValue] = {
            "store.failures": error.failures,
            "store.breaker": error.state,
        }
        if self.on_store_error == "fail-open":
            context.record(
                Decision(_LAYER, "allow", self.name, _UNAVAILABLE, attributes=attributes)
            )
            await self.app(scope, receive, send)
            return
        context.record(
            Decision(_LAYER, "reject", self.name, _UNAVAILABLE, 503, attributes=attributes)
        )
        retry = max(math.ceil(error.retry_after), 1)
        await self._unavailable.send(scope, send, [(_RETRY_AFTER, b"%d" % retry)])


def _methods(options: Options, methods: object) -> frozenset[str]:
    """The covered methods, uppercase tokens (`"POST"`)."""
    given = options.strings("methods", methods, allow_empty=False)
    for method in given:
        if not _METHOD.match(method):
            options.fail("methods", method, "is not an uppercase HTTP method like 'POST'")
        if method in _SAFE:
            options.fail("methods", method, "is safe already: nothing to make idempotent")
    return frozenset(given)
