"""What a stored response keeps, and its bytes read back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apiguard.idempotency._record import decode, encode, kept_headers


def test_hop_by_hop_and_per_message_headers_are_not_kept() -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"Connection", b"keep-alive, X-Trace-Hop"),
        (b"x-trace-hop", b"1"),
        (b"keep-alive", b"timeout=5"),
        (b"transfer-encoding", b"chunked"),
        (b"content-length", b"12"),
        (b"date", b"Tue, 01 Dec 2026 10:00:00 GMT"),
        (b"set-cookie", b"session=s3cr3t"),
        (b"idempotent-replayed", b"true"),
        (b"location", b"/orders/7"),
        (b"x-run", b"1"),
        (b"x-run", b"2"),
    ]
    assert kept_headers(headers) == [
        (b"content-type", b"application/json"),
        (b"location", b"/orders/7"),
        (b"x-run", b"1"),
        (b"x-run", b"2"),
    ]


header = st.tuples(st.binary(min_size=1, max_size=40), st.binary(max_size=200))


@given(
    fingerprint=st.binary(min_size=32, max_size=32),
    status=st.integers(100, 599),
    headers=st.lists(header, max_size=20),
    body=st.binary(max_size=2000),
)
def test_a_stored_response_reads_back_as_it_was(
    fingerprint: bytes, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    stored = decode(encode(fingerprint, status, headers, body))
    assert stored == (fingerprint, status, headers, body)


@pytest.mark.parametrize(
    "value",
    [b"", b"\x01short", b"\x02" + bytes(36), encode(bytes(32), 200, [(b"a", b"b")], b"")[:-1]],
)
def test_bytes_that_are_no_stored_response_are_refused(value: bytes) -> None:
    with pytest.raises(ValueError, match="stored response"):
        decode(value)
