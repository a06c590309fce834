"""Where a Redis node is and how to talk to it, read from a URI as redis-py reads it."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

from apiguard.storage._resp_wire import encode_command

__all__ = ["SUPPORTED_OPTIONS", "Endpoint", "parse_redis_uri"]

#: URI query options this client understands; any other sends the URI to redis-py.
SUPPORTED_OPTIONS: Final = frozenset(
    {
        "db",
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
    password: str | None = None
    db: int = 0
    client_name: str | None = None
    cert_reqs: ssl.VerifyMode = ssl.CERT_REQUIRED
    check_hostname: bool = True
    ca_certs: str | None = None
    ca_path: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    key_password: str | None = None

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
        if self.password is not None:
            if self.username is not None:
                commands.append(encode_command("AUTH", self.username, self.password))
            else:
                commands.append(encode_command("AUTH", self.password))
        if self.db:
            commands.append(encode_command("SELECT", self.db))
        if self.client_name is not None:
            commands.append(encode_command("CLIENT", "SETNAME", self.client_name))
        return commands


def parse_redis_uri(uri: str) -> Endpoint | None:
    """Parse `redis://`, `rediss://` and `redis+unix://` URIs (and their `valkey` forms).

    Options are read as redis-py reads them (`db`, `username`, `password`,
    `client_name` and the `ssl_*` options in the query; user and password in
    the authority; the database in the path).

    Returns:
        The endpoint, or `None` when the URI has a scheme or an option this
        client does not support (the caller then uses redis-py).

    Raises:
        ValueError: an option's value is malformed, or a file it names is missing.
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.lower().removeprefix("async+")
    family, _, kind = scheme.partition("+")
    if family not in ("redis", "rediss", "valkey", "valkeys") or kind not in ("", "unix"):
        return None
    query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
    if not query.keys() <= SUPPORTED_OPTIONS:
        return None
    options: dict[str, Any] = {}
    username = query.get("username") or (unquote(parts.username) if parts.username else None)
    password = query.get("password") or (unquote(parts.password) if parts.password else None)
    options.update(username=username, password=password, client_name=query.get("client_name"))
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
        options.update(host=parts.hostname or "localhost", port=port or 6379)
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
    for name, field in (
        ("ssl_ca_certs", "ca_certs"),
        ("ssl_certfile", "certfile"),
        ("ssl_keyfile", "keyfile"),
    ):
        path = query.get(name)
        if path is not None:
            if not os.path.isfile(path):  # a stat, so that a typo fails at start-up
                msg = f"{name} {path!r} is not a file"
                raise ValueError(msg)
            options[field] = path
    if "ssl_ca_path" in query:
        options["ca_path"] = query["ssl_ca_path"]
    if "ssl_password" in query:
        options["key_password"] = query["ssl_password"]
    return options
