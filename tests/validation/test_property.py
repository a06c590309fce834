"""Property: arbitrary requests never get a 500, and the app sees only valid ones.

The app behind the layer re-checks every rule itself, with independent code
(the standard library's `json`, a recursive depth, its own media-type and
Content-Length reading): if the layer lets through a request that breaks a
rule, the app's assertion fails the test.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from apiguard import Rules, ValidationMiddleware, guard
from tests.validation._apps import drive

pytestmark = pytest.mark.anyio

MAX_BODY = 256
UPLOAD_MAX = 64
MAX_DEPTH = 4
MAX_QUERY = 64
MAX_PARAMS = 4
NO_BODY = {"GET", "HEAD", "DELETE", "OPTIONS", "TRACE"}


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    n: int = 0


class Search(BaseModel):
    q: str
    limit: int = 10


ROUTES = {
    "POST /items": Rules(body=Item),
    "PATCH /items": Rules(content_types=["application/*+json"]),
    "POST /uploads": Rules(content_types=["application/octet-stream"], max_body_bytes=UPLOAD_MAX),
    "GET /search": Rules(query=Search),
}


def depth(value: Any) -> int:
    """How many arrays and objects the most deeply nested value sits inside."""
    if isinstance(value, list) and value:
        return 1 + max(map(depth, value))
    if isinstance(value, dict) and value:
        return 1 + max(map(depth, value.values()))
    return 0


def refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class Checker:
    """The app: reads the body it is given and asserts every rule of its route."""

    def __init__(self) -> None:
        self.called = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.called += 1
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                # Only where the layer had no body to read (none was declared).
                assert body == b""
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        method, path = scope["method"], scope["path"]
        headers: dict[bytes, list[bytes]] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name, []).append(value)
        query = scope["query_string"]
        assert len(query) <= MAX_QUERY
        assert len([p for p in query.split(b"&") if p]) <= MAX_PARAMS
        lengths = headers.get(b"content-length")
        if lengths is not None:
            values = {v.strip() for raw in lengths for v in raw.split(b",")}
            assert len(values) == 1
            (value,) = values
            assert value.isdigit()
            assert int(value) == len(body)
            assert b"transfer-encoding" not in headers
        limit = UPLOAD_MAX if path == "/uploads" else MAX_BODY
        if method in NO_BODY:
            assert body == b""
        assert len(body) <= limit
        if path == "/search" and method in ("GET", "HEAD"):
            Search.model_validate(dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True)))
        if path == "/items" and method == "POST":
            assert body  # the model makes the body required
        if body:
            (content_type,) = headers[b"content-type"]
            media, _, params = content_type.decode("latin-1").partition(";")
            media = media.strip().lower()
            assert headers.get(b"content-encoding", [b"identity"])[0].lower() == b"identity"
            if path == "/uploads":
                assert media == "application/octet-stream"
            elif path == "/items" and method == "PATCH":
                assert media.startswith("application/")
                assert media.endswith("+json")
            else:
                assert media == "application/json"
            if media.endswith("json"):
                charset = [
                    p.split("=", 1)[1].strip().strip('"').lower()
                    for p in params.split(";")
                    if p.strip().lower().startswith("charset=")
                ]
                assert charset in ([], ["utf-8"], ["utf8"])
                text = body.decode("utf-8")  # strict: invalid UTF-8 raises
                assert not text.startswith("\ufeff")
                document = json.loads(text, parse_constant=refuse_constant)
                assert depth(document) <= MAX_DEPTH
                if path == "/items" and method == "POST":
                    Item.model_validate(document)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def make_app() -> tuple[Any, Checker]:
    checker = Checker()
    routes = [
        Route("/items", checker, methods=["POST", "PATCH", "GET", "DELETE"]),
        Route("/uploads", checker, methods=["POST"]),
        Route("/search", checker, methods=["GET"]),
    ]
    app = guard(
        Starlette(routes=routes),
        Middleware(
            ValidationMiddleware,
            max_body_bytes=MAX_BODY,
            max_json_depth=MAX_DEPTH,
            max_query_bytes=MAX_QUERY,
            max_query_params=MAX_PARAMS,
            routes=ROUTES,
        ),
    )
    return app, checker


# --- strategies ----------------------------------------------------------------------

json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["name", "n", "x", "name "]), children, max_size=3)
    ),
    max_leaves=12,
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(
        st.sampled_from(
            ["json", "json", "item", "deep", "escape", "mangled", "bytes", "brackets", "empty"]
        )
    )
    if kind == "escape":  # valid JSON only once wrapped in arrays: must be refused
        head = b"[" + b"[]," * draw(st.integers(0, 8)) + b"1]"
        return head + draw(st.sampled_from([b",[2]", b" , 7", b"],[[2]", b"]", b""]))
    if kind == "item":
        item = {"name": draw(st.text(max_size=5)), "n": draw(st.integers(-5, 5))}
        return json.dumps(item, ensure_ascii=draw(st.booleans())).encode()
    if kind == "json":
        return json.dumps(draw(json_like)).encode()
    if kind == "deep":
        opens = draw(st.lists(st.sampled_from(["[", '{"name":']), min_size=1, max_size=8))
        closes = "".join("]" if o == "[" else "}" for o in reversed(opens))
        return ("".join(opens) + "1" + closes).encode()
    if kind == "mangled":
        text = json.dumps(draw(json_like)).encode()
        position = draw(st.integers(0, len(text)))
        insert = draw(
            st.sampled_from(
                [
                    b"NaN",
                    b"Infinity",
                    b"\xef\xbb\xbf",
                    b"\xff",
                    b"\xc3",
                    b"[",
                    b"]",
                    b",",
                    b'"',
                    b"\\ud800",
                ]
            )
        )
        return text[:position] + insert + text[position:]
    if kind == "brackets":
        return draw(st.sampled_from([b"[", b"{", b"]"])) * draw(st.integers(1, 400))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    return b""


content_types = st.sampled_from(
    [
        None,
        b"application/json",
        b"application/json; charset=utf-8",
        b"application/json; charset=latin-1",
        b"application/json;charset=utf-16",
        b'application/json; charset="UTF-8"',
        b"APPLICATION/JSON",
        b"application/merge-patch+json",
        b"application/octet-stream",
        b"text/plain",
        b"application/json, text/plain",
        b"",
        b";",
        b"application/",
    ]
) | st.binary(max_size=20)

queries = st.sampled_from(
    [
        b"",
        b"q=a",
        b"q=",
        b"limit=3",
        b"q=a&limit=x",
        b"a&b&c&d&e",
        b"q=" + b"a" * 62,  # at the length limit
        b"q=" + b"a" * 63,  # one byte over
        b"&" * 70,
        b"q=a&" + b"x=" * 30,
    ]
) | st.binary(max_size=80)


PLAUSIBLE_TYPES = {
    "/items": [
        b"application/json",
        b"application/merge-patch+json",
        b"application/json; charset=iso-8859-1",
        b"application/merge-patch+json; charset=utf-16",
    ],
    "/uploads": [b"application/octet-stream"],
    "/search": [b"application/json"],
    "/nowhere": [b"application/json"],
}
PAIRS = [
    ("POST", "/items"),
    ("PATCH", "/items"),
    ("POST", "/uploads"),
    ("GET", "/search"),
    ("HEAD", "/search"),
    ("GET", "/items"),
    ("DELETE", "/items"),
]


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly plausible requests (so that many reach the app), some wild ones."""
    if draw(st.integers(0, 6)):
        method, path = draw(st.sampled_from(PAIRS))
    else:
        method = draw(st.sampled_from(["GET", "HEAD", "POST", "PATCH", "PUT", "DELETE"]))
        path = draw(st.sampled_from(["/items", "/uploads", "/search", "/nowhere"]))
    body = b"" if method in NO_BODY and draw(st.integers(0, 3)) else draw(bodies())
    headers: list[tuple[bytes, bytes]] = []
    if draw(st.integers(0, 2)):
        content_type: bytes | None = draw(st.sampled_from(PLAUSIBLE_TYPES[path]))
    else:
        content_type = draw(content_types)
    if content_type is not None:
        headers.append((b"content-type", content_type))
    if draw(st.integers(0, 9)) == 0:
        headers.append((b"content-type", draw(content_types) or b"text/plain"))
    framing = draw(
        st.sampled_from(
            ["length"] * 4 + ["chunked"] * 2 + ["none", "wrong", "short", "long", "junk", "two"]
        )
    )
    if framing == "length":
        headers.append((b"content-length", str(len(body)).encode()))
    elif framing == "chunked":
        headers.append((b"transfer-encoding", b"chunked"))
    elif framing == "wrong":
        headers.append((b"content-length", str(draw(st.integers(0, 10**12))).encode()))
    elif framing == "short":  # declares more than it sends
        headers.append((b"content-length", str(len(body) + draw(st.integers(1, 3))).encode()))
    elif framing == "long":  # declares less than it sends
        headers.append(
            (b"content-length", str(max(0, len(body) - draw(st.integers(1, 3)))).encode())
        )
    elif framing == "junk":
        headers.append((b"content-length", draw(st.binary(max_size=6))))
    elif framing == "two":
        headers.append((b"content-length", str(len(body)).encode()))
        headers.append((b"transfer-encoding", b"chunked"))
    if draw(st.integers(0, 9)) == 0:
        headers.append((b"content-encoding", draw(st.sampled_from([b"gzip", b"identity", b""]))))
    http_version = draw(st.sampled_from(["1.1", "1.1", "2"]))
    if framing == "none" and http_version == "1.1":
        # RFC 9112 §6.3: an HTTP/1 server delivers no body without either
        # header (the next bytes are the next request). Only HTTP/2 frames
        # a body without them.
        body = b""
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    query = draw(st.sampled_from([b"q=a", b"q=a&limit=3"])) if path == "/search" else b""
    return {
        "method": method,
        "path": path,
        "headers": headers,
        "chunks": chunks,
        "query_string": query if draw(st.integers(0, 3)) else draw(queries),
        "http_version": http_version,
        "disconnect": draw(st.integers(0, 19)) == 0,
    }


STATUSES = {200, 400, 404, 405, 413, 414, 415, 422}


@pytest.mark.slow
@settings(
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(requests())
async def test_arbitrary_requests_never_500_and_only_valid_ones_reach_the_app(
    request: dict[str, Any],
) -> None:
    app, checker = make_app()
    answer = await drive(app, **request)
    event(f"status {answer.status}")
    if answer.status is None:
        assert request["disconnect"]
        return
    assert answer.status in STATUSES
    if answer.status != 200:
        assert checker.called == 0
    if answer.status in (400, 413, 414, 415, 422):
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["status"] == answer.status


@st.composite
def valid_requests(draw: st.DrawFn) -> dict[str, Any]:
    """Requests that satisfy every rule: they must all reach the app."""
    document = draw(json_like.filter(lambda v: depth(v) <= MAX_DEPTH))
    body = json.dumps(document).encode()
    if len(body) > MAX_BODY:
        body = b"{}"
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=3)))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    headers = [
        (
            b"content-type",
            draw(
                st.sampled_from(
                    [b"application/merge-patch+json", b"application/problem+json; charset=UTF-8"]
                )
            ),
        )
    ]
    if draw(st.booleans()):
        headers.append((b"content-length", str(len(body)).encode()))
    else:
        headers.append((b"transfer-encoding", b"chunked"))
    return {"method": "PATCH", "path": "/items", "headers": headers, "chunks": chunks}


@settings(max_examples=300, deadline=None)
@given(valid_requests())
async def test_requests_within_every_rule_reach_the_app(request: dict[str, Any]) -> None:
    app, checker = make_app()
    answer = await drive(app, **request)
    assert answer.status == 200, answer.body
    assert checker.called == 1


def test_item_model_is_strict_enough_to_matter() -> None:
    """The property's model refuses things: the 422 path is exercised."""
    with pytest.raises(ValidationError):
        Item.model_validate({"name": "a", "x": 1})
