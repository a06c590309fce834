"""`ValidationMiddleware`: bounded bodies, content types, strict JSON and models."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import parse_qsl

from pydantic import ValidationError

from apiguard._asgi import BodyTooLarge, ClientDisconnected, ReplayReceive, read_body
from apiguard._types import ASGIApp, Receive, Scope, Send
from apiguard.compose import checked_at_startup
from apiguard.context import Decision, RequestContext, get_context
from apiguard.errors import ConfigError
from apiguard.problems import Problem, ProblemResponse
from apiguard.routing import RoutePolicies, parse_route_key
from apiguard.validation._json import JSONRejected, parse_json
from apiguard.validation._media import ALLOWED_JSON, REFUSED, ContentTypes
from apiguard.validation._models import (
    BodyModel,
    ParamsModel,
    error_list,
    missing_body,
)
from apiguard.validation.rules import Rules, check_count, check_depth

__all__ = ["DEFAULT_NO_BODY_METHODS", "ValidationMiddleware"]

LAYER: Final = "validation"
DEFAULT_NO_BODY_METHODS: Final = ("GET", "HEAD", "DELETE", "OPTIONS", "TRACE")

_CONTENT_LENGTH: Final = b"content-length"
_CONTENT_TYPE: Final = b"content-type"
_TRANSFER_ENCODING: Final = b"transfer-encoding"
_CONTENT_ENCODING: Final = b"content-encoding"
_FRAMING: Final = frozenset({_CONTENT_LENGTH, _CONTENT_TYPE, _TRANSFER_ENCODING, _CONTENT_ENCODING})
#: Larger than any limit: a Content-Length of more digits than this is "huge".
_HUGE: Final = 1 << 62
_HTTP1: Final = frozenset({"1.0", "1.1"})

_UNPROCESSABLE = "The request failed validation; `errors` lists each problem."


#: RFC 9110 §15 status phrases where Python 3.11's `HTTPStatus` still has the
#: RFC 7231 ones ("Request Entity Too Large", "Unprocessable Entity"): the
#: title of an `about:blank` problem is the status phrase (RFC 9457 §4.2.1).
_TITLES: Final = {413: "Content Too Large", 414: "URI Too Long", 422: "Unprocessable Content"}


def _problem(
    status: int, detail: str, headers: Iterable[tuple[bytes, bytes]] = ()
) -> ProblemResponse:
    return ProblemResponse(
        Problem(status=status, title=_TITLES.get(status), detail=detail), headers
    )


# Rejections that do not depend on a route's limits: built once for all.
_BAD_LENGTH = _problem(400, "The Content-Length header is not a single non-negative integer.")
_LENGTH_AND_CHUNKED = _problem(400, "The request has both Content-Length and Transfer-Encoding.")
_SHORT_BODY = _problem(400, "The request body is shorter than its Content-Length.")
_LONG_BODY = _problem(400, "The request body is longer than its Content-Length.")
_TWO_TYPES = _problem(400, "The request has more than one Content-Type header.")
_ENCODED = _problem(
    415,
    "The request content is encoded (Content-Encoding); send it uncompressed.",
    [(b"accept-encoding", b"identity")],
)
_INVALID_JSON = _problem(400, "The request body is not well-formed JSON.")
_INVALID_UTF8 = _problem(400, "The request body is not valid UTF-8.")
_JSON_BOM = _problem(400, "The JSON body starts with a byte order mark; send it without.")


class _Policy:
    """One route's rules merged with the layer's defaults, and its canned answers."""

    __slots__ = (
        "allow",
        "body",
        "content_types",
        "decisions",
        "headers",
        "key",
        "max_body_bytes",
        "max_json_depth",
        "max_query_bytes",
        "max_query_param_bytes",
        "max_query_params",
        "no_body",
        "query",
        "responses",
    )

    def __init__(
        self,
        key: str | None,
        *,
        max_body_bytes: int,
        max_json_depth: int,
        content_types: ContentTypes,
        no_body: bool | None,
        max_query_params: int,
        max_query_bytes: int,
        max_query_param_bytes: int | None,
        body: BodyModel | None = None,
        query: ParamsModel | None = None,
        headers: ParamsModel | None = None,
    ) -> None:
        self.key = key
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth
        self.content_types = content_types
        self.no_body = no_body
        self.max_query_params = max_query_params
        self.max_query_bytes = max_query_bytes
        self.max_query_param_bytes = max_query_param_bytes
        self.body = body
        self.query = query
        self.headers = headers
        if body is not None and not content_types.json_only:
            msg = (
                f"a body model validates JSON, but content_types {list(content_types.entries)!r} "
                "accepts other types: list only JSON media types ('application/json', "
                "'application/*+json')"
            )
            raise ConfigError(msg)
        accepted = ", ".join(content_types.entries)
        self.responses: dict[str, ProblemResponse] = {
            "content-too-large": _problem(
                413, f"The request content is larger than {max_body_bytes} bytes."
            ),
            "content-not-allowed": _problem(413, "This request must not carry content."),
            "unsupported-media-type": _problem(
                415, f"The request content type is not accepted here; send one of: {accepted}."
            ),
            # RFC 5789 §2.2: a 415 to a PATCH should list the patch formats accepted.
            "unsupported-media-type-patch": _problem(
                415,
                f"The request content type is not accepted here; send one of: {accepted}.",
                [(b"accept-patch", ", ".join(content_types.entries).encode("latin-1"))],
            ),
            "json-too-deep": _problem(
                400, f"The JSON body nests deeper than {max_json_depth} levels."
            ),
            "query-too-long": _problem(
                414, f"The query string is longer than {max_query_bytes} bytes."
            ),
            "query-param-too-long": _problem(
                414, f"A query parameter is longer than {max_query_param_bytes} bytes."
            ),
            "too-many-query-params": _problem(
                400, f"The query has more than {max_query_params} parameters."
            ),
            "bad-content-length": _BAD_LENGTH,
            "length-and-chunked": _LENGTH_AND_CHUNKED,
            "body-shorter-than-length": _SHORT_BODY,
            "body-longer-than-length": _LONG_BODY,
            "several-content-types": _TWO_TYPES,
            "content-encoding": _ENCODED,
            "invalid-json": _INVALID_JSON,
            "invalid-utf-8": _INVALID_UTF8,
            "json-bom": _JSON_BOM,
        }
        limits = {
            "content-too-large": max_body_bytes,
            "content-not-allowed": 0,
            "json-too-deep": max_json_depth,
            "query-too-long": max_query_bytes,
            "query-param-too-long": max_query_param_bytes,
            "too-many-query-params": max_query_params,
        }
        self.allow = Decision(LAYER, "allow", policy=key)
        self.decisions = {
            reason.removesuffix("-patch"): Decision(
                LAYER,
                "reject",
                reason=reason,
                status=response.status,
                policy=key,
                limit=limits.get(reason),
            )
            for reason, response in self.responses.items()
        }
        for reason in ("invalid-body", "invalid-query", "invalid-headers"):
            self.decisions[reason] = Decision(
                LAYER, "reject", reason=reason, status=422, policy=key
            )
        self.decisions["client-disconnected"] = Decision(
            LAYER, "reject", reason="client-disconnected", policy=key
        )


class ValidationMiddleware:
    """Refuses requests whose size, framing, content type, JSON or models are wrong.

    Runs before the app, so that the app never sees a refused request and
    never parses an unbounded body. A `Content-Length` over the limit is
    refused before a byte is read; a body without one (chunked) is read up to
    the limit and refused as soon as it crosses it, so memory stays bounded by
    the limit whatever the client sends. An accepted body is handed to the app
    unchanged (FastAPI's own models keep working), and the validated values
    are in the request context: `get_context(scope).values["body"]`,
    `["query"]`, `["headers"]` (see `apiguard.validation.validated`).

    Checks, cheapest first: query limits (414, 400); framing headers (400);
    a body where none is allowed or a declared length over the limit (413);
    content type and encoding (415); query and header models (422); the body
    as it streams in (413, 400); JSON well-formedness, UTF-8 and depth (400);
    the body model (422). Every refusal is problem details.

    Args:
        app: The ASGI app to protect.
        max_body_bytes: The largest request body accepted, in bytes.
        max_json_depth: The deepest nesting of arrays and objects accepted in
            a JSON body (1 to 128).
        content_types: The media types accepted for a non-empty body:
            `type/subtype`, `type/*`, `type/*+suffix` or `*/*`.
        no_body_methods: Methods whose requests must carry no body (413).
        max_query_params: The most query parameters accepted (400).
        max_query_bytes: The longest raw query string accepted, in bytes (414).
        max_query_param_bytes: The longest single raw `name=value` query pair
            accepted, in bytes (414); `None`: bounded by `max_query_bytes` only.
        routes: Route keys (`"POST /orders"`) to [`Rules`][apiguard.Rules]
            that override these defaults and add models.
        echo_input: Put the submitted value (`input`) and the constraint
            (`ctx`) in each 422 error. Off by default: values may be secrets.

    Raises:
        ConfigError: an option is of the wrong type or out of range, or a
            route's rules contradict each other.

    Examples:
        >>> from pydantic import BaseModel
        >>> from starlette.applications import Starlette
        >>> from starlette.middleware import Middleware
        >>> from apiguard import guard
        >>> class OrderIn(BaseModel):
        ...     sku: str
        >>> app = guard(
        ...     Starlette(),
        ...     Middleware(ValidationMiddleware, max_body_bytes=65_536),
        ... )
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int = 1_048_576,
        max_json_depth: int = 32,
        content_types: Iterable[str] = ("application/json",),
        no_body_methods: Iterable[str] = DEFAULT_NO_BODY_METHODS,
        max_query_params: int = 100,
        max_query_bytes: int = 8192,
        max_query_param_bytes: int | None = None,
        routes: Mapping[str, Rules] | None = None,
        echo_input: bool = False,
    ) -> None:
        name = "ValidationMiddleware"
        check_count(f"{name}: max_body_bytes", max_body_bytes)
        check_depth(f"{name}: max_json_depth", max_json_depth)
        check_count(f"{name}: max_query_params", max_query_params)
        check_count(f"{name}: max_query_bytes", max_query_bytes)
        if max_query_param_bytes is not None:
            check_count(f"{name}: max_query_param_bytes", max_query_param_bytes)
        types = ContentTypes(f"{name}: content_types", content_types)
        self.no_body_methods = _methods(f"{name}: no_body_methods", no_body_methods)
        given: object = echo_input
        if not isinstance(given, bool):
            msg = f"{name}: echo_input {given!r} is not True or False"
            raise ConfigError(msg)
        self.echo_input = echo_input
        default = _Policy(
            None,
            max_body_bytes=max_body_bytes,
            max_json_depth=max_json_depth,
            content_types=types,
            no_body=None,
            max_query_params=max_query_params,
            max_query_bytes=max_query_bytes,
            max_query_param_bytes=max_query_param_bytes,
        )
        given_routes: object = routes
        if given_routes is not None and not isinstance(given_routes, Mapping):
            msg = f"routes: expected a mapping of route keys to Rules(...), got {given_routes!r}"
            raise ConfigError(msg)
        compiled: dict[str, _Policy] = {}
        for key, rules in (routes or {}).items():
            candidate: object = rules  # typed Rules, but users pass anything
            if not isinstance(candidate, Rules):
                msg = f"routes: the value for {key!r} is {candidate!r}, not Rules(...)"
                raise ConfigError(msg)
            compiled[key] = _merge(key, rules, default, self.no_body_methods)
        self.routes: RoutePolicies[_Policy] = RoutePolicies("routes", compiled, default)
        self.app = checked_at_startup(app, lambda: self.routes.bind(app))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the request; refuse it, or pass it on with its body replayed."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = self.routes.lookup(scope)
        context = get_context(scope)

        query_string: bytes = scope.get("query_string", b"")
        if query_string:
            reason = _query_limits(query_string, policy)
            if reason is not None:
                await self._refuse(scope, send, context, policy, reason)
                return

        # One pass over the headers for what frames and types the body.
        lengths: list[bytes] | None = None
        content_type: bytes | None = None
        types_seen = 0
        chunked = False
        encoded = False
        for name, value in scope["headers"]:
            if name in _FRAMING:
                if name == _CONTENT_LENGTH:
                    if lengths is None:
                        lengths = [value]
                    else:
                        lengths.append(value)
                elif name == _CONTENT_TYPE:
                    content_type = value
                    types_seen += 1
                elif name == _TRANSFER_ENCODING:
                    chunked = True
                elif value.strip(b" \t").lower() != b"identity":
                    encoded = True

        declared: int | None = None
        if lengths is not None:
            declared = _content_length(lengths)
            if declared is None:
                await self._refuse(scope, send, context, policy, "bad-content-length")
                return
            if chunked:
                # RFC 9112 §6.1: a server may reject both; it closes a smuggling door.
                await self._refuse(scope, send, context, policy, "length-and-chunked")
                return
        no_body = policy.no_body
        if no_body is None:
            no_body = scope["method"] in self.no_body_methods
        limit = 0 if no_body else policy.max_body_bytes
        # Content is certain with a non-zero Content-Length or chunked framing.
        # A declared length is always read and checked, 0 included. With
        # neither header, HTTP/1 has no body (RFC 9112 §6.3; so a GET costs
        # no read); otherwise the body is read to find out (HTTP/2 frames
        # bodies without either header).
        if declared is not None:
            certain = declared > 0
            read = True
        else:
            certain = chunked
            read = chunked or not no_body or scope.get("http_version", "1.1") not in _HTTP1
        if declared is not None and declared > limit:
            reason = "content-not-allowed" if no_body else "content-too-large"
            await self._refuse(scope, send, context, policy, reason)
            return
        is_json = False
        if certain and not no_body:
            reason, is_json = _content_type(policy, content_type, types_seen, encoded)
            if reason is not None:
                await self._refuse(scope, send, context, policy, reason)
                return

        values = context.values
        if policy.query is not None or policy.headers is not None:
            errors = self._params(scope, query_string, policy, values)
            if errors:
                reason = "invalid-query" if errors[0]["loc"][0] == "query" else "invalid-headers"
                await self._refuse_422(scope, send, context, policy, reason, errors)
                return

        app_receive = receive
        body = b""
        if read:
            try:
                body = await read_body(receive, declared if declared is not None else limit)
            except BodyTooLarge:
                if declared is not None:
                    reason = "body-longer-than-length"
                else:
                    reason = "content-not-allowed" if no_body else "content-too-large"
                await self._refuse(scope, send, context, policy, reason)
                return
            except ClientDisconnected:
                # Nobody to answer; the app never runs for half a request.
                context.record(policy.decisions["client-disconnected"])
                return
            if declared is not None and len(body) < declared:
                await self._refuse(scope, send, context, policy, "body-shorter-than-length")
                return
            if body and not certain:
                reason, is_json = _content_type(policy, content_type, types_seen, encoded)
                if reason is not None:
                    await self._refuse(scope, send, context, policy, reason)
                    return
            app_receive = ReplayReceive(body, receive)

        model = policy.body
        if body:
            if is_json:
                # In a method of its own, so that the parsed value (up to ~30x
                # the body's size in Python objects) is freed before the app runs.
                refusal = self._check_json(body, policy, values)
                if refusal is not None:
                    reason, body_errors = refusal
                    if body_errors is None:
                        await self._refuse(scope, send, context, policy, reason)
                    else:
                        await self._refuse_422(scope, send, context, policy, reason, body_errors)
                    return
        elif model is not None and not no_body:
            if not model.accepts_none:
                errors = missing_body()
                await self._refuse_422(scope, send, context, policy, "invalid-body", errors)
                return
            values["body"] = None

        context.record(policy.allow)
        await self.app(scope, app_receive, send)

    def _check_json(
        self, body: bytes, policy: _Policy, values: dict[str, Any]
    ) -> tuple[str, list[dict[str, Any]] | None] | None:
        """Parse and validate a JSON body: `None`, or why it is refused (and the 422 errors)."""
        try:
            parsed = parse_json(body, policy.max_json_depth)
        except JSONRejected as exc:
            return exc.reason, None
        model = policy.body
        if model is not None:
            try:
                values["body"] = model.validate(parsed)
            except ValidationError as exc:
                return "invalid-body", error_list(exc, "body", echo_input=self.echo_input)
        return None

    def _params(
        self, scope: Scope, query_string: bytes, policy: _Policy, values: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Validate the query and header models; their errors, together."""
        errors: list[dict[str, Any]] = []
        query = policy.query
        if query is not None:
            # As Starlette parses `request.query_params`.
            pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
            try:
                values["query"] = query.validate(query.from_pairs(pairs, first=False))
            except ValidationError as exc:
                errors += error_list(exc, "query", echo_input=self.echo_input)
        headers = policy.headers
        if headers is not None:
            wanted = headers.by_name
            pairs = [
                (text, value.decode("latin-1"))
                for name, value in scope["headers"]
                if (text := name.decode("latin-1")) in wanted
            ]
            try:
                values["headers"] = headers.validate(headers.from_pairs(pairs, first=True))
            except ValidationError as exc:
                errors += error_list(
                    exc, "header", echo_input=self.echo_input, wire_names=headers.wire_names
                )
        return errors

    async def _refuse(
        self, scope: Scope, send: Send, context: RequestContext, policy: _Policy, reason: str
    ) -> None:
        context.record(policy.decisions[reason])
        if reason == "unsupported-media-type" and scope["method"] == "PATCH":
            reason = "unsupported-media-type-patch"
        await policy.responses[reason].send(scope, send)

    async def _refuse_422(
        self,
        scope: Scope,
        send: Send,
        context: RequestContext,
        policy: _Policy,
        reason: str,
        errors: list[dict[str, Any]],
    ) -> None:
        context.record(policy.decisions[reason])
        problem = Problem(
            status=422, title=_TITLES[422], detail=_UNPROCESSABLE, extensions={"errors": errors}
        )
        await ProblemResponse(problem).send(scope, send)


def _content_type(
    policy: _Policy, content_type: bytes | None, types_seen: int, encoded: bool
) -> tuple[str | None, bool]:
    """`(reason to refuse or None, whether the content is JSON)`."""
    if types_seen > 1:
        return "several-content-types", False
    if encoded:
        # RFC 9110 §15.5.16: an unsupported content coding is a 415.
        return "content-encoding", False
    verdict = policy.content_types.verdict(content_type)
    if verdict == REFUSED:
        return "unsupported-media-type", False
    return None, verdict == ALLOWED_JSON


def _query_limits(query_string: bytes, policy: _Policy) -> str | None:
    """The reason the query string is refused, or `None`."""
    if len(query_string) > policy.max_query_bytes:
        return "query-too-long"
    # `&` separates parameters, as in parse_qsl (Python 3.10+) and Starlette;
    # the count of separators bounds the count of parameters from above.
    if query_string.count(b"&") >= policy.max_query_params or policy.max_query_param_bytes:
        parts = query_string.split(b"&")
        # Empty segments (`a=1&&b=2`) are no parameters, for parse_qsl either.
        if len(parts) - parts.count(b"") > policy.max_query_params:
            return "too-many-query-params"
        longest = policy.max_query_param_bytes
        if longest is not None and max(map(len, parts)) > longest:
            return "query-param-too-long"
    return None


def _content_length(values: list[bytes]) -> int | None:
    """The declared length, or `None` when it is malformed or ambiguous.

    RFC 9110 §8.6: `1*DIGIT`; RFC 9112 §6.3: several values (in several
    fields or a comma list) are accepted only when all are the same.
    """
    if len(values) == 1:  # the usual case: one header of plain digits
        value = values[0]
        if value.isdigit() and len(value) <= 18:
            return int(value)
    found: int | None = None
    for value in values:
        for part in value.split(b","):
            digits = part.strip(b" \t")
            if not digits.isdigit():  # bytes.isdigit: ASCII digits only
                return None
            digits = digits.lstrip(b"0") or b"0"
            length = int(digits) if len(digits) <= 18 else _HUGE
            if found is not None and length != found:
                return None
            found = length
    return found


def _methods(option: str, methods: Iterable[str]) -> frozenset[str]:
    given: object = methods
    if isinstance(given, str | bytes) or not isinstance(given, Iterable):
        msg = f"{option}: expected a list of methods like ['GET', 'HEAD'], got {given!r}"
        raise ConfigError(msg)
    out = set()
    for method in given:
        if not isinstance(method, str) or not method.isupper() or not method.isalpha():
            msg = f"{option}: {method!r} is not an uppercase HTTP method like 'GET'"
            raise ConfigError(msg)
        out.add(method)
    return frozenset(out)


def _merge(key: str, rules: Rules, default: _Policy, no_body_methods: frozenset[str]) -> _Policy:
    """A route's rules over the layer's defaults."""
    method, _ = parse_route_key("routes", key)
    if rules.body is not None and rules.no_body is None and method in no_body_methods:
        msg = (
            f"routes: {key!r} has a body model, but {method} requests carry no body "
            "(no_body_methods); set Rules(no_body=False) to accept one"
        )
        raise ConfigError(msg)

    def pick(value: Any, fallback: Any) -> Any:
        return fallback if value is None else value

    try:
        return _Policy(
            key,
            max_body_bytes=pick(rules.max_body_bytes, default.max_body_bytes),
            max_json_depth=pick(rules.max_json_depth, default.max_json_depth),
            content_types=pick(rules._types, default.content_types),
            no_body=rules.no_body,
            max_query_params=pick(rules.max_query_params, default.max_query_params),
            max_query_bytes=pick(rules.max_query_bytes, default.max_query_bytes),
            max_query_param_bytes=pick(rules.max_query_param_bytes, default.max_query_param_bytes),
            body=rules._body,
            query=rules._query,
            headers=rules._headers,
        )
    except ConfigError as exc:
        inherited = " (inherited from the layer: set Rules(content_types=...))"
        msg = f"routes: {key!r}: {exc}{inherited if rules.content_types is None else ''}"
        raise ConfigError(msg) from None
