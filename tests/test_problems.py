"""RFC 9457 problem details: the one builder of every rejection, and its formatter hook."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from apiguard import ConfigError, Problem, set_problem_formatter
from apiguard.problems import PROBLEM_JSON, ProblemResponse, get_problem_formatter

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _default_formatter() -> Iterator[None]:
    set_problem_formatter(None)
    yield
    set_problem_formatter(None)


def _app(response: ProblemResponse) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await response.send(scope, send)

    return app


async def _get(app: Any) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
        return await client.get("/orders/1")


async def test_problem_response_is_problem_json_with_headers() -> None:
    """Content type, status, the members, and the headers the RFC asks for."""
    problem = Problem(
        status=429,
        type="https://iana.org/assignments/http-problem-types#quota-exceeded",
        title="Request cannot be satisfied as assigned quota has been exceeded",
        detail="Too many requests; retry after 30 seconds.",
        extensions={"violated-policies": ["ip-0"]},
    )
    response = await _get(_app(ProblemResponse(problem, [(b"retry-after", b"30")])))
    assert response.status_code == 429
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.headers["retry-after"] == "30"
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.json() == {
        "type": "https://iana.org/assignments/http-problem-types#quota-exceeded",
        "title": "Request cannot be satisfied as assigned quota has been exceeded",
        "status": 429,
        "detail": "Too many requests; retry after 30 seconds.",
        "violated-policies": ["ip-0"],
    }


@pytest.mark.parametrize(
    ("status", "title"),
    [
        (401, "Unauthorized"),
        (503, "Service Unavailable"),
        (413, "Content Too Large"),  # RFC 9110, whatever the Python version
        (422, "Unprocessable Content"),
    ],
)
def test_about_blank_title_is_the_status_phrase(status: int, title: str) -> None:
    """RFC 9457 §4.2.1: with about:blank, the title is the status phrase."""
    assert Problem(status=status).to_dict() == {
        "type": "about:blank",
        "title": title,
        "status": status,
    }


@pytest.mark.parametrize("member", ["type", "title", "status", "detail", "instance"])
def test_extensions_never_override_core_members(member: str) -> None:
    with pytest.raises(ValueError, match="core members"):
        Problem(status=400, extensions={member: "x"})


@pytest.mark.parametrize("status", [200, 302, 399, 600])
def test_problem_status_must_be_an_error(status: int) -> None:
    with pytest.raises(ValueError, match="not a 4xx or 5xx"):
        Problem(status=status)


async def test_replaced_formatter_renders_every_problem() -> None:
    """One call replaces the body format for all layers; status and headers stay."""
    seen: list[str] = []

    def legacy(problem: Problem, scope: Any) -> tuple[str, bytes]:
        seen.append(scope["path"])
        body = {"error": {"code": problem.status, "message": problem.title}}
        return "application/json", json.dumps(body).encode()

    response_obj = ProblemResponse(
        Problem(status=401), [(b"www-authenticate", b'Bearer realm="api"')]
    )
    set_problem_formatter(legacy)
    assert get_problem_formatter() is legacy
    response = await _get(_app(response_obj))
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.headers["www-authenticate"] == 'Bearer realm="api"'
    assert response.json() == {"error": {"code": 401, "message": "Unauthorized"}}
    assert seen == ["/orders/1"]

    set_problem_formatter(None)
    response = await _get(_app(response_obj))
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["status"] == 401


def test_non_callable_formatter_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not callable"):
        set_problem_formatter("json")  # type: ignore[arg-type]


@pytest.mark.parametrize("extension", [True, False])
async def test_websocket_handshake_is_refused(extension: bool) -> None:
    """With the denial-response extension the problem is sent; without, close 1008."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope: dict[str, Any] = {"type": "websocket", "path": "/ws", "headers": []}
    if extension:
        scope["extensions"] = {"websocket.http.response": {}}
    await ProblemResponse(Problem(status=403)).send(scope, send)
    if extension:
        assert sent[0]["type"] == "websocket.http.response.start"
        assert sent[0]["status"] == 403
        assert json.loads(sent[1]["body"])["title"] == "Forbidden"
    else:
        assert sent == [{"type": "websocket.close", "code": 1008, "reason": ""}]
