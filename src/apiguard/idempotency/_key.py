"""The `Idempotency-Key` field, whose key it is, and what a request's payload is.

Three small pure functions the layer calls per keyed request:

- [`parse_key`][apiguard.idempotency._key.parse_key]: the field's value to
  the key, or `None` when it is malformed;
- [`Callers`][apiguard.idempotency._key.Callers]: who sent it (the
  principal, or the client address when anonymous), so that one caller's
  keys never meet another's;
- [`fingerprint`][apiguard.idempotency._key.fingerprint]: a digest of the
  method, host, path, query and body, so that a key reused for another request is
  told apart from a retry.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

from apiguard._asgi import get_header
from apiguard._types import Scope
from apiguard.address import ClientAddress
from apiguard.context import principal_of

__all__ = ["MAX_KEY_LENGTH", "Callers", "fingerprint", "parse_key", "store_key"]

#: The longest key accepted, in characters (Stripe's bound; the draft sets none).
MAX_KEY_LENGTH: Final = 255

# draft-ietf-httpapi-idempotency-key-header-07 §2: the field is an RFC 9651
# Item whose value is a String. RFC 9651 §3.3.3: a String is DQUOTE, then
# printable ASCII with `"` and `\` escaped by `\`, then DQUOTE.
_STRING: Final = rb'"(?P<string>(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"'
# Many clients (Stripe's SDKs and their imitators) send the key bare: a UUID
# such as 8e03978e-40d5-... is not even an RFC 9651 Token (it starts with a
# digit), so a strict parser would refuse the most common key there is. A
# bare key is one run of visible ASCII without the characters that delimit
# structured fields: `"`, `\`, `,` (two keys joined into one line by a proxy
# stay malformed) and `;` (parameters).
_BARE: Final = rb"(?P<bare>[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]+)"
# RFC 9651 §3.1.2: parameters may follow an Item; the draft defines none, so
# they are checked for shape and ignored.
_BARE_ITEM: Final = (
    rb'(?:"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*"|[\x21\x23-\x2b\x2d-\x3a\x3c-\x7e]+)'
)
_PARAMETERS: Final = rb"(?:;\x20*[a-z*][a-z0-9_.*-]*(?:=" + _BARE_ITEM + rb")?)*"
_FIELD: Final = re.compile(
    rb"[\x20\t]*(?:" + _STRING + rb"|" + _BARE + rb")" + _PARAMETERS + rb"[\x20\t]*"
)
_ESCAPE: Final = re.compile(rb'\\(["\\])')
#: The usual field, a quoted key without escapes or parameters: one cheap match.
_PLAIN: Final = re.compile(rb'"([\x20\x21\x23-\x5b\x5d-\x7e]{1,%d})"' % MAX_KEY_LENGTH)


def parse_key(value: bytes) -> str | None:
    r"""The key in an `Idempotency-Key` field value, or `None` when it is malformed.

    Accepted: an RFC 9651 String (`"8e03978e-..."`, the draft's form) or a
    bare key (`8e03978e-...`, as Stripe-style clients send it), 1 to
    [`MAX_KEY_LENGTH`][apiguard.idempotency._key.MAX_KEY_LENGTH] characters
    either way, optionally followed by parameters, which are ignored. The
    quoted and the bare spelling of one key are the same key.

    Examples:
        >>> parse_key(b'"8e03978e-40d5-43e8-bc93-6894a57f9324"')
        '8e03978e-40d5-43e8-bc93-6894a57f9324'
        >>> parse_key(b"8e03978e-40d5-43e8-bc93-6894a57f9324")
        '8e03978e-40d5-43e8-bc93-6894a57f9324'
        >>> parse_key(b'"a \\"quoted\\" key";v=1')
        'a "quoted" key'
        >>> parse_key(b"one, two") is None, parse_key(b'""') is None
        (True, True)
    """
    plain = _PLAIN.fullmatch(value)
    if plain is not None:
        return plain[1].decode("ascii")
    match = _FIELD.fullmatch(value)
    if match is None:
        return None
    raw = match["bare"]
    if raw is None:
        raw = match["string"]
        if b"\\" in raw:
            raw = _ESCAPE.sub(rb"\1", raw)
    if not raw or len(raw) > MAX_KEY_LENGTH:
        return None
    return raw.decode("ascii")


#: Principal ids longer than this are hashed in store keys (memory is counted).
_MAX_ID: Final = 256


class Callers:
    """Who a key belongs to: the principal if authentication set one, else the address.

    Principals are `p:<method>:<id>` (the method escaped of `:` and `%`, so
    that the id may hold anything), long ids `h:<method>:<sha-256>`, and
    anonymous callers `a:<address>`: no two namespaces meet, so a token
    subject never shares keys with the API-key principal of the same id, nor
    with a client address.

    Args:
        address: The client address resolver, for anonymous callers.
    """

    __slots__ = ("_prefixes", "address")

    def __init__(self, address: ClientAddress) -> None:
        self.address = address
        self._prefixes: dict[str | None, str] = {}

    def __call__(self, scope: Scope) -> str:
        """The caller of the request in `scope`, as a store key part."""
        principal = principal_of(scope)
        if principal is None:
            return "a:" + self.address(scope)
        method = principal.method
        prefix = self._prefixes.get(method)
        if prefix is None:
            if len(self._prefixes) >= 64:  # methods are few; never grow without bound
                self._prefixes.clear()
            escaped = (method or "").replace("%", "%25").replace(":", "%3A")
            prefix = self._prefixes[method] = escaped + ":"
        principal_id: str = principal.id
        if len(principal_id) > _MAX_ID:
            raw = principal_id.encode("utf-8", "surrogatepass")
            return "h:" + prefix + hashlib.sha256(raw).hexdigest()
        return "p:" + prefix + principal_id


def store_key(name: str, caller: str, key: str) -> str:
    """The store key of `key` sent by `caller` to the layer named `name`.

    `name` (a layer name) and `key` (printable ASCII) hold no newline, so the
    first and last newlines split the three parts back, whatever the caller
    part holds: two different triples never make one store key.
    """
    return f"{name}\n{caller}\n{key}"


def fingerprint(method: str, scope: Scope, body: bytes) -> bytes:
    """SHA-256 of the method, host, path, query string and body: what a retry repeats.

    The path is the request's own (`/orders/2`), never its route template,
    so that a key used on `/orders/1` cannot replay that response for
    `/orders/2`; the `Host` field is part of the target too (RFC 9110
    §7.1), and `Host` routes send one path to different endpoints. Each
    part is length-prefixed, so that no two requests hash the same bytes
    (a path ending where a query begins).
    """
    path: str = scope["path"]
    parts = (
        method.encode("utf-8", "surrogatepass"),
        get_header(scope, b"host") or b"",
        path.encode("utf-8", "surrogatepass"),
        scope.get("query_string", b""),
    )
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    digest.update(body)
    return digest.digest()
