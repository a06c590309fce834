"""The Idempotency-Key field, the caller part of store keys, and fingerprints."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apiguard import Principal
from apiguard.address import ClientAddress
from apiguard.context import get_context
from apiguard.idempotency._key import Callers, fingerprint, parse_key, store_key

#: RFC 9651 §3.3.3: the characters an sf-string holds.
SF_CHARS = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


@given(st.text(SF_CHARS, min_size=1, max_size=255))
def test_every_sf_string_is_read_back(key: str) -> None:
    escaped = key.replace("\\", "\\\\").replace('"', '\\"')
    assert parse_key(f'"{escaped}"'.encode()) == key


@pytest.mark.parametrize(
    ("value", "key"),
    [
        (b'"abc"', "abc"),
        (b'  "abc"  ', "abc"),  # RFC 9651 §4.2: surrounding spaces are dropped
        (b'"abc";v=1;x', "abc"),  # parameters: ignored
        (b'"abc";v="a,b"', "abc"),
        (b"8e03978e-40d5-43e8-bc93-6894a57f9324", "8e03978e-40d5-43e8-bc93-6894a57f9324"),
        (b"abc;v=1", "abc"),
        (b"a/b+c=", "a/b+c="),  # base64 keys, bare
        (b'""', None),
        (b"", None),
        (b'"abc', None),
        (b'"a"b"', None),
        (b'"abc" "def"', None),
        (b'"abc",', None),
        (b'"abc";V=1', None),  # parameter keys are lowercase
        (b'"\\x"', None),
        (b'"caf\xc3\xa9"', None),
        (b"caf\xc3\xa9", None),
    ],
)
def test_parse_key(value: bytes, key: str | None) -> None:
    assert parse_key(value) == key


def _scope(principal: Principal | None, client: str = "203.0.113.9") -> dict[str, object]:
    scope: dict[str, object] = {"type": "http", "client": (client, 1), "headers": []}
    if principal is not None:
        get_context(scope).principal = principal
    return scope


def test_callers_never_share_a_namespace() -> None:
    callers = Callers(ClientAddress())
    parts = {
        callers(_scope(Principal(id="acme", method="api_key"))),
        callers(_scope(Principal(id="acme", method="jwt"))),
        callers(_scope(Principal(id="acme", method="jwt:x"))),
        callers(_scope(Principal(id="x:acme", method="jwt"))),
        callers(_scope(Principal(id="203.0.113.9"))),
        callers(_scope(None)),
        callers(_scope(Principal(id="a" * 300, method="jwt"))),
    }
    assert len(parts) == 7
    assert callers(_scope(None)) == "a:203.0.113.9"
    assert callers(_scope(Principal(id="a" * 300, method="jwt"))).startswith("h:jwt:")


@given(
    name=st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.:+-]{0,63}\Z"),
    caller=st.text(),
    key=st.text(SF_CHARS, min_size=1, max_size=255),
)
def test_a_store_key_splits_back_into_its_parts(name: str, caller: str, key: str) -> None:
    """Names and keys hold no newline, so any caller part (an id may hold one) stays apart."""
    first, _, rest = store_key(name, caller, key).partition("\n")
    middle, _, last = rest.rpartition("\n")
    assert (first, middle, last) == (name, caller, key)


def test_fingerprints_tell_every_part_apart() -> None:
    def scope(path: str, query: bytes = b"", host: bytes = b"api.example") -> dict[str, object]:
        return {"path": path, "query_string": query, "headers": [(b"host", host)]}

    prints = {
        fingerprint("POST", scope("/orders/1", host=b"other.example"), b"{}"),
        fingerprint("POST", scope("/orders/1"), b"{}"),
        fingerprint("PATCH", scope("/orders/1"), b"{}"),
        fingerprint("POST", scope("/orders/2"), b"{}"),
        fingerprint("POST", scope("/orders/1", b"a=1"), b"{}"),
        fingerprint("POST", scope("/orders/1"), b'{"a":1}'),
        fingerprint("POST", scope("/orders/1a"), b"=1{}"),
    }
    assert len(prints) == 7
    assert fingerprint("POST", scope("/x"), b"1") == fingerprint("POST", scope("/x"), b"1")
