"""The store fails: redis-server killed and restarted, frozen (SIGSTOP) and thawed."""

from __future__ import annotations

import time
from typing import Any

import anyio
import httpx
import pytest

from tests._servers import RedisServer
from tests.ratelimit._helpers import client, limited_app

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("close_stores"), pytest.mark.slow]

#: The store timeout under test. Long enough that a first call (a connection
#: to a local server) never reaches it on a loaded machine; the bounds below
#: are fractions and multiples of it, so that no scheduling delay can break them.
TIMEOUT = 1.0


async def _timed(http: httpx.AsyncClient) -> tuple[httpx.Response, float]:
    start = time.perf_counter()
    response = await http.get("/orders")
    return response, time.perf_counter() - start


async def _until_limiting_resumes(http: httpx.AsyncClient, limit: int) -> list[int]:
    """Requests until one is refused again (the store is back); bounded."""
    statuses = []
    for _ in range(200):
        response = await http.get("/orders")
        statuses.append(response.status_code)
        if response.status_code == 429:
            return statuses
        await anyio.sleep(0.05)
    raise AssertionError(f"limiting did not resume: {statuses[-20:]}")


def _decision(response: httpx.Response) -> dict[str, Any]:
    decision: dict[str, Any] = response.json()["decisions"][0]
    return decision


async def test_killed_store_fails_open_then_limiting_resumes(own_redis: RedisServer) -> None:
    app = limited_app(limit="3/hour", storage=own_redis.url, store_timeout=TIMEOUT)
    async with client(app) as http:
        assert [(await http.get("/orders")).status_code for _ in range(4)] == [200] * 3 + [429]
        own_redis.kill()
        outage = [await _timed(http) for _ in range(20)]
        assert {r.status_code for r, _ in outage} == {200}  # every request served
        assert max(elapsed for _, elapsed in outage) < 2 * TIMEOUT  # none hangs
        first, last = _decision(outage[0][0]), _decision(outage[-1][0])
        assert (first["reason"], first["attributes"]["store.failures"]) == ("store-unavailable", 1)
        assert last["attributes"]["store.breaker"] == "open"
        own_redis.start()  # a fresh server: the counts are gone, the limit is not
        statuses = await _until_limiting_resumes(http, 3)
    assert statuses[-4:] == [200, 200, 200, 429]


async def test_frozen_store_fails_open_without_making_requests_wait(
    own_redis: RedisServer,
) -> None:
    app = limited_app(limit="3/hour", storage=own_redis.url, store_timeout=TIMEOUT)
    async with client(app) as http:
        assert (await http.get("/orders")).status_code == 200
        own_redis.freeze()
        try:
            outage = [await _timed(http) for _ in range(30)]
        finally:
            own_redis.thaw()
        statuses = await _until_limiting_resumes(http, 3)
    assert {r.status_code for r, _ in outage} == {200}
    waits = [elapsed for _, elapsed in outage]
    assert max(waits) < 2 * TIMEOUT  # no request waits much beyond the store timeout
    # The first three each waited for the frozen store and failed (not a time
    # bound from below: a busy machine's clocks make that flaky) ...
    first = [_decision(r)["attributes"] for r, _ in outage[:3]]
    assert [a["store.failures"] for a in first] == [1, 2, 3]
    assert all(a["store.breaker"] != "open" for a in first[:2])
    assert max(waits[3:10]) < TIMEOUT / 2  # ... then the breaker opened: no waiting
    assert [
        d["attributes"]["store.breaker"] for d in map(_decision, (r for r, _ in outage[3:6]))
    ] == ["open"] * 3
    assert statuses[-1] == 429  # two counted before the freeze, then 1 more, then refused


@pytest.mark.parametrize("failure", ["kill", "freeze"])
async def test_fail_closed_answers_503_never_500(own_redis: RedisServer, failure: str) -> None:
    app = limited_app(
        limit="100/hour", storage=own_redis.url, store_timeout=TIMEOUT, on_store_error="fail-closed"
    )
    async with client(app) as http:
        assert (await http.get("/orders")).status_code == 200
        own_redis.kill() if failure == "kill" else own_redis.freeze()
        try:
            outage = [await _timed(http) for _ in range(10)]
        finally:
            own_redis.thaw() if failure == "freeze" else own_redis.start()
        for _ in range(100):  # recovered without a restart of the app
            if (await http.get("/orders")).status_code == 200:
                break
            await anyio.sleep(0.05)
        else:
            raise AssertionError("the store came back but requests are still refused")
    assert {r.status_code for r, _ in outage} == {503}
    assert max(elapsed for _, elapsed in outage) < 2 * TIMEOUT
    refused = outage[-1][0]
    assert refused.headers["content-type"] == "application/problem+json"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["status"] == 503
    assert "redis" not in refused.text.lower()  # no internals in the body


async def test_redis_connections_close_at_lifespan_shutdown(redis_url: str) -> None:
    """The layer closes its store's connections when the app shuts down."""
    import redis as sync_redis

    app = limited_app(limit="5/hour", storage=redis_url, store_timeout=5.0)
    admin = sync_redis.Redis.from_url(redis_url)

    def clients() -> int:
        return len(admin.client_list()) - 1  # not counting this one

    lifespan = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    answers: list[str] = []
    served = anyio.Event()
    counted: list[int] = []

    async def receive() -> dict[str, Any]:
        message = lifespan.pop(0)
        if message["type"] == "lifespan.shutdown":
            await served.wait()
        return message

    async def send(message: dict[str, Any]) -> None:
        answers.append(message["type"])

    async def serve_then_stop() -> None:
        async with client(app) as http:
            assert (await http.get("/orders")).status_code == 200
        counted.append(clients())
        served.set()

    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(
                app, {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send
            )
            tasks.start_soon(serve_then_stop)
        assert answers == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
        assert counted[0] >= 1  # the request opened a connection
        assert clients() == 0  # ... and shutdown closed it
    finally:
        admin.close()
