"""`AuthMiddleware`: who is calling, per route, with RFC 6750 answers."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Final, Literal

from apiguard._asgi import get_header
from apiguard._types import ASGIApp, Receive, Scope, Send
from apiguard.auth._base import MALFORMED, Authenticator, Failure, Grant
from apiguard.auth._options import check_authenticators, route_list, scope_map
from apiguard.compose import checked_at_startup
from apiguard.context import (
    CONTEXT_KEY,
    Decision,
    RequestContext,
    get_context,
    set_anonymous,
    set_principal,
)
from apiguard.layer import (
    Answer,
    Description,
    JSONValue,
    Options,
    Security,
    SecurityScheme,
    checked,
)
from apiguard.problems import Problem, ProblemResponse
from apiguard.routing import RoutePolicies, parse_route_key, request_method
from apiguard.routing._keys import CANONICAL_METHODS

__all__ = ["AuthMiddleware"]

logger = logging.getLogger("apiguard.auth")

_PUBLIC, _OPTIONAL, _REQUIRED = "public", "optional", "required"
_REALM: Final = re.compile(r"^[\x20\x21\x23-\x5b\x5d-\x7e]+$")  # quotable without escapes
_RETRY_AFTER: Final = (b"retry-after", b"5")

_LAYER: Final = "auth"
_EMPTY: Final[Mapping[bytes, list[bytes]]] = {}
_BROKEN: Final = Failure("unavailable", "internal_error")
#: The request's deadline came first (a JWKS fetch, a key lookup): fail closed.
_OUT_OF_TIME: Final = Failure("unavailable", "deadline")

_DETAIL_MISSING = "This resource needs a credential."
_DETAIL_MALFORMED = "The request carries a malformed or repeated credential."
_DETAIL_INVALID = "The credential is invalid or has expired."
_DETAIL_SCOPE = "The credential lacks a scope this resource needs."
_DETAIL_UNAVAILABLE = "Authentication is temporarily unavailable; try again shortly."


class _Policy:
    """What a route needs: nothing, optionally a credential, or one with scopes."""

    __slots__ = ("forbidden", "mode", "scopes")

    def __init__(self, mode: str, scopes: frozenset[str] = frozenset()) -> None:
        self.mode = mode
        self.scopes = scopes
        self.forbidden: tuple[ProblemResponse, ...] = ()


class _Slot:
    """One authenticator with its responses and decisions, built once."""

    __slots__ = (
        "allow",
        "auth",
        "check",
        "find",
        "index",
        "invalid",
        "layer",
        "malformed",
        "method",
        "refusals",
        "reject_malformed",
        "scope",
    )

    def __init__(self, auth: Authenticator, realm: str, index: int, layer: str) -> None:
        self.auth = auth
        self.index = index
        self.layer = layer
        self.find = auth.find
        self.check = auth.check
        #: The authenticator's method, on every decision it makes.
        self.method = MappingProxyType({"auth.method": auth.name})
        method = self.method
        self.allow = Decision(_LAYER, "allow", layer, attributes=method)
        self.reject_malformed = Decision(
            _LAYER, "reject", layer, "invalid_request", 400, attributes=method
        )
        self.scope = Decision(_LAYER, "reject", layer, "insufficient_scope", 403, attributes=method)
        # RFC 6750 error codes for bearer schemes; other schemes get a bare challenge.
        if auth.error_codes:
            bad_request = _challenge(auth, realm, "invalid_request")
            bad_token = _challenge(auth, realm, "invalid_token")
            self.malformed = _response(
                400, _DETAIL_MALFORMED, [bad_request], error="invalid_request"
            )
            self.invalid = _response(401, _DETAIL_INVALID, [bad_token], error="invalid_token")
        else:
            bare = _challenge(auth, realm, None)
            self.malformed = _response(400, _DETAIL_MALFORMED, [bare])
            self.invalid = _response(401, _DETAIL_INVALID, [bare])
        self.refusals: dict[Failure, tuple[Decision, ProblemResponse]] = {}


def _challenge(
    auth: Authenticator, realm: str, error: str | None, scope: str | None = None
) -> tuple[bytes, bytes]:
    # RFC 6750 §3: auth-params after the scheme, each at most once.
    params = [f'realm="{realm}"']
    if error is not None:
        params.append(f'error="{error}"')
        if scope is not None:
            params.append(f'scope="{scope}"')
    return (b"www-authenticate", f"{auth.scheme} {', '.join(params)}".encode("latin-1"))


def _response(
    status: int, detail: str, headers: Iterable[tuple[bytes, bytes]] = (), **extensions: str
) -> ProblemResponse:
    problem = Problem(status=status, detail=detail, extensions=extensions)
    return ProblemResponse(problem, headers)


class AuthMiddleware:
    """Authenticates each request, and enforces per-route credential and scope rules.

    The authenticators are tried in order; the first that finds its kind of
    credential in the request decides. A credential that is present and
    invalid is refused (401), never passed on to the next authenticator; the
    same kind of credential sent twice is a malformed request (400). After
    the layer, `request.user`, `request.auth.scopes`, Starlette's
    `@requires(...)`, `request.state.principal` and the request context's
    `principal` all give the caller.

    Routes are required to carry a credential unless listed in `public` or
    `optional`. CORS preflight requests (`OPTIONS` with `Origin` and
    `Access-Control-Request-Method`) pass unauthenticated where no route
    accepts `OPTIONS` (the router would answer 404 or 405); elsewhere they
    are authenticated like any request. Put `CORSMiddleware` outside this
    layer. WebSocket handshakes are authenticated like requests.

    Args:
        app: The ASGI app to protect.
        name: The layer's name, in its decisions, metrics and the policy report.
        authenticators: [`JWTAuth`][apiguard.JWTAuth],
            [`APIKeyAuth`][apiguard.APIKeyAuth], ..., in the order they are tried.
        public: Route keys (`"GET /health"`, `"/docs"`) that need no
            credential: nothing is checked there, and the caller is anonymous.
        optional: Route keys where a credential may be left out (the caller
            is then anonymous), but one that is sent must be valid.
        scopes: Route keys to the scopes a credential must all carry there;
            403 `insufficient_scope` otherwise.
        realm: The `realm` of the `WWW-Authenticate` challenges.

    Raises:
        ConfigError: no authenticators, two reading the same place, a bad
            route key (checked against the app's routes at start-up), a
            route listed twice, or a bad scope or realm.

    Examples:
        >>> from starlette.applications import Starlette
        >>> from starlette.middleware import Middleware
        >>> from apiguard import APIKeyAuth, Principal, guard
        >>> app = guard(
        ...     Starlette(),
        ...     Middleware(
        ...         AuthMiddleware,
        ...         authenticators=[APIKeyAuth(keys={"k-123": Principal(id="partner")})],
        ...     ),
        ... )
    """

    @checked("AuthMiddleware", name="auth")
    def __init__(
        self,
        app: ASGIApp,
        *,
        name: str = "auth",
        authenticators: Sequence[Authenticator],
        public: Iterable[str] = (),
        optional: Iterable[str] = (),
        scopes: Mapping[str, Sequence[str]] | None = None,
        realm: str = "api",
    ) -> None:
        self.name = Options().layer_name(name)
        options = Options.of("AuthMiddleware", name)
        if not isinstance(realm, str) or not _REALM.match(realm):
            options.fail("realm", realm, "is not printable ASCII without quotes or backslashes")
        auths = check_authenticators(authenticators)
        self._slots = tuple(_Slot(auth, realm, index, name) for index, auth in enumerate(auths))
        self._skip_public = Decision(_LAYER, "skip", name, "public")
        self._skip_preflight = Decision(_LAYER, "skip", name, "preflight")
        self._anonymous = Decision(_LAYER, "allow", name, "anonymous")
        self._missing_decision = Decision(_LAYER, "reject", name, "missing_credential", 401)
        self._header_names = frozenset().union(*(auth.header_names for auth in auths))
        # RFC 6750 §3.1: no credential at all gets the challenges without an error code.
        self._missing = _response(
            401, _DETAIL_MISSING, [_challenge(auth, realm, None) for auth in auths]
        )
        self._unavailable = _response(503, _DETAIL_UNAVAILABLE, [_RETRY_AFTER])
        policies: dict[str, dict[str, _Policy]] = {
            "public": {key: _Policy(_PUBLIC) for key in route_list("public", public)},
            "optional": {key: _Policy(_OPTIONAL) for key in route_list("optional", optional)},
            "scopes": {
                key: self._scoped(frozenset(names), realm)
                for key, names in scope_map(scopes).items()
            },
        }
        checks = [RoutePolicies(option, policies[option], None) for option in policies]
        merged: dict[str, _Policy] = {}
        seen: dict[tuple[str | None, str], str] = {}
        for option, routes in policies.items():
            for key, policy in routes.items():
                parsed = parse_route_key(option, key)
                if parsed in seen:
                    raise options.invalid(option, f"route {key!r} is also in {seen[parsed]}")
                seen[parsed] = option
                merged[key] = policy
        self._routes: RoutePolicies[_Policy] = RoutePolicies(
            "public/optional/scopes", merged, _Policy(_REQUIRED)
        )

        # The per-option tables name the option in errors; the merged table,
        # bound last, is the one requests are resolved with.
        def bind() -> None:
            with options.checking():
                for check in checks:
                    check.bind(app)
                self._routes.bind(app)

        self.app = checked_at_startup(app, bind)

    def describe(self, method: str, key: str) -> Description:
        """Who may call route `key` with `method`, and what this layer may answer there."""
        policy = self._routes.get(method, key)
        schemes = _unique_schemes(self._slots)
        auths: list[JSONValue] = [slot.auth.name for slot in self._slots]
        summary: dict[str, JSONValue] = {"mode": policy.mode, "authenticators": auths}
        if policy.mode is _PUBLIC:
            return Description(
                _LAYER, self.name, False, summary, security=Security("public", schemes)
            )
        scopes = tuple(sorted(policy.scopes))
        if scopes:
            summary["scopes"] = [*scopes]
        challenge = ("WWW-Authenticate",)
        answers = [
            Answer(400, "invalid_request", challenge, description=_DETAIL_MALFORMED),
            Answer(401, "invalid_token", challenge, description=_DETAIL_INVALID),
        ]
        if policy.mode is _REQUIRED:
            answers[1] = Answer(
                401, "invalid_token", challenge, description=f"{_DETAIL_MISSING} {_DETAIL_INVALID}"
            )
        if scopes:
            # RFC 6750 §3.1: bearer schemes challenge with insufficient_scope; the
            # others (an API key) refuse without a challenge.
            for with_challenge in (True, False):
                if any(bool(slot.auth.error_codes) is with_challenge for slot in self._slots):
                    headers = challenge if with_challenge else ()
                    answers.append(
                        Answer(403, "insufficient_scope", headers, description=_DETAIL_SCOPE)
                    )
        if any(slot.auth.may_be_unavailable for slot in self._slots):
            answers.append(
                Answer(503, "unavailable", ("Retry-After",), description=_DETAIL_UNAVAILABLE)
            )
        mode: Literal["optional", "required"] = (
            "optional" if policy.mode is _OPTIONAL else "required"
        )
        return Description(
            _LAYER,
            self.name,
            True,
            summary,
            tuple(answers),
            security=Security(mode, schemes, scopes),
        )

    def _scoped(self, names: frozenset[str], realm: str) -> _Policy:
        policy = _Policy(_REQUIRED, names)
        listed = " ".join(sorted(names))
        policy.forbidden = tuple(
            _response(
                403,
                _DETAIL_SCOPE,
                [_challenge(slot.auth, realm, "insufficient_scope", listed)]
                if slot.auth.error_codes
                else [],
                error="insufficient_scope",
                scope=listed,
            )
            for slot in self._slots
        )
        return policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Authenticate the request, then call the app or send the refusal."""
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        if (
            kind == "http"
            and (
                scope["method"] == "OPTIONS"
                or (scope["method"] not in CANONICAL_METHODS and request_method(scope) == "OPTIONS")
            )
            and self._bare_preflight(scope)
        ):
            # A CORS preflight carries no credentials (Fetch standard §4.8).
            # Anonymous, as on a public route: what reads request.user works.
            context = get_context(scope)  # makes scope["state"] where missing
            set_anonymous(scope)
            context.record(self._skip_preflight)
            await self.app(scope, receive, send)
            return
        policy = self._routes.lookup(scope)
        context = scope.get(CONTEXT_KEY) or get_context(scope)
        if policy.mode is _PUBLIC:
            set_anonymous(scope)
            context.record(self._skip_public)
            await self.app(scope, receive, send)
            return
        # One pass over the raw headers for every authenticator.
        wanted = self._header_names
        found: dict[bytes, list[bytes]] | Mapping[bytes, list[bytes]] = _EMPTY
        for name, value in scope["headers"]:
            if name in wanted:
                if found is _EMPTY:
                    found = {name: [value]}
                elif name in found:
                    found[name].append(value)
                else:
                    found[name] = [value]  # type: ignore[index]
        for slot in self._slots:
            credential = slot.find(found, scope)
            if credential is None:
                continue
            if credential is MALFORMED:
                context.record(slot.reject_malformed)
                await slot.malformed.send(scope, send)
                return
            try:
                result = slot.check(credential)  # type: ignore[arg-type]
                if type(result) is not Grant and type(result) is not Failure:
                    result = await _within_deadline(result, context)  # type: ignore[arg-type]
            except Exception:  # a bug must fail closed (503), never answer 500
                logger.exception("apiguard.auth: %s failed unexpectedly", slot.auth.name)
                result = _BROKEN
            if type(result) is not Grant:
                refusal = slot.refusals.get(result) or self._refusal(slot, result)  # type: ignore[arg-type]
                context.record(refusal[0])
                if logger.isEnabledFor(logging.DEBUG):
                    logger.debug("apiguard.auth: %s refused (%s)", slot.auth.name, result.cause)  # type: ignore[union-attr]
                await refusal[1].send(scope, send)
                return
            principal = result.principal
            if policy.scopes and not policy.scopes <= principal.scopes:
                # Who was refused is known: telemetry and the audit log read it.
                context.principal = principal
                context.record(slot.scope)
                await policy.forbidden[slot.index].send(scope, send)
                return
            set_principal(scope, principal, result.scopes)
            context.decisions.append(slot.allow)
            await self.app(scope, receive, send)
            return
        if policy.mode is _OPTIONAL:
            set_anonymous(scope)
            context.record(self._anonymous)
            await self.app(scope, receive, send)
            return
        context.record(self._missing_decision)
        await self._missing.send(scope, send)

    def _bare_preflight(self, scope: Scope) -> bool:
        """Whether this OPTIONS request is a CORS preflight that no route would answer.

        Only such a request passes unauthenticated: `Origin` and
        `Access-Control-Request-Method` both present (a browser always sends
        both), and the router would answer it with 404 or 405 (or a slash
        redirect) because no route accepts `OPTIONS` there. A route listing
        `OPTIONS`, an ASGI endpoint, a mounted app without routes: each
        answers `OPTIONS` itself, so there the request is authenticated like
        any other. Without a router to ask (a plain ASGI app), it is too.
        """
        if (
            get_header(scope, b"access-control-request-method") is None
            or get_header(scope, b"origin") is None
        ):
            return False
        if self._routes.router_resolver(scope) is None:
            return False
        return self._routes.match(scope) is None

    def _refusal(self, slot: _Slot, failure: Failure) -> tuple[Decision, ProblemResponse]:
        """The decision and response for a refused credential, built once per cause."""
        reason, status, response = {
            "invalid": ("invalid_token", 401, slot.invalid),
            "malformed": ("invalid_request", 400, slot.malformed),
            "unavailable": ("unavailable", 503, self._unavailable),
        }[failure.kind]
        decision = Decision(
            _LAYER, "reject", slot.layer, reason, status,
            attributes=MappingProxyType({**slot.method, "auth.cause": failure.cause}),
        )  # fmt: skip
        slot.refusals[failure] = decision, response
        return decision, response


async def _within_deadline(
    pending: Awaitable[Grant | Failure], context: RequestContext
) -> Grant | Failure:
    """An authenticator's answer, waited for no longer than what is left of the request's time.

    Only the paths that wait come here (a key fetch, a lookup, an async
    hook): a cached token or a configured key never does, and pays nothing.
    Each authenticator bounds its own I/O by its own `timeout`; this bounds
    the request's wait by the deadline too, so the smaller applies. A JWKS
    fetch is shared by every request waiting for it (single flight): only
    this request's wait is cut, the fetch goes on for the others.
    """
    left = context.remaining()
    if left is None:
        return await pending
    bound = asyncio.timeout(left)
    try:
        async with bound:
            return await pending
    except TimeoutError:
        if bound.expired():
            return _OUT_OF_TIME
        raise  # the authenticator's own (a bug): the caller's 503


def _unique_schemes(slots: Sequence[_Slot]) -> tuple[SecurityScheme, ...]:
    """Every authenticator's schemes, named apart when two would share a name."""
    schemes: list[SecurityScheme] = []
    seen: set[str] = set()
    for slot in slots:
        for scheme in slot.auth.security_schemes():
            name = scheme.name
            if name in seen:
                name = f"{name}_{slot.index}"
            seen.add(name)
            schemes.append(dataclasses.replace(scheme, name=name))
    return tuple(schemes)
