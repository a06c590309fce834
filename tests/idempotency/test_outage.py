"""The store fails: redis-server killed or frozen, under each fail mode."""

from __future__ import annotations

import time
from typing import Any

import anyio
import httpx
import pytest
from starlette.middleware import Middleware

from tests._servers import RedisServer
from tests.idempotency._apps import DecisionLog, client, keyed, new_key, orders_app

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("close_stores"), pytest.mark.slow]

#: The store timeout under test; the bounds below are multiples of it.
TIMEOUT = 1.0


async def _timed(http: httpx.AsyncClient, key: str) -> tuple[httpx.Response, float]:
    start = time.perf_counter()
    response = await http.post("/orders", content=b"{}", headers=keyed(key))
    return response, time.perf_counter() - start


def _fail(server: RedisServer, failure: str) -> None:
    server.kill() if failure == "kill" else server.freeze()


def _recover(server: RedisServer, failure: str) -> None:
    server.start() if failure == "kill" else server.thaw()


async def _until_replayed(http: httpx.AsyncClient, key: str) -> httpx.Response:
    """Retry `key` until the store answers again with its stored response (bounded)."""
    for _ in range(200):
        response = await http.post("/orders", content=b"{}", headers=keyed(key))
        if response.headers.get("idempotent-replayed") == "true":
            return response
        await anyio.sleep(0.05)
    raise AssertionError("the store came back but the stored response is not replayed")


@pytest.mark.parametrize("failure", ["kill", "freeze"])
async def test_fail_closed_answers_503_with_retry_after_never_500(
    own_redis: RedisServer, failure: str
) -> None:
    app, orders = orders_app(storage=own_redis.url, store_timeout=TIMEOUT)  # the default mode
    kept = new_key()
    async with client(app) as http:
        assert (await http.post("/orders", content=b"{}", headers=keyed(kept))).status_code == 201
        _fail(own_redis, failure)
        try:
            outage = [await _timed(http, new_key()) for _ in range(8)]
        finally:
            _recover(own_redis, failure)
        if failure == "freeze":  # the server kept its data: the response is still there
            replay = await _until_replayed(http, kept)
            assert replay.json()["run"] == 1
    assert {r.status_code for r, _ in outage} == {503}
    assert orders.runs["orders"] == 1  # nothing ran while keys could not be checked
    assert max(elapsed for _, elapsed in outage) < 2 * TIMEOUT  # none hangs
    refused = outage[-1][0]
    assert refused.headers["content-type"] == "application/problem+json"
    assert int(refused.headers["retry-after"]) >= 1
    assert "redis" not in refused.text.lower()  # no internals in the body


@pytest.mark.parametrize("failure", ["kill", "freeze"])
async def test_fail_open_runs_requests_without_idempotency(
    own_redis: RedisServer, failure: str
) -> None:
    log: list[tuple[str | None, dict[str, Any]]] = []
    app, orders = orders_app(
        Middleware(DecisionLog, log=log),
        storage=own_redis.url,
        store_timeout=TIMEOUT,
        on_store_error="fail-open",
    )
    key = new_key()
    async with client(app) as http:
        _fail(own_redis, failure)
        try:
            outage = [await _timed(http, key) for _ in range(6)]
        finally:
            _recover(own_redis, failure)
    assert {r.status_code for r, _ in outage} == {201}
    assert orders.runs["orders"] == 6  # the documented cost of failing open: every retry ran
    assert max(elapsed for _, elapsed in outage) < 2 * TIMEOUT
    assert {reason for reason, _ in log} == {"store-unavailable"}
    assert log[-1][1]["store.breaker"] == "open"


async def test_a_store_lost_mid_request_still_answers_and_stores_nothing(
    own_redis: RedisServer,
) -> None:
    """The store dies while the app runs: the caller gets the app's response, never a 500."""
    log: list[tuple[str | None, dict[str, Any]]] = []
    app, orders = orders_app(
        Middleware(DecisionLog, log=log), storage=own_redis.url, store_timeout=TIMEOUT
    )
    orders.hold()
    key = new_key()
    async with client(app) as http, anyio.create_task_group() as tasks:
        answers: list[httpx.Response] = []

        async def post() -> None:
            answers.append(await http.post("/orders", content=b"{}", headers=keyed(key)))

        tasks.start_soon(post)
        with anyio.fail_after(10):
            await orders.entered.wait()
        own_redis.kill()
        orders.release()
    assert answers[0].status_code == 201
    assert log == [("not-stored", {"idempotency.not_stored": "store-unavailable"})]
