"""RFC 9457 problem details: the one builder of every rejection.

Every layer answers a refused request with a [`Problem`][apiguard.problems.Problem]
sent through a [`ProblemResponse`][apiguard.problems.ProblemResponse]. The body
is `application/problem+json` unless the user replaces the formatter, once, for
all layers, with [`set_problem_formatter`][apiguard.set_problem_formatter].
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TypeAlias

from apiguard._types import Receive, Scope, Send

__all__ = [
    "CORE_MEMBERS",
    "PROBLEM_JSON",
    "Problem",
    "ProblemFormatter",
    "ProblemResponse",
    "default_formatter",
    "get_problem_formatter",
    "set_problem_formatter",
]

PROBLEM_JSON = "application/problem+json"

#: Statuses whose WebSocket refusal says "try again later" (close code 1013).
_TRY_AGAIN = frozenset({429, 503})

#: RFC 9457 §3.1: the members an extension may never overwrite.
CORE_MEMBERS = frozenset({"type", "title", "status", "detail", "instance"})


#: RFC 9110 §15 reason phrases where Python's `HTTPStatus` (3.11, 3.12) still
#: has the older ones, so that titles do not change with the Python version.
_RFC9110_PHRASES = {
    413: "Content Too Large",
    414: "URI Too Long",
    416: "Range Not Satisfiable",
    422: "Unprocessable Content",
}


def status_phrase(status: int) -> str:
    """The RFC 9110 reason phrase of `status`."""
    return _RFC9110_PHRASES.get(status) or HTTPStatus(status).phrase


@dataclass(frozen=True, slots=True)
class Problem:
    """A problem details document (RFC 9457).

    Args:
        status: The HTTP status code; the response is sent with it.
        type: A URI reference naming the problem type; `about:blank` means
            "nothing beyond the status code".
        title: A short summary, the same for every occurrence of the type.
            Defaults to the status phrase when `type` is `about:blank`.
        detail: A human-readable explanation of this occurrence. Clients should
            not parse it, and it must not carry secrets or internals.
        instance: A URI reference for this occurrence.
        extensions: Further members (`errors`, `violated-policies`, ...).

    Raises:
        ValueError: `status` is not an error status, or an extension member
            would overwrite a core member.
    """

    status: int
    type: str = "about:blank"
    title: str | None = None
    detail: str | None = None
    instance: str | None = None
    extensions: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 400 <= self.status <= 599:
            msg = f"problem status {self.status!r} is not a 4xx or 5xx status"
            raise ValueError(msg)
        clash = CORE_MEMBERS.intersection(self.extensions)
        if clash:
            msg = f"extension members {sorted(clash)} would overwrite RFC 9457 core members"
            raise ValueError(msg)
        if self.title is None and self.type == "about:blank":
            object.__setattr__(self, "title", status_phrase(self.status))

    def to_dict(self) -> dict[str, Any]:
        """The document as a JSON-ready dict: core members first, then extensions."""
        document: dict[str, Any] = {"type": self.type}
        if self.title is not None:
            document["title"] = self.title
        document["status"] = self.status
        if self.detail is not None:
            document["detail"] = self.detail
        if self.instance is not None:
            document["instance"] = self.instance
        document.update(self.extensions)
        return document


#: Turns a problem into `(media type, body bytes)`. Receives the request scope
#: too, for formatters that add a request id or the path.
ProblemFormatter: TypeAlias = Callable[[Problem, Scope], tuple[str, bytes]]


def default_formatter(problem: Problem, scope: Scope) -> tuple[str, bytes]:
    """Render `problem` as compact `application/problem+json`."""
    body = json.dumps(problem.to_dict(), ensure_ascii=False, separators=(",", ":"))
    return PROBLEM_JSON, body.encode("utf-8")


_formatter: ProblemFormatter | None = None


def set_problem_formatter(formatter: ProblemFormatter | None) -> None:
    """Replace how every layer renders its rejections; `None` restores the default.

    The formatter receives the [`Problem`][apiguard.problems.Problem] and the
    request scope and returns the media type and the body bytes. Status and
    headers (`WWW-Authenticate`, `Retry-After`, ...) stay as the RFCs require.

    Examples:
        >>> import json
        >>> def legacy(problem, scope):
        ...     body = {"error": {"code": problem.status, "message": problem.title}}
        ...     return "application/json", json.dumps(body).encode()
        >>> set_problem_formatter(legacy)
        >>> set_problem_formatter(None)
    """
    global _formatter
    candidate: object = formatter  # typed callable, but users pass anything
    if candidate is not None and not callable(candidate):
        from apiguard.errors import ConfigError

        msg = f"problem formatter {formatter!r} is not callable"
        raise ConfigError(msg)
    _formatter = formatter


def get_problem_formatter() -> ProblemFormatter:
    """The formatter in force."""
    return _formatter or default_formatter


class ProblemResponse:
    """A rejection: a problem plus the headers its RFC requires.

    With the default formatter the response bytes are built once and reused,
    so a flood of identical rejections costs no JSON encoding. A custom
    formatter is called for each response.

    WebSocket handshakes are refused with the problem as an HTTP response
    where the server supports the `websocket.http.response` extension, and
    otherwise closed before acceptance: with code 1013 (try again later)
    for 429 and 503, 1008 (policy violation) for the rest.
    """

    __slots__ = ("_body", "_start_headers", "headers", "problem")

    def __init__(self, problem: Problem, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
        self.problem = problem
        self.headers: tuple[tuple[bytes, bytes], ...] = tuple(headers)
        media_type, self._body = default_formatter(problem, {})
        self._start_headers = self._headers_for(media_type, self._body)

    @property
    def status(self) -> int:
        """The HTTP status code."""
        return self.problem.status

    def _headers_for(self, media_type: str, body: bytes) -> tuple[tuple[bytes, bytes], ...]:
        return (
            (b"content-type", media_type.encode("latin-1")),
            (b"content-length", str(len(body)).encode("latin-1")),
            *self.headers,
        )

    def _render(self, scope: Scope) -> tuple[tuple[tuple[bytes, bytes], ...], bytes]:
        if _formatter is None:
            return self._start_headers, self._body
        media_type, body = _formatter(self.problem, scope)
        return self._headers_for(media_type, body), body

    async def send(
        self, scope: Scope, send: Send, extra_headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> None:
        """Send the rejection for the request in `scope`."""
        headers, body = self._render(scope)
        if scope["type"] == "websocket":
            await _refuse_websocket(scope, send, self.problem.status, headers, extra_headers, body)
            return
        await send(
            {
                "type": "http.response.start",
                "status": self.problem.status,
                "headers": [*headers, *extra_headers],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the rejection: a `ProblemResponse` is an ASGI app too."""
        await self.send(scope, send)


async def _refuse_websocket(
    scope: Scope,
    send: Send,
    status: int,
    headers: Iterable[tuple[bytes, bytes]],
    extra_headers: Iterable[tuple[bytes, bytes]],
    body: bytes,
) -> None:
    if "websocket.http.response" in (scope.get("extensions") or {}):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [*headers, *extra_headers],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
        return
    # ASGI: closing before accept makes the server answer the handshake 403.
    # RFC 6455 §7.4.1 codes for a client that reads them: 1013 "try again
    # later" for a limit or an outage, 1008 "policy violation" otherwise.
    code = 1013 if status in _TRY_AGAIN else 1008
    await send({"type": "websocket.close", "code": code, "reason": ""})
