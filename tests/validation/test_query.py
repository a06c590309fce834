"""Query limits: total length (414), parameter count (400), one parameter's length (414)."""

from __future__ import annotations

import pytest

from apiguard import Rules
from tests.validation._apps import Answer, Calls, drive, starlette_app

pytestmark = pytest.mark.anyio


async def get(query: bytes, path: str = "/orders/1", **options: object) -> tuple[Answer, Calls]:
    calls = Calls()
    answer = await drive(starlette_app(calls, **options), "GET", path, query_string=query)
    return answer, calls


async def test_query_at_the_length_limit_passes_and_one_byte_more_is_414() -> None:
    assert (await get(b"a=" + b"x" * 98, max_query_bytes=100))[0].status == 200
    answer, calls = await get(b"a=" + b"x" * 99, max_query_bytes=100)
    assert answer.status == 414
    assert answer.json()["title"] == "URI Too Long"
    assert calls.seen == []


async def test_default_query_length_limit_is_8_kib() -> None:
    assert (await get(b"a=" + b"x" * 8190))[0].status == 200
    assert (await get(b"a=" + b"x" * 8191))[0].status == 414


async def test_too_many_parameters_is_400() -> None:
    query = b"&".join(b"p%d=1" % i for i in range(101))
    answer, calls = await get(query)
    assert answer.status == 400
    assert answer.json()["detail"] == "The query has more than 100 parameters."
    assert calls.seen == []


async def test_exactly_the_maximum_of_parameters_passes() -> None:
    query = b"&".join(b"p%d=1" % i for i in range(100))
    assert (await get(query))[0].status == 200


async def test_empty_segments_are_not_parameters() -> None:
    """`a=1&&&b=2` has two parameters, for parse_qsl and for the limit."""
    assert (await get(b"a=1" + b"&" * 500 + b"b=2", max_query_params=2))[0].status == 200
    assert (await get(b"a=1&b=2&c", max_query_params=2))[0].status == 400


async def test_one_parameter_too_long_is_414() -> None:
    assert (await get(b"a=1&b=" + b"x" * 62, max_query_param_bytes=64))[0].status == 200
    answer, _ = await get(b"a=1&b=" + b"x" * 63, max_query_param_bytes=64)
    assert answer.status == 414
    assert answer.json()["detail"] == "A query parameter is longer than 64 bytes."


async def test_per_route_query_limits_override_the_layer() -> None:
    routes = {"GET /search": Rules(max_query_params=1, max_query_bytes=20)}
    query = b"q=a&limit=2"
    assert (await get(query, "/search", routes=routes))[0].status == 400
    assert (await get(query, "/orders/1", routes=routes))[0].status == 200


async def test_query_limits_apply_to_requests_that_reach_no_route() -> None:
    answer, _ = await get(b"x" * 9000, "/nowhere")
    assert answer.status == 414


async def test_query_limits_come_before_the_body() -> None:
    calls = Calls()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"2")]
    answer = await drive(
        starlette_app(calls), query_string=b"x" * 9000, headers=headers, chunks=[b"{}"]
    )
    assert answer.status == 414
    assert answer.receive_calls == 0
