"""The body: size limits while streaming, framing, methods without a body, replay."""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from apiguard import get_context
from tests.validation._apps import ORDER, Answer, Calls, drive, json_headers, starlette_app

pytestmark = pytest.mark.anyio

MiB = 1_048_576


def chunks_of(total: int, size: int = 65_536, byte: bytes = b" ") -> Iterator[bytes]:
    """`total` bytes in chunks of `size`, each a new object, made one at a time.

    A server hands over a fresh buffer per message; so does this, so that
    holding chunks costs memory as it would under a server.
    """
    sent = 0
    while sent < total:
        piece = byte * min(size, total - sent)
        sent += len(piece)
        yield piece


def problem(answer: Answer) -> dict[str, Any]:
    assert answer.headers["content-type"] == "application/problem+json"
    return answer.json()  # type: ignore[no-any-return]


async def test_declared_10_gb_is_refused_before_a_byte_is_read() -> None:
    """Content-Length: 10 GB -> 413 at once; receive() is never called."""
    calls = Calls()
    answer = await drive(
        starlette_app(calls),
        headers=[*json_headers(10 * 1024**3)],
        chunks=chunks_of(10 * 1024**3),
    )
    assert answer.status == 413
    assert answer.receive_calls == 0
    assert answer.bytes_delivered == 0
    assert problem(answer)["title"] == "Content Too Large"
    assert calls.seen == []


async def test_content_length_of_many_digits_is_too_large_not_an_error() -> None:
    """A 5,000-digit Content-Length is a 413, not a crash in int()."""
    huge = [(b"content-type", b"application/json"), (b"content-length", b"9" * 5000)]
    answer = await drive(starlette_app(), headers=huge, chunks=[b"{}"])
    assert answer.status == 413
    assert answer.receive_calls == 0


@pytest.mark.slow
async def test_200_mb_chunked_body_is_cut_off_with_bounded_memory() -> None:
    """200 MB without Content-Length against 1 MiB: 413, a few MiB of memory at most."""
    calls = Calls()
    app = starlette_app(calls)
    await drive(app, headers=json_headers(), chunks=[b"{}"])  # warm up: build the stack
    gc.collect()
    tracemalloc.start()
    try:
        answer = await drive(app, headers=json_headers(), chunks=chunks_of(200 * 1024**2))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert answer.status == 413
    assert calls.seen[1:] == []
    # Reading stops at the first chunk past the limit...
    assert answer.bytes_delivered <= MiB + 65_536
    # ...and the process held little more than the limit: the chunks, then no copy.
    assert peak < 3 * MiB, f"peak traced memory {peak / MiB:.1f} MiB"


async def test_chunked_body_within_the_limit_reaches_the_app_unchanged() -> None:
    """A body in many small chunks is joined and replayed byte for byte."""
    calls = Calls()
    body = json.dumps({"items": list(range(5000))}).encode()
    pieces = [body[i : i + 1000] for i in range(0, len(body), 1000)]
    answer = await drive(starlette_app(calls), headers=json_headers(), chunks=pieces)
    assert answer.status == 200
    assert calls.seen[0]["body"] == body


async def test_body_longer_than_its_content_length_is_400() -> None:
    """Declares 10, sends 20: refused at the byte past the declared length."""
    calls = Calls()
    answer = await drive(
        starlette_app(calls), headers=json_headers(10), chunks=[b'{"a": "12', b'345678901"}']
    )
    assert answer.status == 400
    assert "longer than its Content-Length" in problem(answer)["detail"]
    assert calls.seen == []


async def test_body_shorter_than_its_content_length_is_400() -> None:
    """Declares 100, sends 2 and ends: refused."""
    calls = Calls()
    answer = await drive(starlette_app(calls), headers=json_headers(100), chunks=[b"{}"])
    assert answer.status == 400
    assert "shorter than its Content-Length" in problem(answer)["detail"]
    assert calls.seen == []


@pytest.mark.parametrize(
    "values",
    [
        [b"abc"],
        [b"-1"],
        [b"+5"],
        [b"1_0"],
        [b"0x10"],
        [b""],
        [b"\xd9\xa3"],  # an Arabic-Indic digit: int() would take it
        [b"2", b"3"],
        [b"2, 3"],
    ],
    ids=["letters", "negative", "plus", "underscore", "hex", "empty", "unicode", "two", "list"],
)
async def test_malformed_content_length_is_400(values: list[bytes]) -> None:
    calls = Calls()
    headers = [(b"content-type", b"application/json")]
    headers += [(b"content-length", value) for value in values]
    answer = await drive(starlette_app(calls), headers=headers, chunks=[b"{}"])
    assert answer.status == 400
    assert answer.receive_calls == 0
    assert calls.seen == []


@pytest.mark.parametrize("values", [[b"2", b"2"], [b"2, 2"], [b" 002 "]])
async def test_repeated_identical_content_length_is_accepted(values: list[bytes]) -> None:
    """RFC 9112 §6.3: a list of one repeated value may be taken as that value."""
    headers = [(b"content-type", b"application/json")]
    headers += [(b"content-length", value) for value in values]
    answer = await drive(starlette_app(), headers=headers, chunks=[b"{}"])
    assert answer.status == 200


async def test_content_length_with_transfer_encoding_is_400() -> None:
    """Both framings at once is how requests are smuggled: refused."""
    headers = [*json_headers(2), (b"transfer-encoding", b"chunked")]
    answer = await drive(starlette_app(), headers=headers, chunks=[b"{}"])
    assert answer.status == 400
    assert answer.receive_calls == 0


async def test_exact_limit_is_accepted_and_one_more_byte_is_413() -> None:
    app = starlette_app(max_body_bytes=100)
    body = b"[" + b" " * 98 + b"]"
    assert (await drive(app, headers=json_headers(100), chunks=[body])).status == 200
    assert (await drive(app, headers=json_headers(), chunks=[body])).status == 200
    over = body + b" "
    declared = await drive(app, headers=json_headers(101), chunks=[over])
    assert (declared.status, declared.receive_calls) == (413, 0)
    streamed = await drive(app, headers=json_headers(), chunks=[body, b" "])
    assert streamed.status == 413


async def test_per_route_limit_overrides_the_default() -> None:
    """POST /uploads allows 4096 bytes of octet-stream, the default 1 MiB elsewhere."""
    app = starlette_app()
    headers = [(b"content-type", b"application/octet-stream")]
    assert (await drive(app, path="/uploads", headers=headers, chunks=[b"x" * 4096])).status == 200
    answer = await drive(app, path="/uploads", headers=headers, chunks=[b"x" * 4097])
    assert answer.status == 413
    assert "4096 bytes" in problem(answer)["detail"]


async def test_disconnect_mid_body_sends_nothing_and_skips_the_app() -> None:
    calls = Calls()
    app = starlette_app(calls)
    answer = await drive(app, headers=json_headers(), chunks=[b'{"a":'], disconnect=True)
    assert answer.status is None
    assert answer.body == b""
    assert calls.seen == []


async def test_disconnect_is_recorded_as_a_decision() -> None:
    seen = []

    async def probe(scope: dict, receive: object, send: object) -> None:  # pragma: no cover
        raise AssertionError("the app must not run")

    from starlette.middleware import Middleware

    from apiguard import ValidationMiddleware, guard

    class Spy:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: dict, receive: object, send: object) -> None:
            await self.app(scope, receive, send)
            seen.extend(get_context(scope).decisions)

    app = guard(probe, Middleware(Spy), Middleware(ValidationMiddleware))
    await drive(app, headers=json_headers(), chunks=[b"{"], disconnect=True)
    assert [(d.layer, d.outcome, d.reason) for d in seen] == [
        ("validation", "reject", "client-disconnected")
    ]


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE", "OPTIONS", "TRACE"])
async def test_methods_without_a_body_refuse_one(method: str) -> None:
    calls = Calls()
    app = starlette_app(calls)
    answer = await drive(app, method, "/orders/1", headers=json_headers(2), chunks=[b"{}"])
    assert answer.status == 413
    assert answer.receive_calls == 0
    assert calls.seen == []


async def test_get_with_a_chunked_body_is_refused_at_its_first_byte() -> None:
    headers = [(b"transfer-encoding", b"chunked")]
    answer = await drive(starlette_app(), "GET", "/orders/1", headers=headers, chunks=[b"x"])
    assert answer.status == 413


async def test_get_with_an_empty_chunked_body_passes() -> None:
    headers = [(b"transfer-encoding", b"chunked")]
    answer = await drive(starlette_app(), "GET", "/orders/1", headers=headers, chunks=[])
    assert answer.status == 200


async def test_get_with_content_length_zero_passes() -> None:
    headers = [(b"content-length", b"0")]
    answer = await drive(starlette_app(), "GET", "/orders/1", headers=headers, chunks=[])
    assert answer.status == 200


async def test_http2_get_without_content_length_is_read_for_a_body() -> None:
    """HTTP/2 frames bodies without Content-Length: a GET's DATA is caught too."""
    answer = await drive(starlette_app(), "GET", "/orders/1", chunks=[b"sneaky"], http_version="2")
    assert answer.status == 413


async def test_no_body_rule_refuses_a_body_on_post() -> None:
    """Rules(no_body=True): POST /orders/{id}/cancel takes no content."""
    app = starlette_app()
    refused = await drive(app, "POST", "/orders/7/cancel", headers=json_headers(2), chunks=[b"{}"])
    assert refused.status == 413
    assert problem(refused)["detail"] == "This request must not carry content."
    assert (await drive(app, "POST", "/orders/7/cancel")).status == 200


async def test_custom_no_body_methods_allow_a_body_on_delete() -> None:
    calls = Calls()
    app = starlette_app(calls, no_body_methods=["GET", "HEAD"])
    answer = await drive(app, "DELETE", "/orders/1", headers=json_headers(2), chunks=[b"{}"])
    assert answer.status == 200
    assert calls.seen[0]["body"] == b"{}"


async def test_post_without_content_passes_the_content_type_check() -> None:
    """No content, no content type to check: an empty POST reaches the app."""
    calls = Calls()
    answer = await drive(starlette_app(calls), "POST", "/documents")
    assert answer.status == 200
    assert calls.seen[0]["body"] == b""


async def test_the_app_receives_the_original_bytes() -> None:
    """Whitespace, key order, escapes and duplicate keys: byte for byte."""
    calls = Calls()
    body = b'{ "b" : 1,\n\t"a": "\\u00e9\\n", "a": 2 }  '
    answer = await drive(starlette_app(calls), headers=json_headers(len(body)), chunks=[body])
    assert answer.status == 200
    assert calls.seen[0]["body"] == body


async def test_replayed_receive_passes_the_disconnect_on() -> None:
    """After the replayed body, the app's next receive() is the server's."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Route

    from apiguard import ValidationMiddleware, guard

    messages = []

    class Endpoint:  # an ASGI endpoint: Starlette hands it receive itself
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            messages.append(await receive())
            messages.append(await receive())
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    app = guard(
        Starlette(routes=[Route("/x", Endpoint(), methods=["POST"])]),
        Middleware(ValidationMiddleware),
    )
    answer = await drive(app, "POST", "/x", headers=json_headers(2), chunks=[b"{}"])
    assert answer.status == 204
    assert messages == [
        {"type": "http.request", "body": b"{}", "more_body": False},
        {"type": "http.disconnect"},
    ]


async def test_through_httpx_a_valid_order_reaches_the_endpoint() -> None:
    calls = Calls()
    transport = httpx.ASGITransport(starlette_app(calls), client=("203.0.113.9", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post("/orders", json=ORDER)
    assert response.status_code == 201
    assert response.json()["app_parse"] == ORDER
    assert calls.seen[0]["values"]["body"].lines[0].sku == "BOOK-1"
