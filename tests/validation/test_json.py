"""JSON bodies: well-formed, UTF-8, bounded depth, no NaN; duplicate keys; empty bodies."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field
from pydantic_core import from_json
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from apiguard import Rules, ValidationMiddleware, guard
from apiguard.validation import _json
from apiguard.validation._json import JSONRejected, json_depth_exceeds, parse_json
from tests.validation._apps import ORDER, Calls, drive, json_headers, starlette_app

pytestmark = pytest.mark.anyio


async def post(body: bytes, path: str = "/documents", **options: Any) -> tuple[Any, Calls]:
    calls = Calls()
    app = starlette_app(calls, **options)
    answer = await drive(app, "POST", path, headers=json_headers(len(body)), chunks=[body])
    return answer, calls


def nested(depth: int, kind: str = "[", inner: bytes = b"1") -> bytes:
    """A value (`inner`) inside `depth` arrays or objects."""
    if kind == "[":
        return b"[" * depth + inner + b"]" * depth
    return b'{"a":' * depth + inner + b"}" * depth


async def test_a_million_open_brackets_is_400_fast() -> None:
    """`[` x 1,000,000: a 400 in milliseconds, never a RecursionError or a hang."""
    started = time.perf_counter()
    answer, calls = await post(b"[" * 1_000_000)
    elapsed = time.perf_counter() - started
    assert answer.status == 400
    assert answer.json()["detail"] == "The JSON body nests deeper than 32 levels."
    assert calls.seen == []
    assert elapsed < 1.0


@pytest.mark.parametrize("kind", ["[", "{"])
@pytest.mark.parametrize("inner", [b"1", b'"s"', b"[]", b"{}", b"null"])
async def test_depth_32_is_accepted_and_33_refused(kind: str, inner: bytes) -> None:
    """Documented: no value may sit inside more than 32 arrays and objects."""
    assert (await post(nested(32, kind, inner)))[0].status == 200
    answer, calls = await post(nested(33, kind, inner))
    assert answer.status == 400
    assert calls.seen == []


async def test_empty_containers_are_values_for_depth() -> None:
    """`[]` inside 32 arrays is a value at depth 32, like `1`: accepted."""
    assert (await post(b"[" * 33 + b"]" * 33))[0].status == 200
    assert (await post(b"[" * 34 + b"]" * 34))[0].status == 400


async def test_depth_limit_is_per_route_and_per_layer() -> None:
    assert (await post(nested(5), max_json_depth=4))[0].status == 400
    assert (await post(nested(4), max_json_depth=4))[0].status == 200


async def test_brackets_inside_strings_do_not_count() -> None:
    body = json.dumps(["[" * 500 + "{" * 500]).encode()
    answer, calls = await post(body)
    assert answer.status == 200
    assert calls.seen[0]["body"] == body


async def test_depth_counted_where_it_is_deepest() -> None:
    """A wide document with one deep branch at the end is measured there."""
    wide = [{"id": i, "tags": ["a", "b"]} for i in range(2000)]
    body = json.dumps([*wide, json.loads(nested(31))]).encode()
    assert (await post(body))[0].status == 200
    body = json.dumps([*wide, json.loads(nested(32))]).encode()
    assert (await post(body))[0].status == 400


#: More brackets than the bound (so the wrapped parse is used) and, once
#: wrapped in arrays, valid JSON: each must still be refused.
ESCAPES = [
    b"[" + b"[]," * 40 + b"1],[2]",  # a second element beside the wrapped value
    b"[" + b"[]," * 40 + b"1] , 7",
    b"[" + b"[]," * 40 + b'1],"x"',
    b"[" + b"[]," * 40 + b"1]],[[2]",  # reaching two wrappers out
    b"],[" + b"[]," * 40 + b"1",  # opening before the value
    b"]" + b"[]" * 40 + b"[",
]


@pytest.mark.parametrize("body", ESCAPES)
async def test_bodies_that_escape_the_parsers_wrapping_are_400(
    body: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bodies are wrapped in arrays to bound their depth: none may escape them."""
    monkeypatch.setattr(_json, "WALK_BELOW", 0)  # wrap every body past the bound
    answer, calls = await post(body)
    assert answer.status == 400
    assert calls.seen == []


@pytest.mark.parametrize(
    "body",
    [b"NaN", b"[NaN]", b'{"a": Infinity}', b"[-Infinity]", b"[nan]", b"[1, Infinity]"],
)
async def test_nan_and_infinity_are_400(body: bytes) -> None:
    answer, calls = await post(body)
    assert answer.status == 400
    assert answer.json()["detail"] == "The request body is not well-formed JSON."
    assert calls.seen == []


@pytest.mark.parametrize(
    "body",
    [
        b'["\xff"]',  # not UTF-8 at all
        b'["\xc0\xaf"]',  # overlong encoding of "/"
        b'["\xed\xa0\x80"]',  # an encoded surrogate
        b'["\xf4\x90\x80\x80"]',  # past U+10FFFF
        b'["caf\xc3"]',  # truncated sequence
        b'{"\xe9t\xe9": 1}',  # Latin-1, in a key
    ],
    ids=["ff", "overlong", "surrogate", "beyond-unicode", "truncated", "latin-1-key"],
)
async def test_invalid_utf8_is_400(body: bytes) -> None:
    answer, calls = await post(body)
    assert answer.status == 400
    assert answer.json()["detail"] == "The request body is not valid UTF-8."
    assert calls.seen == []


OUT_OF_RANGE = "The JSON body holds a number too large to represent (over 1.8e308 in magnitude)."


@pytest.mark.parametrize(
    "body",
    [
        b"1e400",
        b"[1e400]",
        b'{"a": -1e400}',
        b"[1E+309]",
        b"[1.8e308]",
        b"[1e0400]",
        b'["x", 1' + b"0" * 400 + b".5]",
        b"[1" + b"0" * 250 + b"e99]",  # two exponent digits, a long integer part
        b'{"a": [{"b": [0.5, 2.5e999]}]}',
    ],
    ids=lambda body: body[:24].decode(),
)
async def test_numbers_out_of_range_are_400_not_infinity(body: bytes) -> None:
    """Review finding 12: they parsed to ±inf, which the layer refuses as a literal."""
    answer, calls = await post(body)
    assert answer.status == 400
    assert answer.json()["detail"] == OUT_OF_RANGE
    assert calls.seen == []


async def test_a_body_model_never_sees_infinity() -> None:
    """The reviewer's case: `amount: float = Field(gt=0)` was given `inf` for 1e400."""

    class Transfer(BaseModel):
        amount: float = Field(gt=0)

    seen: list[Any] = []

    async def transfer(request: Request) -> PlainTextResponse:
        seen.append(request.state.apiguard.values["body"])
        return PlainTextResponse("ok")

    app = guard(
        Starlette(routes=[Route("/t", transfer, methods=["POST"])]),
        Middleware(ValidationMiddleware, routes={"POST /t": Rules(body=Transfer)}),
    )
    transport = httpx.ASGITransport(app, client=("203.0.113.9", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for body in (b'{"amount": 1e400}', b'{"amount": 12.5}'):
            await client.post("/t", content=body, headers={"content-type": "application/json"})
    assert [value.amount for value in seen] == [12.5]


@pytest.mark.parametrize(
    "body",
    [
        b"[1.7976931348623157e308]",
        b"[-1e308]",
        b"[1e-400]",  # underflows to 0.0: finite
        b"[1" + b"0" * 400 + b"]",  # an integer: exact, not a float
        b'["1e400", "file1000e000", "' + b"9" * 300 + b'"]',  # strings
        b"[1" + b"0" * 300 + b"e-200]",
    ],
    ids=lambda body: body[:24].decode(),
)
async def test_finite_numbers_and_lookalike_strings_pass(body: bytes) -> None:
    answer, calls = await post(body)
    assert answer.status == 200
    assert calls.seen[0]["body"] == body


@settings(max_examples=400, deadline=None)
@given(
    st.integers(min_value=1, max_value=420),
    st.sampled_from(["", ".5", ".000"]),
    st.sampled_from(["", "e", "E", "e+", "E-", "e-", "e0"]),
    st.integers(min_value=0, max_value=1200),
    st.sampled_from(["[{}]", '{{"k": [1, {}]}}', "{}"]),
)
def test_out_of_range_is_refused_exactly(
    digits: int, fraction: str, marker: str, exponent: int, frame: str
) -> None:
    """Refused exactly when the parser would have produced an infinity, wherever it sits."""
    number = "9" * digits + fraction + (marker + str(exponent) if marker else "")
    body = frame.format(number).encode()
    infinite = math.isinf(from_json(number.encode())) if "." in number or marker else False
    if infinite:
        with pytest.raises(JSONRejected, match="json-number-out-of-range"):
            parse_json(body, 32)
    else:
        assert parse_json(body, 32) == from_json(body)


async def test_lone_surrogate_escape_is_400() -> None:
    """A lone surrogate escape is well-formed JSON but no Unicode text (RFC 8259 §8.2)."""
    answer, _ = await post(b'["\\ud800"]')
    assert answer.status == 400


async def test_utf8_text_is_accepted() -> None:
    body = '{"note": "café ☕ 𝄞", "\\u00e9": "\\ud834\\udd1e"}'.encode()
    answer, calls = await post(body)
    assert answer.status == 200
    assert calls.seen[0]["body"] == body


async def test_byte_order_mark_is_refused() -> None:
    """RFC 8259 §8.1: senders must not add one; the layer refuses it (400)."""
    answer, calls = await post(b"\xef\xbb\xbf" + json.dumps(ORDER).encode(), "/orders")
    assert answer.status == 400
    assert "byte order mark" in answer.json()["detail"]
    assert calls.seen == []


async def test_duplicate_keys_last_wins_for_the_model_and_the_app() -> None:
    """Documented: the last of duplicate keys wins, as in json.loads and pydantic."""
    body = (
        b'{"customer_email": "mallory@example.com", "lines": [{"sku": "BOOK-1", "quantity": 1}],'
        b' "customer_email": "ada@example.com"}'
    )
    answer, calls = await post(body, "/orders")
    assert answer.status == 201
    assert calls.seen[0]["values"]["body"].customer_email == "ada@example.com"
    assert answer.json()["app_parse"]["customer_email"] == "ada@example.com"


@pytest.mark.parametrize(
    "body",
    [b"{", b"{}}", b"[1,]", b'{"a":1,}', b"'x'", b"[01]", b"{} x", b"\x00", b" ", b"[.5]"],
)
async def test_malformed_json_is_400(body: bytes) -> None:
    answer, calls = await post(body)
    assert answer.status == 400
    assert calls.seen == []


async def test_top_level_scalar_is_json() -> None:
    """RFC 8259 allows any value at the top: without a model, a number passes."""
    assert (await post(b"42"))[0].status == 200


async def test_huge_integer_is_400() -> None:
    """Over 4,300 digits (CPython's int limit) the parser refuses: no quadratic int()."""
    assert (await post(b"[" + b"7" * 5000 + b"]"))[0].status == 400
    assert (await post(b"[" + b"7" * 4000 + b"]"))[0].status == 200


async def test_no_body_where_a_model_requires_one_is_422() -> None:
    """Documented: no body for a body model is a 422 `missing`, as in FastAPI."""
    calls = Calls()
    headers = [(b"content-length", b"0")]
    answer = await drive(starlette_app(calls), "POST", "/orders", headers=headers)
    assert answer.status == 422
    assert answer.json()["errors"] == [
        {"loc": ["body"], "msg": "Field required", "type": "missing"}
    ]
    assert calls.seen == []


@pytest.mark.parametrize(
    "framing",
    [(b"content-length", b"0"), (b"transfer-encoding", b"chunked")],
    ids=["content-length-0", "chunked"],
)
async def test_empty_json_body_where_a_model_requires_one_is_400(
    framing: tuple[bytes, bytes],
) -> None:
    """Declared JSON, no content: not JSON (400), before the model is consulted."""
    headers = [(b"content-type", b"application/json"), framing]
    answer = await drive(starlette_app(), "POST", "/orders", headers=headers, chunks=[])
    assert answer.status == 400
    assert "empty" in answer.json()["detail"]


async def test_whitespace_body_is_malformed_json() -> None:
    """Content that is only whitespace is content, and not JSON: 400."""
    answer, _ = await post(b"   ", "/orders")
    assert answer.status == 400


# --- the depth check itself --------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab', max_size=5),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(alphabet="[{a", max_size=3), children, max_size=3)
    ),
    max_leaves=60,
)


def reference_depth(value: Any) -> int:
    """How many containers the most deeply nested value sits inside."""
    if isinstance(value, list) and value:
        return 1 + max(reference_depth(v) for v in value)
    if isinstance(value, dict) and value:
        return 1 + max(reference_depth(v) for v in value.values())
    return 0


@settings(max_examples=600, deadline=None)
@given(
    json_values,
    st.integers(min_value=1, max_value=8),
    st.sampled_from(["wrap", "walk", "no parser limit"]),
)
def test_depth_check_is_exact(value: Any, limit: int, mode: str) -> None:
    """Refused exactly when a value nests past the limit, brackets in strings aside.

    Every way of checking: the parser's own limit moved to the bound by
    wrapping (large bodies), the walk over the parsed value (bodies with few
    brackets), and the walk that replaces the wrapping should the parser
    count differently.
    """
    depth = reference_depth(value)
    assert json_depth_exceeds(value, limit) == (depth > limit)
    body = json.dumps(value).encode()
    saved = _json.PARSER_LIMIT, _json.WALK_BELOW
    _json.WALK_BELOW = 10**9 if mode == "walk" else 0  # type: ignore[misc]
    _json.PARSER_LIMIT = None if mode == "no parser limit" else saved[0]  # type: ignore[misc]
    try:
        if depth > limit:
            with pytest.raises(JSONRejected, match="json-too-deep"):
                parse_json(body, limit)
        else:
            assert parse_json(body, limit) == value
    finally:
        _json.PARSER_LIMIT, _json.WALK_BELOW = saved  # type: ignore[misc]


def test_the_parser_limit_is_measured_and_consistent() -> None:
    """pydantic-core's limit is what the wrapping relies on (else: the walk)."""
    assert _json.PARSER_LIMIT == 200


def test_depth_walk_stops_at_the_bound() -> None:
    """100 nested arrays against bounds of 3, 99 and 100."""
    deep: list[Any] = []
    for _ in range(100):
        deep = [deep]
    assert json_depth_exceeds(deep, 3)
    assert json_depth_exceeds(deep, 99)
    assert not json_depth_exceeds(deep, 100)


@pytest.mark.parametrize("valid", [True, False])
def test_collector_is_paused_for_container_rich_bodies_and_restored(valid: bool) -> None:
    """With many arrays and objects the parse runs with the cyclic GC off, then on again."""
    import gc

    seen = []
    body = b"[" + b"[1]," * 20_000 + (b"[2]]" if valid else b"[2]")

    def spy(phase: str, info: dict[str, Any]) -> None:
        seen.append(phase)

    assert gc.isenabled()
    gc.callbacks.append(spy)
    try:
        gc.collect()
        seen.clear()
        if valid:
            assert len(parse_json(body, 32)) == 20_001
        else:
            with pytest.raises(JSONRejected):
                parse_json(body, 32)
        assert seen == []  # 20,000 new lists, and no collection
    finally:
        gc.callbacks.remove(spy)
    assert gc.isenabled()


def test_an_app_that_disabled_the_collector_keeps_it_disabled() -> None:
    import gc

    gc.disable()
    try:
        parse_json(b"[" + b"[1]," * 20_000 + b"[2]]", 32)
        assert not gc.isenabled()
    finally:
        gc.enable()
