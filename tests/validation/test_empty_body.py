"""An empty body: declared as JSON it is not JSON (400); with no content type, no content."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from apiguard import Rules, ValidationMiddleware, get_context, guard
from apiguard.validation import validated
from tests.validation._apps import Answer, drive

pytestmark = pytest.mark.anyio

JSON = (b"content-type", b"application/json")
CHUNKED = (b"transfer-encoding", b"chunked")
EMPTY = (b"content-length", b"0")


class Note(BaseModel):
    text: str


class _Spy:
    """Outside the layer: what it decided, after each request."""

    def __init__(self, app: Any, seen: list[tuple[str, str, str | None]]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)
        if scope["type"] == "http":
            self.seen += [(d.layer, d.outcome, d.reason) for d in get_context(scope).decisions]


class EmptyBodyApp:
    """Plain Starlette endpoints that parse JSON themselves, behind the layer; a decision spy."""

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.decisions: list[tuple[str, str, str | None]] = []

        async def parse(request: Request) -> JSONResponse:
            self.calls.append(await request.json())  # raises on an empty body: a 500
            return JSONResponse({"ok": True})

        async def optional(request: Request) -> JSONResponse:
            self.calls.append(validated(request))
            return JSONResponse({"ok": True})

        async def touch(request: Request) -> JSONResponse:
            self.calls.append(await request.body())
            return JSONResponse({"ok": True})

        starlette = Starlette(
            routes=[
                Route("/notes", parse, methods=["POST", "PUT", "PATCH"]),
                Route("/maybe", optional, methods=["POST"]),
                Route("/required", optional, methods=["POST"]),
                Route("/items/{item_id:int}", touch, methods=["GET", "DELETE", "POST"]),
                Route("/blobs", touch, methods=["POST"]),
            ]
        )
        self.app = guard(
            starlette,
            Middleware(_Spy, self.decisions),
            Middleware(
                ValidationMiddleware,
                routes={
                    "PATCH /notes": Rules(content_types=["application/*+json"]),
                    "POST /maybe": Rules(body=Note | None),
                    "POST /required": Rules(body=Note),
                    "POST /blobs": Rules(content_types=["application/octet-stream"]),
                },
            ),
        )

    async def send(
        self,
        method: str,
        path: str,
        headers: Sequence[tuple[bytes, bytes]] = (),
        http_version: str = "1.1",
    ) -> Answer:
        return await drive(self.app, method, path, headers, chunks=[], http_version=http_version)


@pytest.fixture
def empty() -> EmptyBodyApp:
    return EmptyBodyApp()


FRAMINGS = [
    pytest.param([JSON, EMPTY], "1.1", id="content-length-0"),
    pytest.param([JSON, CHUNKED], "1.1", id="chunked-no-data"),
    pytest.param([JSON], "2", id="http2-neither-header"),
    pytest.param([JSON], "1.1", id="http1-neither-header"),
    pytest.param([(b"content-type", b"Application/JSON; charset=utf-8"), EMPTY], "1.1", id="case"),
]


@pytest.mark.parametrize(("headers", "version"), FRAMINGS)
@pytest.mark.parametrize("method", ["POST", "PUT"])
async def test_an_empty_json_body_is_a_400_problem_not_a_500(
    empty: EmptyBodyApp, headers: list[tuple[bytes, bytes]], version: str, method: str
) -> None:
    """RFC 8259 §2: an empty text is not JSON; the endpoint's `request.json()` never runs."""
    answer = await empty.send(method, "/notes", headers, http_version=version)
    assert answer.status == 400
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["status"] == 400
    assert problem["detail"] == "The request body is empty, but its Content-Type says JSON."
    assert empty.calls == []
    assert empty.decisions == [("validation", "reject", "empty-json-body")]


async def test_a_structured_json_suffix_counts_as_json(empty: EmptyBodyApp) -> None:
    headers = [(b"content-type", b"application/merge-patch+json"), EMPTY]
    assert (await empty.send("PATCH", "/notes", headers)).status == 400


@pytest.mark.parametrize(("headers", "version"), FRAMINGS)
@pytest.mark.parametrize("path", ["/maybe", "/required"])
async def test_an_empty_json_body_is_a_400_whatever_the_model(
    empty: EmptyBodyApp, headers: list[tuple[bytes, bytes]], version: str, path: str
) -> None:
    """JSON well-formedness comes before the model: `Note | None` and `Note` alike."""
    answer = await empty.send("POST", path, headers, http_version=version)
    assert answer.status == 400
    assert empty.calls == []
    assert empty.decisions == [("validation", "reject", "empty-json-body")]


@pytest.mark.parametrize(
    ("headers", "version"),
    [
        pytest.param([EMPTY], "1.1", id="content-length-0"),
        pytest.param([], "2", id="http2-neither-header"),
        pytest.param([], "1.1", id="http1-neither-header"),
    ],
)
async def test_no_body_and_no_content_type_keeps_working(
    empty: EmptyBodyApp, headers: list[tuple[bytes, bytes]], version: str
) -> None:
    """No content type, no content: a model that accepts none gets `None`, as before."""
    answer = await empty.send("POST", "/maybe", headers, http_version=version)
    assert answer.status == 200
    assert empty.calls == [None]
    assert empty.decisions == [("validation", "allow", None)]
    required = await empty.send("POST", "/required", headers, http_version=version)
    assert required.status == 422  # a model that needs a body: `missing`, as FastAPI answers
    assert required.json()["errors"] == [
        {"loc": ["body"], "msg": "Field required", "type": "missing"}
    ]


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        pytest.param("GET", "/items/1", [JSON], id="get-with-a-json-type"),
        pytest.param("DELETE", "/items/1", [JSON, EMPTY], id="delete-content-length-0"),
        pytest.param("POST", "/items/1", [], id="post-nothing-at-all"),
        pytest.param("POST", "/items/1", [(b"content-type", b"text/plain"), EMPTY], id="text"),
        pytest.param("POST", "/blobs", [JSON, EMPTY], id="json-where-json-is-not-taken"),
    ],
)
async def test_an_empty_body_that_declares_no_json_content_passes(
    empty: EmptyBodyApp, method: str, path: str, headers: list[tuple[bytes, bytes]]
) -> None:
    """No JSON to parse: methods without content, no or other content types."""
    answer = await empty.send(method, path, headers)
    assert answer.status == 200
    assert empty.calls == [b""]
