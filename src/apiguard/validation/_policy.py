"""A route's rules merged with the layer's defaults, and its rejections, built once."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from apiguard.context import Decision
from apiguard.errors import ConfigError
from apiguard.problems import Problem, ProblemResponse
from apiguard.routing import parse_route_key
from apiguard.validation._media import ALLOWED_JSON, REFUSED, ContentTypes
from apiguard.validation._models import BodyModel, ParamsModel
from apiguard.validation.rules import Rules

__all__ = [
    "LAYER",
    "UNPROCESSABLE",
    "Policy",
    "content_length",
    "judge_content_type",
    "merge",
    "parse_methods",
    "query_limits",
]

LAYER: Final = "validation"

#: Larger than any limit: a Content-Length of more digits than this is "huge".
_HUGE: Final = 1 << 62

UNPROCESSABLE = "The request failed validation; `errors` lists each problem."


#: RFC 9110 §15 status phrases where Python 3.11's `HTTPStatus` still has the
#: RFC 7231 ones ("Request Entity Too Large", "Unprocessable Entity"): the
#: title of an `about:blank` problem is the status phrase (RFC 9457 §4.2.1).
def _problem(
    status: int, detail: str, headers: Iterable[tuple[bytes, bytes]] = ()
) -> ProblemResponse:
    return ProblemResponse(Problem(status=status, detail=detail), headers)


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
_EMPTY_JSON = _problem(400, "The request body is empty, but its Content-Type says JSON.")
_INVALID_UTF8 = _problem(400, "The request body is not valid UTF-8.")
_JSON_BOM = _problem(400, "The JSON body starts with a byte order mark; send it without.")
_OUT_OF_RANGE = _problem(
    400, "The JSON body holds a number too large to represent (over 1.8e308 in magnitude)."
)


class Policy:
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
        name: str = LAYER,
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
            "empty-json-body": _EMPTY_JSON,
            "invalid-utf-8": _INVALID_UTF8,
            "json-bom": _JSON_BOM,
            "json-number-out-of-range": _OUT_OF_RANGE,
        }
        limits = {
            "content-too-large": max_body_bytes,
            "content-not-allowed": 0,
            "json-too-deep": max_json_depth,
            "query-too-long": max_query_bytes,
            "query-param-too-long": max_query_param_bytes,
            "too-many-query-params": max_query_params,
        }
        self.allow = Decision(LAYER, "allow", name, policy=key)
        # The PATCH variant of a 415 differs only in its Accept-Patch header:
        # one decision, "unsupported-media-type", for both.
        self.decisions = {
            reason: Decision(
                LAYER,
                "reject",
                name,
                reason=reason,
                status=response.status,
                policy=key,
                limit=limits.get(reason),
            )
            for reason, response in self.responses.items()
            if not reason.endswith("-patch")
        }
        for reason in ("invalid-body", "invalid-query", "invalid-headers"):
            self.decisions[reason] = Decision(
                LAYER, "reject", name, reason=reason, status=422, policy=key
            )
        self.decisions["client-disconnected"] = Decision(
            LAYER, "reject", name, reason="client-disconnected", policy=key
        )


def judge_content_type(
    policy: Policy, content_type: bytes | None, types_seen: int, encoded: bool
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


def query_limits(query_string: bytes, policy: Policy) -> str | None:
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


def content_length(values: list[bytes]) -> int | None:
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


def parse_methods(option: str, methods: Iterable[str]) -> frozenset[str]:
    """The methods of option `option`, checked: uppercase HTTP method names."""
    given: object = methods
    if isinstance(given, str | bytes) or not isinstance(given, Iterable):
        msg = f"{option} {given!r} is not a list of methods like ['GET', 'HEAD']"
        raise ConfigError(msg)
    out = set()
    for method in given:
        if not isinstance(method, str) or not method.isupper() or not method.isalpha():
            msg = f"{option} {method!r} is not an uppercase HTTP method like 'GET'"
            raise ConfigError(msg)
        out.add(method)
    return frozenset(out)


def merge(
    key: str,
    rules: Rules,
    default: Policy,
    no_body_methods: frozenset[str],
    name: str = LAYER,
) -> Policy:
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
        return Policy(
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
            name=name,
        )
    except ConfigError as exc:
        inherited = " (inherited from the layer: set Rules(content_types=...))"
        msg = f"routes: {key!r}: {exc}{inherited if rules.content_types is None else ''}"
        raise ConfigError(msg) from None
