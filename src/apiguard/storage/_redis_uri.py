"""Where a Redis node is and how to talk to it, read from a URI as redis-py reads it.

A URI is read as redis-py (5 to 8) reads it in `redis.connection.parse_url`,
so that one URI means the same node, user and database to both clients (each
case is checked against redis-py's parser in `tests/storage/test_redis_uri.py`):

- The first of a repeated option wins: `?db=1&db=2` is database 1.
- User and password in the authority win over `username=` and `password=`
  in the query (an empty one in the authority does not count).
- The authority is percent-decoded once: the user, the password
  (`redis://:p%40ss@cache` is `p@ss`; a `+` stays a `+`) and the host, so
  that an IPv6 zone `[fe80::1%25eth0]` is `fe80::1%eth0`, as the resolver
  reads it. Query values are decoded once by `parse_qs` (a `+` is a space).
- The database is `db=` in the query, else the path (`redis://cache/3`).
- `unix:///run/redis.sock?db=2` (redis-py's form) and
  `redis+unix:///run/redis.sock` (`limits`') name a socket; the database
  then comes from the query only.
- A user without a password still authenticates as that user
  (`AUTH alice ""`), as redis-py does, rather than as the default user.

Where they differ, this reader is stricter, and says so at start-up with a
`ValueError` (which `open_store` reports as a `ConfigError`) where redis-py
fails at the first command or not at all:

- A database that is not a number: redis-py takes `redis://cache/x` as
  database 0 and sends `SELECT -1` for `?db=-1`.
- Port 0: redis-py tries to connect to it.
- `ssl_*` options on a URI without TLS, which redis-py passes to a
  connection that does not take them.
- `protocol=3`: RESP3 is not served by this client. The rate limiter gains
  nothing from it (its scripts and counters answer integers and arrays in
  either protocol; push messages and client-side caching serve nothing
  here), and sending the URI to redis-py instead would silently cost every
  request the slower client (a PING: 27 µs here, 67 µs on redis-py) and its
  connection pool. `protocol=2`, the default, is accepted.
- Redis older than 6 (no ACL users) answers `AUTH user password` with an
  error; redis-py then retries with the password alone, this client does not.

Any other option that redis-py knows (`socket_timeout=`, ...) makes
[`parse_redis_uri`][apiguard.storage._redis_uri.parse_redis_uri] return
`None`: the URI is then served by redis-py. The `valkey` schemes (valkey-py's)
are read as the `redis` ones.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

from apiguard.storage._resp_wire import encode_command

__all__ = ["SUPPORTED_OPTIONS", "Endpoint", "parse_redis_uri"]

#: URI query options this client understands; any other sends the URI to redis-py.
SUPPORTED_OPTIONS: Final = frozenset(
    {
        "db",
        "protocol",
        "username",
        "password",
        "client_name",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_password",
        "ssl_check_hostname",
    }
)
_CERT_REQS: Final = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}
_BOOLS: Final = {
    "true": True,
    "yes": True,
    "1": True,
    "on": True,
    "false": False,
    "no": False,
    "0": False,
    "off": False,
}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One Redis node and how to talk to it, parsed from a URI (no I/O)."""

    host: str = "localhost"
    port: int = 6379
    path: str | None = None
    tls: bool = False
    username: str | None = None
    #: Never in the repr, nor in anything that prints the endpoint.
    password: str | None = field(default=None, repr=False)
    db: int = 0
    client_name: str | None = None
    cert_reqs: ssl.VerifyMode = ssl.CERT_REQUIRED
    check_hostname: bool = True
    ca_certs: str | None = None
    ca_path: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    key_password: str | None = field(default=None, repr=False)

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context: the system's CAs (or the given ones), verification on."""
        context = ssl.create_default_context(cafile=self.ca_certs, capath=self.ca_path)
        # check_hostname must be off before verify_mode may drop to CERT_NONE.
        context.check_hostname = self.check_hostname and self.cert_reqs != ssl.CERT_NONE
        context.verify_mode = self.cert_reqs
        if self.certfile is not None:
            context.load_cert_chain(self.certfile, self.keyfile, self.key_password)
        return context

    def handshake(self) -> list[bytes]:
        """The commands a new connection sends before any other."""
        commands = []
        if self.username is not None:
            # As redis-py: a user without a password is still that user.
            commands.append(encode_command("AUTH", self.username, self.password or ""))
        elif self.password is not None:
            commands.append(encode_command("AUTH", self.password))
        if self.db:
            commands.append(encode_command("SELECT", self.db))
        if self.client_name is not None:
            commands.append(encode_command("CLIENT", "SETNAME", self.client_name))
        return commands


def parse_redis_uri(uri: str) -> Endpoint | None:
    """Parse `redis://`, `rediss://`, `redis+unix://`, `unix://` URIs (and the `valkey` forms).

    Options are read as redis-py reads them (see the module's notes): `db`,
    `username`, `password`, `client_name`, `protocol` and the `ssl_*`
    options in the query; user and password in the authority; the database
    in the path.

    Returns:
        The endpoint, or `None` when the URI has a scheme or an option this
        client does not support (the caller then uses redis-py).

    Raises:
        ValueError: an option's value is malformed, or a file it names is missing.
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.lower().removeprefix("async+")
    family, _, kind = scheme.partition("+")
    if scheme == "unix":
        family, kind = "redis", "unix"
    if family not in ("redis", "rediss", "valkey", "valkeys") or kind not in ("", "unix"):
        return None
    # redis-py takes the first of a repeated option.
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    if not query.keys() <= SUPPORTED_OPTIONS:
        return None
    _check_protocol(query.get("protocol"))
    options: dict[str, Any] = {"client_name": query.get("client_name")}
    # The authority wins over the query, when it is not empty (redis-py).
    options["username"] = unquote(parts.username) if parts.username else query.get("username")
    options["password"] = unquote(parts.password) if parts.password else query.get("password")
    db_text = query.get("db")
    if kind == "unix":
        if not parts.path:
            msg = "a unix socket URI needs a path (redis+unix:///run/redis.sock)"
            raise ValueError(msg)
        options["path"] = unquote(parts.path)
    else:
        try:
            port = parts.port
        except ValueError:
            msg = f"port {parts.netloc.rpartition(':')[2]!r} is not a port number"
            raise ValueError(msg) from None
        if port == 0:
            msg = "port 0 is not a port to connect to"
            raise ValueError(msg)
        host = unquote(parts.hostname) if parts.hostname else "localhost"
        options.update(host=host, port=6379 if port is None else port)
        if db_text is None and parts.path.strip("/"):
            db_text = unquote(parts.path).strip("/")
    if db_text is not None:
        if not db_text.isdigit():
            msg = f"db {db_text!r} is not a database number"
            raise ValueError(msg)
        options["db"] = int(db_text)
    if family in ("rediss", "valkeys"):
        options.update(_tls_options(query))
    elif any(name.startswith("ssl_") for name in query):
        msg = "ssl_* options need a rediss:// URI"
        raise ValueError(msg)
    return Endpoint(**options)


def _check_protocol(protocol: str | None) -> None:
    """`protocol=2` is what this client speaks; RESP3 is refused (see the module's notes)."""
    if protocol is None or protocol.strip() == "2":
        return
    if protocol.strip() == "3":
        msg = (
            "protocol=3: RESP3 is not served by apiguard's Redis client, and the rate "
            "limiter needs nothing of it; drop the option or write protocol=2"
        )
        raise ValueError(msg)
    msg = f"protocol {protocol!r} is not 2 (RESP2)"
    raise ValueError(msg)


def _tls_options(query: dict[str, str]) -> dict[str, Any]:
    options: dict[str, Any] = {"tls": True}
    reqs = query.get("ssl_cert_reqs")
    if reqs is not None:
        if reqs.lower() not in _CERT_REQS:
            msg = f"ssl_cert_reqs {reqs!r} is not 'none', 'optional' or 'required'"
            raise ValueError(msg)
        options["cert_reqs"] = _CERT_REQS[reqs.lower()]
    check = query.get("ssl_check_hostname")
    if check is not None:
        if check.lower() not in _BOOLS:
            msg = f"ssl_check_hostname {check!r} is not true or false"
            raise ValueError(msg)
        options["check_hostname"] = _BOOLS[check.lower()]
    for name, target in (
        ("ssl_ca_certs", "ca_certs"),
        ("ssl_certfile", "certfile"),
        ("ssl_keyfile", "keyfile"),
    ):
        path = query.get(name)
        if path is not None:
            if not os.path.isfile(path):  # a stat, so that a typo fails at start-up
                msg = f"{name} {path!r} is not a file"
                raise ValueError(msg)
            options[target] = path
    if "ssl_ca_path" in query:
        options["ca_path"] = query["ssl_ca_path"]
    if "ssl_password" in query:
        options["key_password"] = query["ssl_password"]
    return options
