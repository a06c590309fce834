"""Redis URIs read as redis-py reads them, case by case against its own parser and real servers."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.asyncio.connection import parse_url as parse_url_async
from redis.connection import parse_url

from apiguard.errors import ConfigError
from apiguard.storage import Quota, RedisStore, open_store
from apiguard.storage._resp import Endpoint, RespClient, parse_redis_uri
from tests._servers import RedisServer, redis_server_binary

pytestmark = pytest.mark.anyio


def _as_redis_py(endpoint: Endpoint) -> dict[str, Any]:
    """The fields redis-py's parse_url gives, from our endpoint, redis-py's defaults left out."""
    fields: dict[str, Any] = {}
    if endpoint.path is not None:
        fields["path"] = endpoint.path
    else:
        fields["host"] = endpoint.host
        fields["port"] = endpoint.port
    for name in ("username", "password", "client_name"):
        if getattr(endpoint, name) is not None:
            fields[name] = getattr(endpoint, name)
    if endpoint.db:
        fields["db"] = endpoint.db
    return fields


def _redis_py(uri: str) -> dict[str, Any]:
    """What redis-py's parsers (sync and asyncio, which must agree) read from `uri`."""
    readings = []
    for parse in (parse_url, parse_url_async):
        fields = {k: v for k, v in parse(uri).items() if k not in ("connection_class", "protocol")}
        if "path" not in fields:
            fields = {"host": "localhost", "port": 6379, **fields}
        if fields.get("db") == 0:
            del fields["db"]
        readings.append(fields)
    assert readings[0] == readings[1]
    return readings[0]


@pytest.mark.parametrize(
    "uri",
    [
        pytest.param("redis://cache:6379?db=1&db=2", id="repeated-option-first-wins"),
        pytest.param("redis://cache?client_name=a&client_name=b", id="repeated-name"),
        pytest.param("redis://cache:6379/3?db=1", id="query-db-over-path"),
        pytest.param("redis://cache:6379/1/", id="path-db-slashes"),
        pytest.param("redis://cache?db=", id="empty-option-ignored"),
        pytest.param(
            "redis://alice:pw1@cache?username=bob&password=pw2", id="authority-over-query"
        ),
        pytest.param("redis://:pw1@cache?password=pw2", id="authority-password-over-query"),
        pytest.param("redis://alice:@cache?password=pw2", id="empty-authority-password"),
        pytest.param("redis://cache?username=bob&password=pw2", id="query-credentials"),
        pytest.param("redis://alice@cache", id="user-without-password"),
        pytest.param("redis://:p%40ss%3Aw%2Fo%25rd@cache", id="percent-encoded-password"),
        pytest.param("redis://:p+ss@cache", id="plus-in-authority"),
        pytest.param("redis://cache?password=p%2Bss+x", id="plus-in-query"),
        pytest.param("redis://[::1]:6380/2", id="ipv6"),
        pytest.param("redis://[FE80::1]:6379", id="ipv6-uppercase"),
        pytest.param("redis://[fe80::1%25eth0]:6379", id="ipv6-zone"),
        pytest.param("redis://CACHE", id="host-case"),
        pytest.param("redis://ca%2Dche", id="percent-encoded-host"),
        pytest.param("unix:///run/redis.sock?db=2", id="unix"),
        pytest.param("unix://:pw@/run/redis.sock?db=2&client_name=x", id="unix-credentials"),
        pytest.param("redis://cache?protocol=2", id="protocol-2"),
    ],
)
def test_read_as_redis_py_reads_it(uri: str) -> None:
    """One URI: the same node, user, password and database for both clients."""
    endpoint = parse_redis_uri(uri)
    assert endpoint is not None
    assert _as_redis_py(endpoint) == _redis_py(uri)


def test_an_ipv6_zone_reaches_the_resolver_decoded() -> None:
    endpoint = parse_redis_uri("redis://[fe80::1%25eth0]:6379")
    assert endpoint is not None
    assert endpoint.host == "fe80::1%eth0"  # what getaddrinfo takes; %25 is the URI's escape


@pytest.mark.parametrize(
    ("uri", "match"),
    [
        pytest.param("redis://cache:6379/x", "db 'x'", id="path-db-not-a-number"),
        pytest.param("redis://cache:6379?db=-1", "db '-1'", id="negative-db"),
        pytest.param("redis://cache:0", "port 0", id="port-0"),
        pytest.param("redis://cache?protocol=3", "RESP3 is not served", id="resp3"),
        pytest.param("redis://cache?ssl_cert_reqs=none", "need a rediss://", id="ssl-without-tls"),
    ],
)
def test_stricter_than_redis_py_at_start_up(uri: str, match: str) -> None:
    """redis-py reads these (and fails later, or silently picks db 0); we refuse at start-up."""
    parse_url(uri)  # redis-py accepts it ...
    with pytest.raises(ConfigError, match=match):  # ... apiguard says why, at once
        open_store(uri)


@pytest.mark.parametrize("protocol", ["1", "4", "resp3", ""])
def test_a_protocol_other_than_2_or_3_is_refused(protocol: str) -> None:
    uri = f"redis://cache?protocol={protocol}"
    if protocol:
        with pytest.raises(ConfigError, match="protocol"):
            open_store(uri)
    else:  # an empty option is no option, for both parsers
        assert parse_redis_uri(uri) == Endpoint(host="cache")


def test_resp3_is_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError) as caught:
        open_store("redis://:s3cret@cache:6379/0?protocol=3")
    message = str(caught.value)
    assert "RESP3 is not served by apiguard's Redis client" in message
    assert "protocol=2" in message
    assert "s3cret" not in message


def test_protocol_2_is_served_by_apiguards_client() -> None:
    store = open_store("redis://cache:6379/0?protocol=2")
    assert isinstance(store, RedisStore)
    assert store.endpoint == Endpoint(host="cache")


@pytest.mark.parametrize(
    "uri",
    [
        "redis://alice:s3cret@cache:6379/0",
        "redis://cache:6379?password=s3cret",
        "rediss://:s3cret@cache:6379?ssl_password=s3cret&ssl_cert_reqs=none",
        "unix://:s3cret@/run/redis.sock",
    ],
)
def test_an_endpoints_repr_never_shows_a_password(uri: str) -> None:
    endpoint = parse_redis_uri(uri)
    assert endpoint is not None
    assert endpoint.password == "s3cret"
    assert "s3cret" not in repr(endpoint)
    assert "s3cret" not in str(endpoint)
    assert "s3cret" not in repr(open_store(uri.replace("unix://", "redis+unix://")))


def test_a_password_still_makes_endpoints_differ() -> None:
    """Hidden from the repr, not from comparison: two passwords are two endpoints."""
    assert parse_redis_uri("redis://:a@cache") != parse_redis_uri("redis://:b@cache")


# --- the table of what this client serves -------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("redis://localhost:6379", Endpoint()),
        ("redis://cache:6380/4", Endpoint(host="cache", port=6380, db=4)),
        ("redis://:p%40ss@cache:6379/0", Endpoint(host="cache", password="p@ss")),
        ("redis://alice:pw@cache:6379", Endpoint(host="cache", username="alice", password="pw")),
        ("redis://cache:6379?db=2&password=pw", Endpoint(host="cache", db=2, password="pw")),
        ("redis://cache:6379?client_name=api", Endpoint(host="cache", client_name="api")),
        ("async+redis://[::1]:6379/1", Endpoint(host="::1", db=1)),
        ("valkey://cache:6379", Endpoint(host="cache")),
        ("redis+unix:///run/redis.sock?db=1", Endpoint(path="/run/redis.sock", db=1)),
        ("unix:///run/redis.sock?db=1", Endpoint(path="/run/redis.sock", db=1)),
        ("rediss://cache:6379", Endpoint(host="cache", tls=True)),
        (
            "rediss://cache:6379?ssl_cert_reqs=none",
            Endpoint(host="cache", tls=True, cert_reqs=ssl.CERT_NONE),
        ),
        (
            "rediss://cache:6379?ssl_check_hostname=false",
            Endpoint(host="cache", tls=True, check_hostname=False),
        ),
        ("redis+cluster://a:7000,b:7001", None),
        ("redis+sentinel://a:26379/mymaster", None),
        ("redis://cache:6379?socket_timeout=1", None),  # an option only redis-py knows
    ],
)
def test_uris_this_client_serves_and_those_it_leaves_to_redis_py(
    uri: str, expected: Endpoint | None
) -> None:
    assert parse_redis_uri(uri) == expected


@pytest.mark.parametrize(
    ("uri", "match"),
    [
        ("redis://cache:6379/x", "db 'x'"),
        ("redis://cache:6379?db=-1", "db '-1'"),
        ("rediss://cache:6379?ssl_cert_reqs=maybe", "ssl_cert_reqs 'maybe'"),
        ("rediss://cache:6379?ssl_check_hostname=perhaps", "ssl_check_hostname"),
        ("rediss://cache:6379?ssl_ca_certs=/no/such/file.pem", "ssl_ca_certs"),
        ("redis://cache:6379?ssl_cert_reqs=none", "need a rediss://"),
        ("redis+unix://", "needs a path"),
    ],
)
def test_bad_uri_options_fail_at_start_up(uri: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        open_store(uri)


def test_a_single_node_needs_no_redis_py_but_cluster_does() -> None:
    """redis-py serves only what apiguard's client does not; the store is chosen, not opened."""
    node = open_store("redis://cache:6379/0")
    cluster = open_store("redis+cluster://a:7000,b:7001")
    assert isinstance(node, RedisStore)
    assert node.endpoint is not None
    assert isinstance(cluster, RedisStore)
    assert cluster.endpoint is None


# --- against real servers: both clients end up as the same user, in the same db ------


@pytest.fixture(scope="module")
def acl_redis() -> Iterator[RedisServer]:
    """A redis-server on 127.0.0.1 and ::1, with users alice (password) and bob (nopass)."""
    server = RedisServer(
        redis_server_binary(),
        args=[
            *("--bind", "127.0.0.1", "::1"),
            *("--requirepass", "default-pw"),
            *("--user", "alice", "on", ">alice-pw", "~*", "&*", "+@all"),
            *("--user", "bob", "on", "nopass", "~*", "&*", "+@all"),
        ],
    )
    server.start()
    yield server
    server.kill()


async def _whoami_and_db(uri: str) -> tuple[str, int]:
    endpoint = parse_redis_uri(uri)
    assert endpoint is not None
    client = RespClient(endpoint, timeout=2.0)
    try:
        user = (await client.command("ACL", "WHOAMI")).decode()
        info = (await client.command("CLIENT", "INFO")).decode()
    finally:
        await client.aclose()
    return user, int(info.partition(" db=")[2].split()[0])


def _redis_py_whoami_and_db(uri: str) -> tuple[str, int]:
    client = redis.Redis.from_url(uri, decode_responses=True)
    try:
        info = client.execute_command("CLIENT", "INFO")
        return client.execute_command("ACL", "WHOAMI"), int(info.partition(" db=")[2].split()[0])
    finally:
        client.close()


@pytest.mark.parametrize(
    ("userinfo", "query", "expected"),
    [
        pytest.param("bob@", "", ("bob", 0), id="user-without-password"),
        pytest.param(
            "alice:alice-pw@", "?username=bob&password=x", ("alice", 0), id="authority-wins"
        ),
        pytest.param("", "?username=alice&password=alice-pw", ("alice", 0), id="query-user"),
        pytest.param(":default-pw@", "?db=2&db=3", ("default", 2), id="first-db-wins"),
        pytest.param(":default-pw@", "?protocol=2&db=4", ("default", 4), id="protocol-2"),
    ],
)
@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]"], ids=["ipv4", "ipv6"])
async def test_both_clients_connect_as_the_same_user_to_the_same_db(
    acl_redis: RedisServer, host: str, userinfo: str, query: str, expected: tuple[str, int]
) -> None:
    uri = f"redis://{userinfo}{host}:{acl_redis.port}{query}"
    assert await _whoami_and_db(uri) == expected
    assert _redis_py_whoami_and_db(uri) == expected


async def test_unix_scheme_as_redis_py_writes_it(tmp_path: Path) -> None:
    sock = tmp_path / "redis.sock"
    server = RedisServer(
        redis_server_binary(),
        args=["--unixsocket", str(sock), "--unixsocketperm", "700", "--requirepass", "pw"],
    )
    server.start()
    try:
        uri = f"unix://:pw@{sock}?db=3"
        assert await _whoami_and_db(uri) == ("default", 3)
        assert _redis_py_whoami_and_db(uri) == ("default", 3)
        store = open_store(f"redis+unix://:pw@{sock}?db=3")
        acquire = store.limiter("fixed-window")  # type: ignore[union-attr]
        try:
            assert (await acquire("k", (Quota("q", 5, 60),), 1)).admitted
        finally:
            await store.aclose()  # type: ignore[union-attr]
    finally:
        server.kill()
