"""No call to apiguard's RESP client outlives its deadline, whatever the peer does.

Each call runs under an outer bound of 10x the store timeout: the tests
assert that every call ended, and how (the inner error), never how long it
took.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import pytest

from apiguard import StorageError
from apiguard.storage import Quota, open_store
from apiguard.storage._resp import (
    ReplyError,
    RespClient,
    RespConnectionError,
    Script,
    encode_command,
    parse_redis_uri,
)
from tests._servers import RedisServer
from tests.storage._peers import (
    HUNG,
    close_at_once,
    full_redis,
    never_answer,
    noscript_then_silent,
    outcome,
    tcp_server,
)

pytestmark = pytest.mark.anyio

TIMEOUT = 0.25
BOUND = 10 * TIMEOUT
CALLERS = 20


def _client(url: str, timeout: float = TIMEOUT) -> RespClient:
    endpoint = parse_redis_uri(url)
    assert endpoint is not None
    return RespClient(endpoint, timeout=timeout)


@pytest.fixture(scope="module")
def full() -> Iterator[RedisServer]:
    with full_redis() as server:
        yield server


@pytest.fixture
async def closing() -> AsyncIterator[str]:
    async with tcp_server(close_at_once) as port:
        yield f"redis://127.0.0.1:{port}"


@pytest.fixture
async def silent() -> AsyncIterator[str]:
    async with tcp_server(never_answer) as port:
        yield f"redis://127.0.0.1:{port}"


def _kinds(outcomes: list[object]) -> Counter[str]:
    return Counter(o if o == HUNG else type(o).__name__ for o in outcomes)


async def _round(client: RespClient) -> list[object]:
    return await asyncio.gather(*(outcome(client.command("PING"), BOUND) for _ in range(CALLERS)))


# Handshake: none (the connection is usable at once), or SELECT (one round trip first).
HANDSHAKES = [pytest.param("", id="no-handshake"), pytest.param("/1", id="select")]


@pytest.mark.parametrize("path", HANDSHAKES)
async def test_redis_at_maxclients_fails_every_caller_never_hangs(
    full: RedisServer, path: str
) -> None:
    """Accepted, told the server is full, closed: each caller gets that error, in time."""
    client = _client(full.url + path)
    try:
        for _ in range(3):  # each round connects again
            outcomes = await _round(client)
            kinds = _kinds(outcomes)
            assert kinds.keys() <= {"ReplyError", "RespConnectionError"}, kinds
        said = {str(o) for o in outcomes if isinstance(o, ReplyError | RespConnectionError)}
        assert any("max number of clients reached" in text for text in said), said
    finally:
        await client.aclose()


@pytest.mark.parametrize("path", HANDSHAKES)
async def test_a_peer_that_closes_at_once_fails_every_caller_never_hangs(
    closing: str, path: str
) -> None:
    client = _client(closing + path)
    try:
        for _ in range(3):
            kinds = _kinds(await _round(client))
            assert kinds == {"RespConnectionError": CALLERS}, kinds
    finally:
        await client.aclose()


@pytest.mark.parametrize("path", HANDSHAKES)
async def test_a_peer_that_never_answers_times_every_caller_out(silent: str, path: str) -> None:
    client = _client(silent + path)
    try:
        for _ in range(2):
            kinds = _kinds(await _round(client))
            assert kinds == {"TimeoutError": CALLERS}, kinds
    finally:
        await client.aclose()


async def test_a_send_after_the_connection_was_lost_fails_at_once(closing: str) -> None:
    """A caller holding a connection that died under it is failed, never left waiting."""
    client = _client(closing)
    try:
        assert isinstance(await outcome(client.command("PING"), BOUND), RespConnectionError)
        connection = client._connection
        assert connection is None
        lost = await client._open()  # connected, then closed by the peer
        await asyncio.wait_for(lost.closed, BOUND)
        assert lost.lost
        future = lost.send(encode_command("PING"), client.loop.time() + TIMEOUT)
        assert isinstance(await outcome(future, BOUND), RespConnectionError)
        lost.send_unread(encode_command("PING"), client.loop.time() + TIMEOUT)
        assert not lost.waiters
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("strategy", "quotas"),
    [
        pytest.param("fixed-window", (Quota("a", 5, 60),), id="fixed-one-quota"),
        pytest.param("fixed-window", (Quota("a", 5, 60), Quota("b", 50, 3600)), id="fixed-two"),
        pytest.param("moving-window", (Quota("a", 5, 60),), id="moving"),
        pytest.param("sliding-window-counter", (Quota("a", 5, 60),), id="sliding"),
    ],
)
@pytest.mark.parametrize("peer", ["full", "closing", "silent"])
@pytest.mark.usefixtures("close_stores")
async def test_every_acquire_path_ends_in_a_storage_error(
    full: RedisServer, peer: str, strategy: str, quotas: tuple[Quota, ...]
) -> None:
    """The store's hot path (submit, EVALSHA) fails each concurrent request, never hangs it."""
    handlers = {"closing": close_at_once, "silent": never_answer}
    async with contextlib.AsyncExitStack() as stack:
        if peer == "full":
            url = full.url
        else:
            url = f"redis://127.0.0.1:{await stack.enter_async_context(tcp_server(handlers[peer]))}"
        acquire = open_store(url, timeout=TIMEOUT).limiter(strategy)  # type: ignore[union-attr, arg-type]
        outcomes = await asyncio.gather(
            *(outcome(acquire(f"k{i}", quotas, 1), BOUND) for i in range(CALLERS))
        )
    assert all(isinstance(o, StorageError) for o in outcomes), _kinds(outcomes)


@pytest.mark.parametrize("operation", ["claim", "get", "put"])
@pytest.mark.parametrize("peer", ["full", "closing", "silent"])
@pytest.mark.usefixtures("close_stores")
async def test_every_key_value_call_ends_in_a_storage_error(
    full: RedisServer, peer: str, operation: str
) -> None:
    """The key-value part (EVALSHA scripts, plain commands) fails each caller, never hangs one."""
    handlers = {"closing": close_at_once, "silent": never_answer}
    async with contextlib.AsyncExitStack() as stack:
        if peer == "full":
            url = full.url
        else:
            url = f"redis://127.0.0.1:{await stack.enter_async_context(tcp_server(handlers[peer]))}"
        kv = open_store(url, timeout=TIMEOUT).kv
        assert kv is not None
        calls = {
            "claim": lambda i: kv.claim(f"k{i}", 10.0),
            "get": lambda i: kv.get(f"k{i}"),
            "put": lambda i: kv.put(f"k{i}", b"v", 10.0),
        }
        outcomes = await asyncio.gather(
            *(outcome(calls[operation](i), BOUND) for i in range(CALLERS))
        )
    assert all(isinstance(o, StorageError) for o in outcomes), _kinds(outcomes)


async def test_aclose_fails_callers_waiting_for_the_connection(silent: str) -> None:
    """Callers waiting on a handshake get a connection error from aclose, not a cancellation."""
    client = _client(silent + "/1", timeout=5.0)
    callers = [asyncio.ensure_future(outcome(client.command("PING"), 50.0)) for _ in range(5)]
    await asyncio.sleep(0.1)  # connected; SELECT is never answered
    await client.aclose()
    outcomes = await asyncio.gather(*callers)
    assert _kinds(outcomes) == {"RespConnectionError": 5}


async def test_a_noscript_retry_fails_at_its_own_deadline() -> None:
    """EVAL after NOSCRIPT queues behind later callers: it still fails by its own deadline."""
    script = Script("return 1")
    async with tcp_server(noscript_then_silent) as port:
        client = _client(f"redis://127.0.0.1:{port}", timeout=1.0)
        try:
            first = asyncio.ensure_future(outcome(client.evalsha(script, 0, b"", 0), 10.0))
            await asyncio.sleep(0.5)
            # Sent half a timeout later: its deadline is half a timeout after the first's.
            later = asyncio.ensure_future(outcome(client.command("PING"), 10.0))
            assert isinstance(await first, TimeoutError)
            assert not later.done()  # the first failed by its deadline, not by the later one's
            await client.aclose()
            assert isinstance(await later, RespConnectionError)
        finally:
            await client.aclose()
