"""OpenAPI that documents the guards: what each layer imposes, added to a FastAPI app's schema.

Every layer in front of the app's router describes, for each operation,
what it asks of callers and what it may answer instead of the app (see
[`Description`][apiguard.layer.Description]); this module turns that into
OpenAPI 3.1: security schemes and per-operation security requirements,
the responses the layers can give (RFC 9457 problem details, with their
headers), the headers they add to the app's own responses, and the request
headers they read. It knows no layer's internals.

Wire it once, after `guard()`:

    app.openapi = guarded_openapi(app)
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from apiguard.layer import Answer, Description, Security, SecurityScheme, reached
from apiguard.problems import PROBLEM_JSON
from apiguard.report import layers_of

__all__ = ["PROBLEM_SCHEMA", "enrich_openapi", "guarded_openapi"]

_METHODS: Final = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

#: RFC 9457 §3: the members every problem may carry; extensions are allowed.
PROBLEM_SCHEMA: Final[Mapping[str, Any]] = {
    "type": "object",
    "title": "Problem",
    "description": (
        "Problem details (RFC 9457). Extension members (`errors`, `violated-policies`, ...) "
        "may follow the core ones."
    ),
    "properties": {
        "type": {
            "type": "string",
            "format": "uri-reference",
            "description": "The problem type; `about:blank`: nothing beyond the status.",
            "default": "about:blank",
        },
        "title": {"type": "string", "description": "A short summary of the problem type."},
        "status": {
            "type": "integer",
            "minimum": 400,
            "maximum": 599,
            "description": "The HTTP status code.",
        },
        "detail": {"type": "string", "description": "This occurrence, for people."},
        "instance": {"type": "string", "format": "uri-reference"},
    },
    "additionalProperties": True,
}

#: What the headers the layers send mean; any other header is documented as a string.
_HEADERS: Final[Mapping[str, Mapping[str, Any]]] = {
    "www-authenticate": {
        "description": "The challenge: how to authenticate (RFC 9110 §11.6.1, RFC 6750 §3).",
        "schema": {"type": "string"},
    },
    "retry-after": {
        "description": "Seconds to wait before retrying (RFC 9110 §10.2.3).",
        "schema": {"type": "integer", "minimum": 0},
    },
    "ratelimit": {
        "description": (
            "The state of each quota policy: remaining quota `r` and seconds to reset `t` "
            '(draft-ietf-httpapi-ratelimit-headers): `"ip-0";r=99;t=41`.'
        ),
        "schema": {"type": "string"},
    },
    "ratelimit-policy": {
        "description": (
            "Each quota policy: quota `q` per window `w` seconds "
            '(draft-ietf-httpapi-ratelimit-headers): `"ip-0";q=100;w=60`.'
        ),
        "schema": {"type": "string"},
    },
}


def guarded_openapi(
    app: Any,
    *,
    problem_media_type: str = PROBLEM_JSON,
    problem_schema: Mapping[str, Any] | None = None,
) -> Callable[[], dict[str, Any]]:
    """Wrap a FastAPI app's `openapi()` so that its schema documents the guards.

    Use it as FastAPI documents for a custom schema: `app.openapi =
    guarded_openapi(app)`. The schema is made on first use (after the
    app's routes and layers are all in place) and kept, as FastAPI keeps
    its own.

    Args:
        app: The FastAPI app, with apiguard's layers registered (`guard()`).
        problem_media_type: The media type of the layers' refusals; change
            it only with the formatter
            ([`set_problem_formatter`][apiguard.set_problem_formatter]).
        problem_schema: The schema of a refusal's body, for a replaced
            formatter; RFC 9457's by default.

    Returns:
        A function that returns the enriched schema.

    Raises:
        ConfigError: (when called) a layer's start-up check fails.

    Examples:
        >>> from fastapi import FastAPI
        >>> app = FastAPI()
        >>> app.openapi = guarded_openapi(app)
        >>> app.openapi()["openapi"]
        '3.1.0'
    """
    original = app.openapi
    made: dict[str, Any] | None = None

    def openapi() -> dict[str, Any]:
        nonlocal made
        if made is None:
            made = enrich_openapi(
                original(),
                app,
                problem_media_type=problem_media_type,
                problem_schema=problem_schema,
            )
        return made

    return openapi


def enrich_openapi(
    schema: Mapping[str, Any],
    app: Any,
    *,
    problem_media_type: str = PROBLEM_JSON,
    problem_schema: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A copy of `schema` with what the layers in front of `app` impose on each operation.

    For every operation (`paths[path][method]`), each layer's
    [`Description`][apiguard.layer.Description] of that route adds:

    - security schemes to `components.securitySchemes`, and the operation's
      `security`: one requirement per accepted scheme with the route's
      scopes; plus `{}` where a credential is optional; `[]` (none) on a
      public route;
    - each response a layer may give instead of the app's, with an
      `application/problem+json` body and its headers (`WWW-Authenticate`,
      `Retry-After`, ...), merged into a status the app documents already;
    - the headers a layer adds to the responses of what runs inside it
      (`RateLimit`, `RateLimit-Policy`), on the app's own responses and on
      inner layers' refusals;
    - the request headers a layer reads (`Idempotency-Key`), as parameters.

    Args:
        schema: An OpenAPI 3.x document (FastAPI's `app.openapi()`).
        app: The app the layers guard (a FastAPI or Starlette app, or
            middleware around one).
        problem_media_type: The media type of the layers' refusals.
        problem_schema: The schema of a refusal's body (RFC 9457's by default).

    Returns:
        The enriched document; `schema` itself is left untouched.

    Raises:
        ConfigError: a layer's start-up check fails.
    """
    document = copy.deepcopy(dict(schema))
    layers = layers_of(app)
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.setdefault("Problem", copy.deepcopy(dict(problem_schema or PROBLEM_SCHEMA)))
    # The problem types and status of a refusal are named in its schema only
    # for RFC 9457's own body: a replaced formatter's body may have neither.
    enricher = _Enricher(components, problem_media_type, exact=problem_schema is None)
    for path, item in document.get("paths", {}).items():
        for method in _METHODS:
            operation = item.get(method)
            if isinstance(operation, dict):
                described = [layer.describe(method.upper(), path) for layer in layers]
                enricher.operation(operation, reached(described))
    if not components.get("securitySchemes"):
        components.pop("securitySchemes", None)
    return document


class _Enricher:
    """Adds the layers' descriptions of one operation to it."""

    def __init__(self, components: dict[str, Any], media_type: str, *, exact: bool) -> None:
        self.components = components
        self.media_type = media_type
        self.exact = exact

    def operation(self, operation: dict[str, Any], descriptions: Sequence[Description]) -> None:
        self.security(operation, [d.security for d in descriptions if d.security is not None])
        responses = operation.setdefault("responses", {})
        own = set(responses)  # the app's own responses, before any layer's
        refusals: dict[str, list[tuple[int, Answer]]] = {}
        for index, description in enumerate(descriptions):
            for answer in description.answers:
                refusals.setdefault(str(answer.status), []).append((index, answer))
        for status, entries in sorted(refusals.items()):
            answers = [answer for _, answer in entries]
            self.response(responses, status, answers, shared=status in own)
        # A layer's response headers reach everything inside it: the app's
        # responses, and the refusals of the layers after it.
        for index, description in enumerate(descriptions):
            if not description.response_headers:
                continue
            inner = {s for s, entries in refusals.items() if any(i > index for i, _ in entries)}
            for status in sorted(own | inner):
                self.headers(responses[status], description.response_headers, required=False)
        for description in descriptions:
            self.request_headers(operation, description)

    # --- security ---------------------------------------------------------------------

    def security(self, operation: dict[str, Any], securities: Sequence[Security]) -> None:
        if not securities:
            return  # no authentication layer: the operation says what it says
        alternatives: list[list[dict[str, list[str]]]] = []
        for security in securities:
            for scheme in security.schemes:
                self.scheme(scheme)
            if security.mode == "public":
                continue
            options = [{scheme.name: list(security.scopes)} for scheme in security.schemes]
            if security.mode == "optional":
                options.append({})
            alternatives.append(options)
        if not alternatives:
            # Public: no requirement, unless the app documents one of its own.
            operation.setdefault("security", [])
            return
        # Every layer must be satisfied: one requirement per combination (OpenAPI
        # ORs the list and ANDs the schemes inside one requirement).
        combined: list[dict[str, list[str]]] = []
        for choice in itertools.product(*alternatives):
            merged: dict[str, list[str]] = {}
            for requirement in choice:
                for name, scopes in requirement.items():
                    merged[name] = sorted({*merged.get(name, []), *scopes})
            if merged not in combined:
                combined.append(merged)
        operation["security"] = combined

    def scheme(self, scheme: SecurityScheme) -> None:
        entry: dict[str, Any] = {"type": scheme.type}
        if scheme.type == "http":
            entry["scheme"] = scheme.scheme or "bearer"
            if scheme.bearer_format:
                entry["bearerFormat"] = scheme.bearer_format
        else:
            entry["in"] = scheme.location or "header"
            entry["name"] = scheme.parameter or ""
        self.components.setdefault("securitySchemes", {})[scheme.name] = entry

    # --- responses --------------------------------------------------------------------

    def response(
        self, responses: dict[str, Any], status: str, answers: Sequence[Answer], *, shared: bool
    ) -> None:
        described = list(dict.fromkeys(a.description for a in answers if a.description))
        response = responses.setdefault(status, {})
        if "description" not in response:
            if len(described) > 1:  # one refusal a line (CommonMark)
                response["description"] = "\n".join(f"- {text}" for text in described)
            else:
                response["description"] = described[0] if described else "Refused by a guard."
        # A header is required where every refusal of this status carries it,
        # and the app does not answer this status itself.
        names = list(dict.fromkeys(h for a in answers for h in a.headers))
        for name in names:
            always = not shared and all(name in a.headers for a in answers)
            self.headers(response, [name], required=always)
        body: dict[str, Any] = {"$ref": "#/components/schemas/Problem"}
        types = sorted({a.type for a in answers})
        if self.exact and not shared:  # only the layers answer this status: say which
            exact = {"type": {"enum": types}, "status": {"const": int(status)}}
            body = {"allOf": [body, {"properties": exact}]}
        content = response.setdefault("content", {})
        content.setdefault(self.media_type, {"schema": body})

    def headers(self, response: dict[str, Any], names: Iterable[str], *, required: bool) -> None:
        headers = response.setdefault("headers", {})
        for name in names:
            if any(known.lower() == name.lower() for known in headers):
                continue  # documented already, by the app or a refusal
            entry = copy.deepcopy(dict(_HEADERS.get(name.lower(), {"schema": {"type": "string"}})))
            if required:
                entry["required"] = True
            headers[name] = entry

    # --- request headers --------------------------------------------------------------

    def request_headers(self, operation: dict[str, Any], description: Description) -> None:
        if not description.request_headers:
            return
        parameters = operation.setdefault("parameters", [])
        for header in description.request_headers:
            if any(
                p.get("in") == "header" and str(p.get("name", "")).lower() == header.name.lower()
                for p in parameters
            ):
                continue
            parameter: dict[str, Any] = {
                "name": header.name,
                "in": "header",
                "required": header.required,
                "schema": {"type": "string"},
            }
            if header.description:
                parameter["description"] = header.description
            parameters.append(parameter)
