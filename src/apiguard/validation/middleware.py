"""`ValidationMiddleware`: bounded bodies, content types, strict JSON and models."""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import parse_qsl

from pydantic import ValidationError

from apiguard._asgi import BodyTooLarge, ClientDisconnected, ReplayReceive, read_body
from apiguard._types import ASGIApp, Receive, Scope, Send
from apiguard.context import CONTEXT_KEY, RequestContext, get_context
from apiguard.layer import Answer, Description, JSONValue, Options, checked
from apiguard.problems import Problem, ProblemResponse
from apiguard.routing import WEBSOCKET, RoutePolicies, request_method
from apiguard.routing._keys import fold_method
from apiguard.validation._json import JSONRejected, parse_json
from apiguard.validation._media import ALLOWED_JSON, ContentTypes
from apiguard.validation._models import error_list, missing_body
from apiguard.validation._policy import (
    LAYER,
    UNPROCESSABLE,
    Policy,
    content_length,
    judge_content_type,
    merge,
    parse_methods,
    query_limits,
)
from apiguard.validation.rules import Rules, check_count, check_depth

__all__ = ["DEFAULT_NO_BODY_METHODS", "ValidationMiddleware"]

DEFAULT_NO_BODY_METHODS: Final = ("GET", "HEAD", "DELETE", "OPTIONS", "TRACE")

_CONTENT_LENGTH: Final = b"content-length"
_CONTENT_TYPE: Final = b"content-type"
_TRANSFER_ENCODING: Final = b"transfer-encoding"
_CONTENT_ENCODING: Final = b"content-encoding"
_FRAMING: Final = frozenset({_CONTENT_LENGTH, _CONTENT_TYPE, _TRANSFER_ENCODING, _CONTENT_ENCODING})
_HTTP1: Final = frozenset({"1.0", "1.1"})
#: The fields that say a request has content (RFC 9112 §6.3).
_BODY_FRAMING: Final = frozenset({_CONTENT_LENGTH, _TRANSFER_ENCODING})
_name: Final = operator.itemgetter(0)
#: Refusals about a body's content, which a route that takes no body never gives.
_BODY_REASONS: Final = frozenset(
    {
        "content-too-large",
        "unsupported-media-type",
        "unsupported-media-type-patch",
        "content-encoding",
        "several-content-types",
        "invalid-json",
        "empty-json-body",
        "invalid-utf-8",
        "json-bom",
        "json-too-deep",
        "json-number-out-of-range",
    }
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
    as it streams in (413, 400); JSON well-formedness, UTF-8 and depth, and
    an empty body whose `Content-Type` says JSON (400); the body model (422).
    Every refusal is problem details.

    Args:
        app: The ASGI app to protect.
        name: The layer's name, in its decisions, metrics and the policy report.
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
            (`ctx`) in each 422 error, and keys the model does not declare
            in `loc` (`"<key>"` otherwise). Off by default: values and keys
            may be secrets.

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

    @checked("ValidationMiddleware", name="validation")
    def __init__(
        self,
        app: ASGIApp,
        *,
        name: str = "validation",
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
        self.name = Options().layer_name(name)
        options = Options.of("ValidationMiddleware", name)
        check_count("max_body_bytes", max_body_bytes)
        check_depth("max_json_depth", max_json_depth)
        check_count("max_query_params", max_query_params)
        check_count("max_query_bytes", max_query_bytes)
        if max_query_param_bytes is not None:
            check_count("max_query_param_bytes", max_query_param_bytes)
        types = ContentTypes("content_types", content_types)
        self.no_body_methods = parse_methods("no_body_methods", no_body_methods)
        self.echo_input = options.flag("echo_input", echo_input)
        default = Policy(
            None,
            max_body_bytes=max_body_bytes,
            max_json_depth=max_json_depth,
            content_types=types,
            no_body=None,
            max_query_params=max_query_params,
            max_query_bytes=max_query_bytes,
            max_query_param_bytes=max_query_param_bytes,
            name=name,
        )
        given_routes: object = routes
        if given_routes is not None and not isinstance(given_routes, Mapping):
            options.fail("routes", given_routes, "is not a mapping of route keys to Rules(...)")
        compiled: dict[str, Policy] = {}
        for key, rules in (routes or {}).items():
            candidate: object = rules  # typed Rules, but users pass anything
            if not isinstance(candidate, Rules):
                options.fail(f"routes[{key!r}]", candidate, "is not Rules(...)")
            compiled[key] = merge(key, rules, default, self.no_body_methods, name)
        self.routes: RoutePolicies[Policy] = RoutePolicies("routes", compiled, default)

        self.app = options.bind_at_startup(app, self.routes)

    def describe(self, method: str, key: str) -> Description:
        """What requests of `method` on route `key` must be, and the refusals that follow."""
        if method == WEBSOCKET:
            return Description(LAYER, self.name, False, {"websocket": "passes through"})
        policy = self.routes.get(method, key)
        no_body = policy.no_body
        if no_body is None:
            no_body = fold_method(method) in self.no_body_methods
        summary: dict[str, JSONValue] = {
            "max_query_params": policy.max_query_params,
            "max_query_bytes": policy.max_query_bytes,
        }
        if no_body:
            summary["body"] = "none allowed"
        else:
            summary["max_body_bytes"] = policy.max_body_bytes
            summary["content_types"] = list(policy.content_types.entries)
            summary["max_json_depth"] = policy.max_json_depth
        models = {"body": policy.body, "query": policy.query, "headers": policy.headers}
        for part, model in models.items():
            if model is not None:
                summary[f"{part}_model"] = getattr(model.model, "__name__", repr(model.model))
        answers = []
        for reason, response in policy.responses.items():
            if reason in _BODY_REASONS and no_body:
                continue
            if reason == "unsupported-media-type-patch" and fold_method(method) != "PATCH":
                continue
            if reason == "unsupported-media-type" and fold_method(method) == "PATCH":
                continue
            problem = response.problem
            headers = tuple(name.decode().title() for name, _ in response.headers)
            answers.append(
                Answer(response.status, reason, headers, problem.type, problem.detail or "")
            )
        if any(model is not None for model in models.values()):
            answers.append(Answer(422, "invalid", description=UNPROCESSABLE))
        return Description(LAYER, self.name, True, summary, tuple(answers))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the request; refuse it, or pass it on with its body replayed."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = self.routes.lookup(scope)
        context: RequestContext = scope.get(CONTEXT_KEY) or get_context(scope)

        query_string: bytes = scope.get("query_string", b"")
        if query_string:
            reason = query_limits(query_string, policy)
            if reason is not None:
                await self._refuse(scope, send, context, policy, reason)
                return

        headers = scope["headers"]
        if _BODY_FRAMING.isdisjoint(map(_name, headers)):
            no_body = policy.no_body
            if no_body is None:
                no_body = request_method(scope) in self.no_body_methods
            if (
                no_body
                and policy.query is None
                and policy.headers is None
                and scope.get("http_version", "1.1") in _HTTP1
            ):
                # The usual GET, found without a Python loop over the headers:
                # HTTP/1 framing says no body and there are no parameters to
                # check, so what follows would come to the same.
                context.decisions.append(policy.allow)
                await self.app(scope, receive, send)
                return

        # One pass over the headers for what frames and types the body.
        lengths: list[bytes] | None = None
        content_type: bytes | None = None
        types_seen = 0
        chunked = False
        encoded = False
        for name, value in headers:
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
            declared = content_length(lengths)
            if declared is None:
                await self._refuse(scope, send, context, policy, "bad-content-length")
                return
            if chunked:
                # RFC 9112 §6.1: a server may reject both; it closes a smuggling door.
                await self._refuse(scope, send, context, policy, "length-and-chunked")
                return
        no_body = policy.no_body
        if no_body is None:
            no_body = request_method(scope) in self.no_body_methods
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
            reason, is_json = judge_content_type(policy, content_type, types_seen, encoded)
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
                reason, is_json = judge_content_type(policy, content_type, types_seen, encoded)
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
        elif not no_body:
            if types_seen == 1 and policy.content_types.verdict(content_type) == ALLOWED_JSON:
                # Content-Type says JSON, but there is no content, and an empty
                # text is not JSON (RFC 8259 §2): the app's `request.json()`
                # would raise. Without a Content-Type, there is simply no body.
                await self._refuse(scope, send, context, policy, "empty-json-body")
                return
            if model is not None:
                if not model.accepts_none:
                    errors = missing_body()
                    await self._refuse_422(scope, send, context, policy, "invalid-body", errors)
                    return
                values["body"] = None

        context.decisions.append(policy.allow)
        await self.app(scope, app_receive, send)

    def _check_json(
        self, body: bytes, policy: Policy, values: dict[str, Any]
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
                errors = error_list(
                    exc, "body", echo_input=self.echo_input, declared=model.declared, data=parsed
                )
                return "invalid-body", errors
        return None

    def _params(
        self, scope: Scope, query_string: bytes, policy: Policy, values: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Validate the query and header models; their errors, together."""
        errors: list[dict[str, Any]] = []
        query = policy.query
        if query is not None:
            # As Starlette parses `request.query_params`.
            pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
            data = query.from_pairs(pairs, first=False)
            try:
                values["query"] = query.validate(data)
            except ValidationError as exc:
                errors += error_list(
                    exc, "query", echo_input=self.echo_input, declared=query.declared, data=data
                )
        headers = policy.headers
        if headers is not None:
            wanted = headers.by_name
            pairs = [
                (text, value.decode("latin-1"))
                for name, value in scope["headers"]
                if (text := name.decode("latin-1")) in wanted
            ]
            data = headers.from_pairs(pairs, first=True)
            try:
                values["headers"] = headers.validate(data)
            except ValidationError as exc:
                errors += error_list(
                    exc,
                    "header",
                    echo_input=self.echo_input,
                    wire_names=headers.wire_names,
                    declared=headers.declared,
                    data=data,
                )
        return errors

    async def _refuse(
        self, scope: Scope, send: Send, context: RequestContext, policy: Policy, reason: str
    ) -> None:
        context.record(policy.decisions[reason])
        if reason == "unsupported-media-type" and request_method(scope) == "PATCH":
            reason = "unsupported-media-type-patch"
        await policy.responses[reason].send(scope, send)

    async def _refuse_422(
        self,
        scope: Scope,
        send: Send,
        context: RequestContext,
        policy: Policy,
        reason: str,
        errors: list[dict[str, Any]],
    ) -> None:
        context.record(policy.decisions[reason])
        problem = Problem(status=422, detail=UNPROCESSABLE, extensions={"errors": errors})
        await ProblemResponse(problem).send(scope, send)
