"""What every authenticator gives the middleware: find a credential, check it.

An authenticator looks for its own kind of credential among the request
headers the middleware collected (`find`), then checks it (`check`). `check`
is synchronous for everything that needs no I/O (a cached token, a key in a
mapping, a token verified with configured keys) and returns an awaitable
only when it must wait (a JWKS fetch, a database lookup), so that the common
request pays no coroutine.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Mapping, Sequence
from typing import Final, Literal, TypeAlias

from apiguard._types import Scope
from apiguard.layer import SecurityScheme
from apiguard.principal import Principal

__all__ = [
    "MALFORMED",
    "MALFORMED_REQUEST",
    "Authenticator",
    "CheckResult",
    "Failure",
    "Grant",
    "Malformed",
    "bearer_credential",
    "malformed_or",
    "with_method",
]


class Grant:
    """A credential accepted: the principal and its scopes, sorted, for `request.auth`.

    Attributes:
        principal: Who the credential names.
        scopes: The principal's scopes, sorted.
        digest: What to key on when something is keyed on the credential
            (a revocation list, a per-token counter): for a JWT, the SHA-256
            of the token in its one canonical spelling (an ECDSA signature in
            its low-s form), the key of the token cache; `None` for
            credentials that are not tokens.
    """

    __slots__ = ("digest", "principal", "scopes")

    def __init__(self, principal: Principal, digest: bytes | None = None) -> None:
        self.principal = principal
        self.scopes: tuple[str, ...] = tuple(sorted(principal.scopes))
        self.digest = digest


class Failure:
    """A credential refused.

    Attributes:
        kind: `"invalid"` (401), `"malformed"` (400: the header is broken,
            RFC 6750 `invalid_request`) or `"unavailable"` (503: the keys or
            the key store could not be reached; fail closed).
        cause: A short internal code (`"expired"`, `"bad_signature"`), for
            decisions and debug logs only; never sent to the client.
    """

    __slots__ = ("cause", "kind")

    def __init__(self, kind: Literal["invalid", "malformed", "unavailable"], cause: str) -> None:
        self.kind = kind
        self.cause = cause

    def __repr__(self) -> str:
        return f"Failure({self.kind!r}, {self.cause!r})"


class Malformed:
    """The request itself is malformed: the credential sent twice, a broken header."""

    __slots__ = ()


MALFORMED: Final = Malformed()
MALFORMED_REQUEST: Final = Failure("malformed", "whitespace")

CheckResult: TypeAlias = Grant | Failure | Awaitable[Grant | Failure]


def with_method(principal: Principal, method: str) -> Principal:
    """`principal`, with `method` filled in when it has none."""
    if principal.method is None:
        return dataclasses.replace(principal, method=method)
    return principal


_BEARER: Final = b"Bearer "


def bearer_credential(values: Sequence[bytes], scheme: bytes) -> bytes | Malformed | None:
    """The credential of `scheme` (lowercase) in the `Authorization` values, if any.

    Two `Authorization` fields, or the scheme with no credential or with
    more than one, make the request malformed (RFC 6750 §3.1
    `invalid_request`). Another scheme is not this authenticator's
    credential. The scheme name is case-insensitive (RFC 9110 §11.1).
    """
    if len(values) != 1:
        return MALFORMED if values else None
    value = values[0]
    if value.startswith(_BEARER) and scheme == b"bearer":
        # The usual spelling, without slicing and lowering the scheme.
        return value[7:].lstrip(b" ") or MALFORMED
    size = len(scheme)
    if value[:size].lower() != scheme:
        return None
    if value[size : size + 1] != b" ":
        # The scheme alone is malformed; "BearerX ..." is another scheme.
        return MALFORMED if len(value) == size else None
    credential = value[size + 1 :].lstrip(b" ")
    # Whitespace inside the credential is checked only when it fails to parse
    # (see `malformed_or`), so that the accepted request pays no extra scan.
    return credential or MALFORMED


def malformed_or(credential: bytes, failure: Failure) -> Failure:
    """`failure`, unless the credential has inner whitespace: a broken header (400)."""
    if b" " in credential or b"\t" in credential:
        return MALFORMED_REQUEST
    return failure


class Authenticator(ABC):
    """One way of establishing who is calling (a bearer token, an API key).

    Attributes:
        name: How the caller was authenticated (`"jwt"`, `"api_key"`): the
            principal's `method` and the name in the layer's decisions.
        scheme: The auth-scheme of its `WWW-Authenticate` challenges.
        header_names: The request headers it reads, lowercase; the middleware
            collects them in one pass over the raw headers.
        locations: Where it finds its credential; two authenticators may not
            share one (the second would never be consulted).
        error_codes: Whether its challenges carry RFC 6750 `error` codes.
    """

    name: str
    scheme: str
    header_names: frozenset[bytes]
    locations: frozenset[str]
    error_codes: bool = False
    #: What a bearer credential of this kind is, for API descriptions (`"JWT"`).
    bearer_format: str | None = None

    @property
    def may_be_unavailable(self) -> bool:
        """Whether checking may wait on something that can fail (a key server, a lookup): 503."""
        return False

    def security_schemes(self) -> tuple[SecurityScheme, ...]:
        """The ways this authenticator reads a credential, as OpenAPI security schemes.

        One per location: `Authorization: <scheme>` is an `http` scheme, a
        header, query parameter or cookie an `apiKey` one. Named after the
        authenticator (`"jwt"`), with the place when it reads several
        (`"jwt_query"`).
        """
        schemes = []
        several = len(self.locations) > 1
        for location in sorted(self.locations):
            kind, _, where = location.partition(":")
            name = f"{self.name}_{kind}" if several else self.name
            if kind == "authorization":
                bearer = where == "bearer"
                schemes.append(
                    SecurityScheme(
                        name,
                        "http",
                        scheme=where,
                        bearer_format=self.bearer_format if bearer else None,
                    )
                )
            else:
                place: Literal["header", "query", "cookie"] = kind  # type: ignore[assignment]
                schemes.append(SecurityScheme(name, "apiKey", location=place, parameter=where))
        return tuple(schemes)

    @abstractmethod
    def find(self, headers: Mapping[bytes, list[bytes]], scope: Scope) -> bytes | Malformed | None:
        """This authenticator's credential in the request, `MALFORMED`, or `None`."""

    @abstractmethod
    def check(self, credential: bytes) -> CheckResult:
        """Accept or refuse the credential; an awaitable only when it must wait."""
