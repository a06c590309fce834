"""Redis URI options checked at start-up: by `open_store` (no I/O), then by `store.open()`.

What `open_store` can check from the URI alone fails there with a
`ConfigError` naming the option and the value; what needs the server is
checked by `store.open()` at lifespan start-up and logged with the reason
(a Redis that is down at start-up is the fail mode's business, not a crash).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from apiguard import ConfigError, StorageError
from apiguard.storage import RedisStore, open_store
from apiguard.storage._redis_options import _known
from tests._servers import RedisServer, free_port, redis_server_binary
from tests.storage._peers import tcp_server

pytestmark = pytest.mark.anyio

SENTINEL = "redis+sentinel://s1:26379,s2:26379"
CLUSTER = "redis+cluster://a:7000,b:7000"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        # A typo: the closest option redis-py takes, on every form.
        ("redis://cache?client_nam=x", "'client_nam' .*did you mean 'client_name'"),
        (f"{CLUSTER}?client_nam=x", "'client_nam' .*Cluster.*did you mean 'client_name'"),
        (f"{SENTINEL}/mymaster?client_nam=x", "'client_nam' .*Sentinel.* 'client_name'"),
        ("redis://cache?socket_timout=1", "did you mean 'socket_timeout'"),
        ("redis://cache?conect_timeout=1", "did you mean 'connect_timeout'"),
        # Values redis-py would fail on at the first command, or misread.
        ("redis://cache?socket_timeout=x", "socket_timeout 'x' is not a number of seconds"),
        ("redis://cache?socket_timeout=0", "socket_timeout '0' is not a positive"),
        (f"{CLUSTER}?socket_connect_timeout=-1", "socket_connect_timeout '-1'"),
        ("redis://cache?connect_timeout=soon", "connect_timeout 'soon'"),
        ("redis://cache?connect_timeout=inf", "connect_timeout 'inf'"),
        ("redis://cache?max_connections=0", "max_connections '0' is less than 1"),
        (f"{SENTINEL}/mymaster?max_connections=many", "max_connections 'many'"),
        ("redis://cache?health_check_interval=often", "health_check_interval 'often'"),
        # Options that would break the store.
        ("redis://cache?decode_responses=true", "replies as bytes"),
        (f"{CLUSTER}?read_from_replicas=yes", "read from the primaries"),
        # Databases and paths.
        (f"{CLUSTER}/1", "database 1 on a Redis Cluster"),
        (f"{CLUSTER}?db=3", "database 3 on a Redis Cluster"),
        (f"{CLUSTER}/a/b", "not a database"),
        (SENTINEL, "names no sentinel service"),
        (f"{SENTINEL}/mymaster/x", "database 'x' is not a database number"),
        (f"{SENTINEL}/mymaster/0/extra", "is not /service or /service/db"),
        ("redis://cache/x?socket_timeout=1", "path '/x' is not a database number"),
        ("redis://cache:6379?ssl_certfile=/tmp/x.pem&socket_timeout=1", "need a rediss://"),
        ("redis://cache:6379?ssl=true", "TLS options need a rediss://"),
        ("redis://cache?socket_timeout=1", "give each host its port"),
    ],
)
def test_what_the_uri_says_is_checked_at_start_up(uri: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_store(uri)


@pytest.mark.parametrize(
    "uri",
    [
        "redis://:hunter2@cache?client_nam=x",
        "redis://cache?password=hunter2&client_nam=x",
        "redis+cluster://u:hunter2@a:7000?socket_timeout=x",
        "redis+sentinel://:hunter2@s1:26379/mymaster/x",
    ],
)
def test_a_refused_uri_never_shows_its_password(uri: str) -> None:
    with pytest.raises(ConfigError) as raised:
        open_store(uri)
    assert "hunter2" not in str(raised.value)
    assert "***" in str(raised.value)


def test_mymaster_slash_0_is_the_service_and_its_database() -> None:
    """`limits` read `/mymaster/0` as a service named `mymaster0`."""
    store = open_store(f"{SENTINEL}/mymaster/2")
    assert isinstance(store, RedisStore)
    assert (store.options["service_name"], store.options["db"]) == ("mymaster", 2)
    assert "/mymaster" not in store.uri  # limits would read the path as the name again
    assert open_store(f"{SENTINEL}/mymaster?db=1").options["db"] == 1  # type: ignore[attr-defined]


def test_cluster_and_sentinel_options_are_passed_on_typed() -> None:
    """`limits` drops a cluster or sentinel URI's query: apiguard reads it and passes it on."""
    cluster = open_store(f"{CLUSTER}/0?socket_keepalive=true&client_name=api&max_connections=7")
    sentinel = open_store(f"{SENTINEL}/mymaster?socket_timeout=2.5&connect_timeout=4")
    assert isinstance(cluster, RedisStore)
    assert isinstance(sentinel, RedisStore)
    options: dict[str, Any] = cluster.options
    assert (options["socket_keepalive"], options["client_name"]) == (True, "api")
    assert (options["max_connections"], cluster.max_connections) == (7, 7)
    assert sentinel.options["socket_timeout"] == 2.5
    assert sentinel.options["sentinel_kwargs"]["socket_timeout"] == 2.5
    assert sentinel.connect_timeout == 4.0


def test_every_option_redis_py_reads_from_a_url_is_accepted() -> None:
    """The known options come from the installed redis-py: none of its own is refused."""
    from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS

    known = _known("redis", "single")
    refused = {"timeout"}  # the store timeout bounds the wait for a connection
    ssl_only = {name for name in URL_QUERY_ARGUMENT_PARSERS if name.startswith("ssl_")}
    assert set(URL_QUERY_ARGUMENT_PARSERS) - refused - ssl_only <= set(known)
    assert ssl_only <= set(_known("redis", "tls"))


async def test_open_store_makes_no_connection() -> None:
    """Checked from the URI alone: nothing is reached until start-up."""
    accepted: list[object] = []

    async def record(reader: Any, writer: Any) -> None:
        accepted.append(writer)

    async with tcp_server(record) as port:
        for uri in (
            f"redis://127.0.0.1:{port}",
            f"redis://127.0.0.1:{port}?socket_timeout=1",
            f"redis+cluster://127.0.0.1:{port}",
            f"redis+sentinel://127.0.0.1:{port}/mymaster",
        ):
            open_store(uri)
    assert accepted == []


# --- what needs the server: store.open() at start-up logs it --------------------------


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(record.getMessage() for record in caplog.records)


async def test_a_sentinel_that_knows_no_such_service_is_logged_at_start_up(
    sentinel_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "apiguard.storage")
    store = open_store(sentinel_url.replace("/mymaster", "/nosuchmaster"), timeout=0.5)
    await store.open()  # never raises
    await store.aclose()
    logged = _logged(caplog)
    assert "not reachable at start-up (MasterNotFoundError" in logged
    assert "named 'nosuchmaster'" in logged
    assert "SENTINEL MASTERS" in logged


async def test_one_unreachable_cluster_seed_is_logged_with_advice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "apiguard.storage")
    store = open_store(f"redis+cluster://127.0.0.1:{free_port()}", timeout=0.5)
    await store.open()
    await store.aclose()
    logged = _logged(caplog)
    assert "not reachable at start-up (" in logged
    assert "list several seed nodes" in logged


@pytest.mark.parametrize("client", ["resp", "redis-py"])
async def test_a_wrong_password_is_logged_at_start_up_redacted(
    caplog: pytest.LogCaptureFixture, client: str
) -> None:
    server = RedisServer(redis_server_binary(), args=["--requirepass", "right-one"])
    server.start()
    try:
        caplog.set_level(logging.WARNING, "apiguard.storage")
        extra = "?health_check_interval=30" if client == "redis-py" else ""
        store = open_store(f"redis://:hunter2@127.0.0.1:{server.port}{extra}", timeout=0.5)
        await store.open()
        await store.aclose()
    finally:
        server.kill()
    logged = _logged(caplog)
    assert "not reachable at start-up (" in logged
    assert "check the user and password" in logged
    assert "hunter2" not in logged


@pytest.mark.parametrize("client", ["resp", "redis-py"])
async def test_a_failure_s_log_line_gives_the_reason_not_just_the_class(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture, client: str
) -> None:
    caplog.set_level(logging.WARNING, "apiguard.storage")
    extra = "?health_check_interval=30" if client == "redis-py" else ""
    store = open_store(f"redis://:hunter2@127.0.0.1:{own_redis.port}{extra}", timeout=0.5)
    own_redis.kill()
    assert store.kv is not None
    with pytest.raises(StorageError):
        await store.kv.get("k")
    await store.aclose()
    (line,) = [r.getMessage() for r in caplog.records if " failed (" in r.getMessage()]
    assert re.search(r"failed \(\w+Error: .*(refused|connect)", line, re.IGNORECASE), line
    assert "hunter2" not in line
