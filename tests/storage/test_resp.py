"""apiguard's RESP client against real redis-servers: replies, auth, pipelining, faults, TLS."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import hiredis
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from apiguard import StorageError
from apiguard.storage import Quota, RedisStore, open_store
from apiguard.storage._resp import (
    ProtocolError,
    PyReader,
    ReplyError,
    RespClient,
    RespConnectionError,
    Script,
    encode_command,
    parse_redis_uri,
)
from tests._servers import RedisServer, redis_server_binary

pytestmark = pytest.mark.anyio


def _client(url: str, timeout: float = 1.0, dead_after: float = 2.0) -> RespClient:
    endpoint = parse_redis_uri(url)
    assert endpoint is not None
    return RespClient(endpoint, timeout=timeout, dead_after=dead_after)


@pytest.fixture(params=["hiredis", "python"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test that takes it runs with hiredis' reader and with the pure-Python one."""
    monkeypatch.setenv("APIGUARD_RESP_PARSER", request.param)
    return str(request.param)


@pytest.fixture
async def resp(redis_url: str) -> AsyncIterator[RespClient]:
    client = _client(redis_url)
    yield client
    await client.aclose()


# --- replies ---------------------------------------------------------------------


async def test_every_reply_type(redis_url: str, parser: str) -> None:
    client = _client(redis_url)
    assert (client.reader_factory is PyReader) == (parser == "python")
    try:
        assert await client.command("PING") == b"PONG"  # simple string
        assert await client.command("INCRBY", "n", 41) == 41  # integer
        assert await client.command("INCRBY", "n", -50) == -9  # negative integer
        assert await client.command("SET", "b", b"a\r\nb\x00") == b"OK"
        assert await client.command("GET", "b") == b"a\r\nb\x00"  # bulk, binary-safe
        assert await client.command("SET", "e", b"") == b"OK"
        assert await client.command("GET", "e") == b""  # empty bulk
        assert await client.command("GET", "missing") is None  # null bulk
        assert await client.command("LRANGE", "missing", 0, -1) == []  # empty array
        nested = await client.command(
            "EVAL", "return {1, {2, {'a', false}}, 'x', {}}", 0
        )  # nested arrays; Lua false is a null
        assert nested == [1, [2, [b"a", None]], b"x", []]
        with pytest.raises(ReplyError, match=r"^ERR unknown command"):
            await client.command("NOPE")  # error
        inner = await client.command("EVAL", "return {1, redis.error_reply('boom')}", 0)
        assert inner[0] == 1
        assert isinstance(inner[1], ReplyError)  # an error inside an array is an item
        assert str(inner[1]) == "ERR boom"  # Redis 7 prefixes a bare message
        big = b"x" * 200_000  # read over many socket reads
        assert await client.command("SET", "big", big) == b"OK"
        assert await client.command("GET", "big") == big
    finally:
        await client.aclose()


def _resp(value: object) -> bytes:
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, bytes):
        return b"$%d\r\n%b\r\n" % (len(value), value)
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, ReplyError):
        return b"-%b\r\n" % str(value).encode()
    assert isinstance(value, list)
    return b"*%d\r\n" % len(value) + b"".join(_resp(v) for v in value)


_values = st.recursive(
    st.integers(-(2**63), 2**63 - 1) | st.binary(max_size=40) | st.none(),
    lambda children: st.lists(children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(replies=st.lists(_values, min_size=1, max_size=5), cut=st.randoms())
def test_python_reader_reads_what_hiredis_reads(replies: list[object], cut: random.Random) -> None:
    """Fed the same bytes in random pieces, the pure-Python reader agrees with hiredis."""
    data = b"".join(_resp(r) for r in replies)
    ours, theirs = PyReader(), hiredis.Reader(replyError=ReplyError)
    got: list[object] = []
    expected: list[object] = []
    position = 0
    while position < len(data):
        step = cut.randint(1, 9)
        chunk = data[position : position + step]
        position += step
        ours.feed(chunk)
        theirs.feed(chunk)
        while (reply := ours.gets()) is not False:
            got.append(reply)
        while (reply := theirs.gets()) is not False:
            expected.append(reply)
    assert got == expected == replies


def test_python_reader_refuses_what_is_not_resp() -> None:
    reader = PyReader()
    reader.feed(b"?what\r\n")
    with pytest.raises(ProtocolError):
        reader.gets()
    reader = PyReader()
    reader.feed(b":12x\r\n")
    with pytest.raises(ProtocolError):
        reader.gets()


async def test_a_server_that_breaks_the_protocol_closes_the_connection(parser: str) -> None:
    """Bytes that are not RESP fail the caller and drop the connection; no reply is guessed."""

    async def liar(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        await reader.read()  # until the client hangs up
        writer.close()

    server = await asyncio.start_server(liar, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = _client(f"redis://127.0.0.1:{port}")
    try:
        with pytest.raises(RespConnectionError):
            await client.execute(b"PING\r\n")
        assert client._connection is None
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()


# --- pipelining ------------------------------------------------------------------


async def test_a_thousand_concurrent_commands_share_one_connection(
    resp: RespClient, redis_url: str
) -> None:
    """Every reply reaches its own caller, over one connection, without a pool."""
    values = [f"value-{i}-{random.random()}" for i in range(1000)]
    replies = await asyncio.gather(*(resp.command("ECHO", v) for v in values))
    assert replies == [v.encode() for v in values]
    counts = await asyncio.gather(*(resp.command("INCRBY", f"c{i % 7}", i) for i in range(1000)))
    for i, count in enumerate(counts):
        assert count >= i  # each caller got an INCRBY reply of its own key ...
    assert await resp.command("MGET", *[f"c{k}" for k in range(7)]) == [
        b"%d" % sum(range(k, 1000, 7)) for k in range(7)
    ]  # ... and every increment landed once
    clients = redis.Redis.from_url(redis_url).client_list()
    assert len(clients) == 2  # ours and the one asking


async def test_concurrent_first_calls_connect_once(redis_url: str) -> None:
    client = _client(redis_url + "?client_name=apiguard-test")
    try:
        await asyncio.gather(*(client.command("PING") for _ in range(50)))
    finally:
        names = [c["name"] for c in redis.Redis.from_url(redis_url).client_list()]
        await client.aclose()
    assert names.count("apiguard-test") == 1


async def test_a_cancelled_caller_does_not_shift_the_replies(own_redis: RedisServer) -> None:
    """The reply of a cancelled waiter is read and dropped; the next caller gets its own."""
    client = _client(own_redis.url)
    try:
        assert await client.command("PING") == b"PONG"
        own_redis.freeze()
        try:
            waiting = asyncio.ensure_future(client.command("ECHO", "cancelled"))
            await asyncio.sleep(0.05)
            waiting.cancel()
            late = asyncio.ensure_future(client.command("ECHO", "late"))
            await asyncio.sleep(0.05)
        finally:
            own_redis.thaw()
        assert await late == b"late"
        assert waiting.cancelled()
        assert await client.command("ECHO", "next") == b"next"
    finally:
        await client.aclose()


# --- scripts ---------------------------------------------------------------------


async def test_evalsha_loads_the_script_on_noscript(resp: RespClient, redis_url: str) -> None:
    script = Script("return {KEYS[1], ARGV[1]}")
    tail = encode_command("k", "v")[len(b"*2\r\n") :]
    sync = redis.Redis.from_url(redis_url)
    sync.config_resetstat()
    assert await resp.evalsha(script, 1, tail, 2) == [b"k", b"v"]  # NOSCRIPT, then EVAL
    assert await resp.evalsha(script, 1, tail, 2) == [b"k", b"v"]  # cached now
    sync.script_flush()
    assert await resp.evalsha(script, 1, tail, 2) == [b"k", b"v"]  # flushed: loaded again
    stats = sync.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] == 3
    assert stats["cmdstat_eval"]["calls"] == 2
    assert script.sha == sync.script_load(script.text)  # the SHA1 is the server's


async def test_a_script_error_is_raised_not_retried(resp: RespClient) -> None:
    script = Script("return redis.call('INCR', KEYS[1], 'too', 'many')")
    tail = encode_command("k")[len(b"*1\r\n") :]
    with pytest.raises(ReplyError, match=r"(?i)wrong number of arg"):
        await resp.evalsha(script, 1, tail, 1)


# --- auth and database -----------------------------------------------------------


@pytest.fixture
def auth_redis() -> Iterator[RedisServer]:
    """A redis-server with a password for the default user and an ACL user alice."""
    server = RedisServer(
        redis_server_binary(),
        args=["--requirepass", "s3cret", "--user", "alice", "on", ">alice-pw", "~*", "&*", "+@all"],
    )
    server.start()
    yield server
    server.kill()


@pytest.mark.parametrize(
    "userinfo", ["default:s3cret", ":s3cret", "alice:alice-pw"], ids=["default", "password", "acl"]
)
@pytest.mark.usefixtures("close_stores")
async def test_auth_with_password_or_acl_user(auth_redis: RedisServer, userinfo: str) -> None:
    store = open_store(f"redis://{userinfo}@127.0.0.1:{auth_redis.port}/0")
    assert isinstance(store, RedisStore)
    assert store.endpoint is not None
    acquire = store.limiter("fixed-window")
    assert (await acquire("k", (Quota("q", 5, 60),), 1)).used == (1,)
    user = userinfo.partition(":")[0] or "default"
    assert await store.client().command("ACL", "WHOAMI") == user.encode()


@pytest.mark.parametrize(
    "userinfo",
    ["", ":wrong", "alice:wrong", "nobody:s3cret"],
    ids=["none", "wrong-password", "wrong-acl-password", "unknown-user"],
)
@pytest.mark.usefixtures("close_stores")
async def test_bad_credentials_are_a_storage_error_at_once(
    auth_redis: RedisServer, userinfo: str
) -> None:
    store = open_store(f"redis://{userinfo}@127.0.0.1:{auth_redis.port}/0", timeout=2.0)
    acquire = store.limiter("fixed-window")  # type: ignore[union-attr]
    start = time.perf_counter()
    with pytest.raises(StorageError, match="ReplyError") as caught:
        await acquire("k", (Quota("q", 5, 60),), 1)
    assert time.perf_counter() - start < 1.0  # refused, not timed out
    assert "s3cret" not in str(caught.value)
    reason = str(caught.value.__cause__)
    assert reason.startswith("NOAUTH" if not userinfo else "WRONGPASS"), reason


@pytest.mark.usefixtures("close_stores")
async def test_the_database_in_the_uri_is_selected(redis_url: str) -> None:
    acquire = open_store(f"{redis_url}/3").limiter("sliding-window-counter")  # type: ignore[union-attr]
    await acquire("k", (Quota("q", 5, 60),), 1)
    assert redis.Redis.from_url(f"{redis_url}/3").dbsize() == 1
    assert redis.Redis.from_url(f"{redis_url}/0").dbsize() == 0


@pytest.mark.usefixtures("close_stores")
async def test_unix_socket(tmp_path: Path) -> None:
    sock = tmp_path / "redis.sock"
    server = RedisServer(
        redis_server_binary(), args=["--unixsocket", str(sock), "--unixsocketperm", "700"]
    )
    server.start()
    try:
        store = open_store(f"redis+unix://{sock}?db=2")
        assert isinstance(store, RedisStore)
        assert store.endpoint is not None
        assert store.endpoint.path == str(sock)
        acquire = store.limiter("fixed-window")
        assert (await acquire("k", (Quota("q", 5, 60),), 1)).admitted
        assert redis.Redis(unix_socket_path=str(sock), db=2).dbsize() == 1
    finally:
        server.kill()


# --- faults ----------------------------------------------------------------------


async def test_killed_server_fails_pending_callers_at_once_then_reconnects(
    own_redis: RedisServer,
) -> None:
    client = _client(own_redis.url, timeout=5.0)
    try:
        assert await client.command("PING") == b"PONG"
        own_redis.freeze()  # so that commands are surely pending when it dies
        pending = [asyncio.ensure_future(client.command("ECHO", str(i))) for i in range(100)]
        await asyncio.sleep(0.05)
        start = time.perf_counter()
        assert own_redis.proc is not None
        own_redis.proc.kill()  # SIGKILL while stopped: it never answers them
        own_redis.proc.wait(timeout=10)
        results = await asyncio.gather(*pending, return_exceptions=True)
        assert time.perf_counter() - start < 1.0  # the 5 s timeout was not waited for
        assert all(isinstance(r, RespConnectionError) for r in results), results[:3]
        with pytest.raises(RespConnectionError):  # nobody listens: refused
            await client.command("PING")
        own_redis.start()
        assert await client.command("ECHO", "back") == b"back"
    finally:
        await client.aclose()


async def test_frozen_server_times_out_and_no_reply_goes_astray(own_redis: RedisServer) -> None:
    """SIGSTOP: calls time out; after SIGCONT every new caller gets its own reply."""
    client = _client(own_redis.url, timeout=0.2)
    try:
        assert await client.command("PING") == b"PONG"
        own_redis.freeze()
        try:
            start = time.perf_counter()
            stale = await asyncio.gather(
                *(client.command("ECHO", f"stale-{i}") for i in range(20)),
                return_exceptions=True,
            )
            waited = time.perf_counter() - start
        finally:
            own_redis.thaw()
        assert all(isinstance(r, TimeoutError) for r in stale)
        assert 0.15 < waited < 0.5
        fresh = [f"fresh-{i}" for i in range(200)]
        replies = await asyncio.gather(*(client.command("ECHO", v) for v in fresh))
        assert replies == [v.encode() for v in fresh]
        connection = client._connection
        assert connection is not None
        assert not connection.waiters  # the stale replies were read and dropped
    finally:
        await client.aclose()


async def test_a_connection_owing_replies_too_long_is_replaced(own_redis: RedisServer) -> None:
    client = _client(own_redis.url, timeout=0.1, dead_after=0.3)
    try:
        assert await client.command("PING") == b"PONG"
        first = client._connection
        own_redis.freeze()
        try:
            with pytest.raises(TimeoutError):
                await client.command("ECHO", "stale")
            await anyio.sleep(0.5)  # past the deadline + dead_after
            assert first is not None
            assert first.lost  # given up: a black-holed peer would never answer
        finally:
            own_redis.thaw()
        assert await client.command("ECHO", "new") == b"new"
        assert client._connection is not first
    finally:
        await client.aclose()


async def test_connecting_to_a_frozen_server_times_out(own_redis: RedisServer) -> None:
    """The kernel accepts the connection; the handshake (SELECT) never answers."""
    client = _client(f"{own_redis.url}/1", timeout=0.2)
    own_redis.freeze()
    try:
        start = time.perf_counter()
        with pytest.raises(TimeoutError):
            await client.command("PING")
        assert time.perf_counter() - start < 0.5
    finally:
        own_redis.thaw()
        await client.aclose()


async def test_aclose_fails_pending_callers_and_the_next_call_reconnects(
    own_redis: RedisServer,
) -> None:
    client = _client(own_redis.url, timeout=5.0)
    try:
        assert await client.command("PING") == b"PONG"
        own_redis.freeze()
        try:
            pending = asyncio.ensure_future(client.command("ECHO", "x"))
            await asyncio.sleep(0.05)
            await client.aclose()
            with pytest.raises(RespConnectionError):
                await pending
        finally:
            own_redis.thaw()
        assert await client.command("ECHO", "again") == b"again"
    finally:
        await client.aclose()
