"""Options of a Redis URI, checked at start-up as the client that serves it would read them.

Two options are apiguard's own, on every Redis URI:

- `connect_timeout` (seconds, default 3): how long the first connection of
  a worker may take where no lifespan start-up made it (an in-process test
  client), shared by the requests that wait for it. A reconnection after an
  outage is bounded by each request's own store timeout instead, so that an
  outage does not cost every request this much.
- `max_connections` (default 100): redis-py's own option, read by apiguard
  too. Cluster and Sentinel connection pools refuse a command beyond it at
  once (`MaxConnectionsError`); apiguard makes a request wait for a free
  connection instead, within its store timeout.

Every other query option of a URI served by redis-py (`redis+cluster://`,
`redis+sentinel://`, a single node with an option apiguard's client does not
read) must be one that redis-py's URL parser or connection classes take
(found by introspection of the installed client, so that it matches its
version), with a value its URL parser reads: redis-py itself passes an
unknown name to the connection and fails at the first command (`TypeError`),
and `limits` drops every option of a cluster or sentinel URI. A typo gets
the closest known name (`client_nam` -> `client_name`).

Sentinel URIs name the service in the path, and may add a database:
`redis+sentinel://host:26379/mymaster/0` is service `mymaster`, database 0
(as in the URIs of other Sentinel users; `limits` would read it as the
service `mymaster0`). Redis Cluster has database 0 only: another one is
refused, as is a path beyond what each form takes.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "CONNECT_TIMEOUT",
    "MAX_CONNECTIONS",
    "Form",
    "RedisPyOptions",
    "own_options",
    "redis_py_options",
]

#: Seconds the first connection of a worker may take (see the module's notes).
CONNECT_TIMEOUT: Final = 3.0
#: Connections (and so store calls in flight) per process and event loop, by default.
MAX_CONNECTIONS: Final = 100

Form = Literal["single", "tls", "unix", "cluster", "sentinel"]

#: redis-py's connection options that take text as it is.
_TEXT: Final = frozenset(
    {
        "username",
        "password",
        "client_name",
        "lib_name",
        "lib_version",
        "encoding",
        "encoding_errors",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_ca_data",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_password",
        "ssl_cert_reqs",
        "ssl_ciphers",
    }
)
#: Options redis-py takes that would break the store, and why.
_REFUSED: Final = {
    "decode_responses": "apiguard reads Redis replies as bytes",
    "read_from_replicas": "rate decisions are read from the primaries",
    "load_balancing_strategy": "rate decisions are read from the primaries",
    "timeout": "the store timeout (store_timeout) bounds the wait for a connection",
    "connection_class": "it names a class, which a URI cannot give",
}


@dataclass(frozen=True, slots=True)
class RedisPyOptions:
    """A Redis URI read for redis-py: what `limits`' storage is given."""

    #: The URI for `limits` (`async+redis+sentinel://hosts`, no path or query).
    target: str
    #: Keyword options for the storage (and so for redis-py), typed.
    options: dict[str, Any] = field(repr=False)
    max_connections: int = MAX_CONNECTIONS


def _split_query(query: str) -> list[tuple[str, str]]:
    """`(decoded name, raw segment)` per `&`-separated segment, as `parse_qs` splits them."""
    return [
        (unquote(segment.partition("=")[0].replace("+", " ")), segment)
        for segment in query.split("&")
        if segment
    ]


def _positive_seconds(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} {text!r} is not a number of seconds") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} {text!r} is not a positive, finite number of seconds")
    return value


def _count(name: str, text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} {text!r} is not a whole number") from None
    if value < low:
        raise ValueError(f"{name} {text!r} is less than {low}")
    return value


def own_options(uri: str) -> tuple[str, float]:
    """Take apiguard's `connect_timeout` out of `uri`, every other byte left as given.

    Returns:
        The URI without the option, and the connect timeout.

    Raises:
        ValueError: the option's value is not a positive number of seconds.
    """
    base, mark, query = uri.partition("?")
    if not mark:
        return uri, CONNECT_TIMEOUT
    query, hash_mark, fragment = query.partition("#")
    kept: list[str] = []
    connect_timeout: float | None = None
    for name, segment in _split_query(query):
        if name != "connect_timeout":
            kept.append(segment)
        elif connect_timeout is None:  # the first of a repeated option wins, as in redis-py
            value = unquote(segment.partition("=")[2].replace("+", " "))
            connect_timeout = _positive_seconds(name, value)
    rest = base + ("?" + "&".join(kept) if kept else "") + hash_mark + fragment
    return rest, CONNECT_TIMEOUT if connect_timeout is None else connect_timeout


@functools.cache
def _known(family: str, form: Form) -> dict[str, Callable[[str], Any] | None]:
    """The query options `form` takes, by the installed client's own tables: name -> parser."""
    connection = importlib.import_module(f"{family}.asyncio.connection")
    parsers: dict[str, Callable[[str], Any]] = dict(connection.URL_QUERY_ARGUMENT_PARSERS)

    def params(*classes: type) -> set[str]:
        names: set[str] = set()
        for cls in classes:
            names |= set(inspect.signature(cls).parameters)
        return names

    base = params(connection.AbstractConnection)
    # TLS to every node: `ssl=true` (there is no rediss+cluster:// scheme).
    parsers["ssl"] = connection.to_bool
    if form == "cluster":
        cluster = importlib.import_module(f"{family}.asyncio.cluster")
        accepted = params(cluster.RedisCluster if family == "redis" else cluster.ValkeyCluster)
        parsers.update(
            require_full_coverage=connection.to_bool,
            reinitialize_steps=int,
            cluster_error_retry_attempts=int,
        )
    elif form == "unix":
        accepted = base | params(connection.UnixDomainSocketConnection) | {"max_connections"}
    else:
        accepted = base | params(connection.Connection) | {"max_connections"}
        if form == "tls":
            accepted |= params(connection.SSLConnection)
        elif form == "sentinel":  # redis-py's Sentinel pool reads `ssl` itself
            accepted |= params(connection.SSLConnection) | {"ssl"}
    known: dict[str, Callable[[str], Any] | None] = {
        name: parsers[name] for name in parsers.keys() & accepted
    }
    known.update(dict.fromkeys(_TEXT & accepted))
    for name in _REFUSED:
        known.pop(name, None)
    return known


def _parse_value(name: str, parser: Callable[[str], Any] | None, text: str) -> Any:
    if parser is None:
        return text
    if parser is float:
        return _positive_seconds(name, text)
    if parser is int:
        return _count(name, text, 1 if name == "max_connections" else 0)
    try:
        return parser(text)
    except (TypeError, ValueError):
        raise ValueError(f"{name} {text!r} is not a value redis-py reads") from None


def check_query(family: str, form: Form, query: str) -> dict[str, Any]:
    """Every option of `query` read as redis-py reads it; unknown or malformed ones refused.

    Raises:
        ValueError: naming the option, its value, and the closest known option.
    """
    known = _known(family, form)
    options: dict[str, Any] = {}
    for name, values in parse_qs(query, keep_blank_values=True).items():
        if name in _REFUSED:
            raise ValueError(f"option {name!r} is not for apiguard's store: {_REFUSED[name]}")
        if name not in known:
            if name.startswith("ssl") and form in ("single", "unix"):
                raise ValueError(f"option {name!r}: TLS options need a rediss:// URI")
            close = difflib.get_close_matches(name, [*known, "connect_timeout"], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            where = {"cluster": "a Redis Cluster URI", "sentinel": "a Sentinel URI"}.get(
                form, "this Redis URI"
            )
            raise ValueError(f"option {name!r} is not one redis-py takes on {where}{hint}")
        options[name] = _parse_value(name, known[name], values[0])  # the first wins
    return options


def redis_py_options(
    uri: str, *, family: str, form: Form, connect_timeout: float
) -> RedisPyOptions:
    """Read a Redis URI served by redis-py into `limits`' target URI and options.

    Args:
        uri: The URI as given, `connect_timeout` taken out.
        family: `"redis"` or `"valkey"` (the client package).
        form: Which kind of URI it is.
        connect_timeout: The first connection's timeout (and the sockets',
            unless the URI says otherwise).

    Raises:
        ValueError: an option, a database or a path the form does not take.
    """
    parts = urlsplit(uri)
    given = check_query(family, form, parts.query)
    # Socket timeouts are a backstop: apiguard bounds every call itself, by
    # the store timeout, and the first connection by the connect timeout,
    # which a socket timeout must not cut short.
    options: dict[str, Any] = {
        "implementation": "redispy" if family == "redis" else "valkey",
        "socket_timeout": connect_timeout,
        "socket_connect_timeout": connect_timeout,
    }
    max_connections = given.pop("max_connections", MAX_CONNECTIONS)
    segments = [unquote(s) for s in parts.path.split("/") if s]
    scheme = parts.scheme.lower().removeprefix("async+")
    if form == "cluster":
        _check_cluster_db(parts.path, segments, given)
    elif form == "sentinel":
        options.update(
            _sentinel_options(parts.path, segments, given, connect_timeout, max_connections)
        )
    else:
        if form != "unix" and (len(segments) > 1 or (segments and not segments[0].isdigit())):
            raise ValueError(f"path {parts.path!r} is not a database number (redis://host/0)")
        # No client-side retries: a retried script may count a request twice,
        # and the store's timeout and breaker decide what a failure costs.
        retry = importlib.import_module(f"{family}.asyncio.retry")
        backoff = importlib.import_module(f"{family}.backoff")
        options["retry"] = retry.Retry(backoff.NoBackoff(), 0)
        # redis-py reads the URI itself (BlockingConnectionPool.from_url).
        return RedisPyOptions(f"async+{uri.removeprefix('async+')}", options, max_connections)
    # limits drops a cluster or sentinel URI's query and reads its path as
    # the service's name: both are given as options instead.
    if parts.username:  # the authority wins over the query, as in redis-py
        given.pop("username", None)
    if parts.password:
        given.pop("password", None)
    options.update(given)
    options["max_connections"] = max_connections
    return RedisPyOptions(f"async+{scheme}://{parts.netloc}", options, max_connections)


def _check_cluster_db(path: str, segments: list[str], given: dict[str, Any]) -> None:
    db = given.pop("db", None)
    if segments:
        if len(segments) > 1 or not segments[0].isdigit():
            raise ValueError(f"path {path!r} is not a database (Redis Cluster has 0 only)")
        db = int(segments[0]) if db is None else db
    if db:
        raise ValueError(f"database {db} on a Redis Cluster, which has database 0 only")


def _sentinel_options(
    path: str,
    segments: list[str],
    given: dict[str, Any],
    connect_timeout: float,
    max_connections: int,
) -> dict[str, Any]:
    if not segments:
        raise ValueError("it names no sentinel service (redis+sentinel://host:26379/mymaster)")
    if len(segments) > 2:
        raise ValueError(
            f"path {path!r} is not /service or /service/db (redis+sentinel://host:26379/mymaster/0)"
        )
    if len(segments) == 2:
        if not segments[1].isdigit():
            raise ValueError(f"database {segments[1]!r} is not a database number")
        given.setdefault("db", int(segments[1]))  # ?db= wins, as the query does in redis-py
    return {
        "service_name": segments[0],
        # Rate decisions read from the primary, never from a lagging replica.
        "use_replicas": False,
        # The sentinels are asked for the primary's address once per new
        # connection: their clients get the same bounds as the primary's.
        "sentinel_kwargs": {
            "socket_timeout": given.get("socket_timeout", connect_timeout),
            "socket_connect_timeout": given.get("socket_connect_timeout", connect_timeout),
            "max_connections": max_connections,
        },
    }


def advice(store: Any, error: BaseException) -> str:
    """What to check after `store` failed to connect at start-up with `error`; or `""`."""
    kind = type(error).__name__
    text = str(error)
    if kind == "MasterNotFoundError":
        service = store.options.get("service_name")
        return (
            f"; do the sentinels monitor a primary named {service!r}? The URI's path names "
            "it, and SENTINEL MASTERS on a sentinel lists the names they know"
        )
    if "Authentication" in kind or any(word in text for word in ("WRONGPASS", "NOAUTH", "NOPERM")):
        return "; check the user and password the URI gives"
    hosts = store.uri.partition("://")[2].partition("/")[0].rpartition("@")[2]
    unreachable = any(word in kind for word in ("Unreachable", "Connection", "Timeout"))
    if store.cluster and unreachable and "," not in hosts:
        return (
            "; list several seed nodes (redis+cluster://a:6379,b:6379,c:6379), so that "
            "one node down at start-up does not leave the store unreachable"
        )
    return ""
