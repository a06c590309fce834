"""Content types per route: 415 otherwise; charset; structured suffixes; encodings."""

from __future__ import annotations

import pytest

from apiguard.validation._media import ALLOWED, ALLOWED_JSON, REFUSED, ContentTypes
from tests.validation._apps import Calls, drive, starlette_app

pytestmark = pytest.mark.anyio


async def post(
    content_type: bytes | None, body: bytes = b"{}", path: str = "/documents", method: str = "POST"
) -> tuple[int | None, Calls]:
    calls = Calls()
    headers = [(b"content-length", str(len(body)).encode())]
    if content_type is not None:
        headers.append((b"content-type", content_type))
    answer = await drive(starlette_app(calls), method, path, headers=headers, chunks=[body])
    return answer.status, calls


@pytest.mark.parametrize(
    "content_type",
    [
        b"application/json",
        b"Application/JSON",
        b"application/json; charset=utf-8",
        b"application/json;charset=UTF-8",
        b'application/json; charset="utf-8"',
        b"application/json; charset=utf8",
        b"application/json ; foo=bar",
    ],
)
async def test_json_with_utf8_or_no_charset_is_accepted(content_type: bytes) -> None:
    assert (await post(content_type))[0] == 200


@pytest.mark.parametrize(
    "content_type",
    [
        b"text/plain",
        b"application/x-www-form-urlencoded",
        b"multipart/form-data; boundary=x",
        b"application/jsonx",
        b"application/json; charset=iso-8859-1",
        b"application/json; charset=utf-16",
        b"application/merge-patch+json",  # not listed for this route
        b"json",
        b"",
        b"application/json/x",
        b"application /json",
    ],
)
async def test_other_content_types_are_415(content_type: bytes) -> None:
    status, calls = await post(content_type)
    assert status == 415
    assert calls.seen == []


async def test_missing_content_type_with_content_is_415() -> None:
    status, calls = await post(None)
    assert status == 415
    assert calls.seen == []


async def test_refusal_names_the_accepted_types() -> None:
    headers = [(b"content-length", b"2"), (b"content-type", b"text/plain")]
    answer = await drive(starlette_app(), headers=headers, chunks=[b"{}"])
    assert answer.status == 415
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["detail"].endswith("send one of: application/json.")


async def test_content_type_is_checked_before_the_body_is_read() -> None:
    headers = [(b"content-length", b"2"), (b"content-type", b"text/plain")]
    answer = await drive(starlette_app(), headers=headers, chunks=[b"{}"])
    assert answer.receive_calls == 0


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        (b"application/merge-patch+json", 200),
        (b"application/json-patch+json", 200),
        (b"application/problem+json; charset=utf-8", 200),
        (b"application/json", 415),  # the route lists only +json suffixes
        (b"text/foo+json", 415),
        (b"application/merge-patch+json; charset=latin-1", 415),
    ],
)
async def test_structured_suffix_wildcard(content_type: bytes, status: int) -> None:
    """PATCH /documents accepts application/*+json (RFC 6839 suffixes)."""
    assert (await post(content_type, method="PATCH"))[0] == status


async def test_415_to_a_patch_lists_the_patch_formats() -> None:
    """RFC 5789 §2.2: Accept-Patch on a 415 to a PATCH."""
    headers = [(b"content-length", b"2"), (b"content-type", b"application/json")]
    answer = await drive(starlette_app(), "PATCH", "/documents", headers=headers, chunks=[b"{}"])
    assert answer.status == 415
    assert answer.headers["accept-patch"] == "application/*+json"
    post = await drive(starlette_app(), "POST", "/documents", headers=headers[:1], chunks=[b"{}"])
    assert "accept-patch" not in post.headers


async def test_structured_suffix_body_is_checked_as_json() -> None:
    assert (await post(b"application/merge-patch+json", b"[", method="PATCH"))[0] == 400


@pytest.mark.parametrize(
    ("content_type", "status"),
    [(b"application/octet-stream", 200), (b"image/png", 200), (b"image/webp", 200)],
)
async def test_type_wildcard_and_non_json_bodies(content_type: bytes, status: int) -> None:
    """POST /uploads: octet-stream and image/*, not parsed as JSON."""
    assert (await post(content_type, b"\x89PNG\xff[[[", path="/uploads"))[0] == status


async def test_several_content_type_headers_are_400() -> None:
    headers = [
        (b"content-length", b"2"),
        (b"content-type", b"application/json"),
        (b"content-type", b"text/plain"),
    ]
    answer = await drive(starlette_app(), headers=headers, chunks=[b"{}"])
    assert answer.status == 400


@pytest.mark.parametrize("encoding", [b"gzip", b"br", b"deflate", b"identity, gzip"])
async def test_encoded_content_is_415_with_accept_encoding(encoding: bytes) -> None:
    """RFC 9110 §15.5.16: the layer does not decompress; it says what it takes."""
    headers = [
        (b"content-length", b"2"),
        (b"content-type", b"application/json"),
        (b"content-encoding", encoding),
    ]
    answer = await drive(starlette_app(), headers=headers, chunks=[b"{}"])
    assert answer.status == 415
    assert answer.headers["accept-encoding"] == "identity"


async def test_a_second_encoding_header_is_not_hidden_by_identity() -> None:
    headers = [
        (b"content-length", b"2"),
        (b"content-type", b"application/json"),
        (b"content-encoding", b"gzip"),
        (b"content-encoding", b"identity"),
    ]
    assert (await drive(starlette_app(), headers=headers, chunks=[b"{}"])).status == 415


async def test_identity_encoding_is_accepted() -> None:
    headers = [
        (b"content-length", b"2"),
        (b"content-type", b"application/json"),
        (b"content-encoding", b"identity"),
    ]
    assert (await drive(starlette_app(), headers=headers, chunks=[b"{}"])).status == 200


async def test_body_of_unknown_length_is_typed_after_reading() -> None:
    """HTTP/2 without Content-Length: an empty body needs no type, a non-empty one does."""
    app = starlette_app()
    assert (await drive(app, "POST", "/documents", chunks=[], http_version="2")).status == 200
    answer = await drive(app, "POST", "/documents", chunks=[b"{}"], http_version="2")
    assert answer.status == 415


async def test_any_type_accepts_a_missing_content_type() -> None:
    calls = Calls()
    app = starlette_app(calls, content_types=["*/*"], routes={})
    headers = [(b"content-length", b"3")]
    assert (await drive(app, headers=headers, chunks=[b"abc"])).status == 200
    headers = [(b"content-length", b"1"), (b"content-type", b"application/json")]
    assert (await drive(app, headers=headers, chunks=[b"["])).status == 400


def test_verdicts_are_memoised_with_a_bound() -> None:
    types = ContentTypes("content_types", ["application/json", "text/*"])
    assert types.verdict(b"application/json") == ALLOWED_JSON
    assert types.verdict(b"text/csv") == ALLOWED
    assert types.verdict(b"image/png") == REFUSED
    for i in range(500):
        types.verdict(f"application/x-{i}".encode())
    assert len(types._memo) <= 64
    assert types.verdict(b"application/x-499") == REFUSED
