"""Through a real uvicorn: the 10 GB declaration and the 200 MB chunked body."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests._servers import Uvicorn

MiB = 1_048_576


def peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def read_status(sock: socket.socket, timeout: float = 10.0) -> tuple[int, bytes]:
    """Read until the end of the response head; the status code and the raw head."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65_536)
        if not piece:
            break
        data += piece
    head = data.split(b"\r\n\r\n", 1)[0]
    return int(head.split(b" ", 2)[1]), data


@pytest.fixture(scope="module")
def server() -> Iterator[Uvicorn]:
    uvicorn = Uvicorn("tests.validation._apps:app", "--lifespan", "on", "--log-level", "warning")
    uvicorn.start()
    yield uvicorn
    uvicorn.stop()


def connect(server: Uvicorn) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


@pytest.mark.slow
def test_declared_10_gb_is_answered_413_without_sending_a_byte(server: Uvicorn) -> None:
    """The client sends only the head; the 413 comes back at once."""
    with connect(server) as sock:
        sock.sendall(
            b"POST /documents HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10737418240\r\n\r\n"
        )
        status, data = read_status(sock)
    assert status == 413
    assert b"application/problem+json" in data


@pytest.mark.slow
def test_expect_100_continue_gets_413_and_no_continue(server: Uvicorn) -> None:
    """With Expect: 100-continue, the refusal comes before the client sends the body."""
    with connect(server) as sock:
        sock.sendall(
            b"POST /documents HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 5000000\r\nExpect: 100-continue\r\n\r\n"
        )
        status, data = read_status(sock)
    assert status == 413
    assert b"100 Continue" not in data


@pytest.mark.slow
def test_200_mb_chunked_body_gets_413_with_server_memory_bounded(server: Uvicorn) -> None:
    """A client streams 200 MB, ignoring the answer: 413, server peak RSS up a few MiB."""
    assert server.proc is not None
    pid = server.proc.pid
    with connect(server) as sock:  # warm up: the middleware stack is built lazily
        sock.sendall(
            b"POST /documents HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\n\r\n{}"
        )
        assert read_status(sock)[0] == 200
    before = peak_rss(pid)
    frame = b"10000\r\n" + b" " * 65_536 + b"\r\n"
    sent = 0
    with connect(server) as sock:
        sock.sendall(
            b"POST /documents HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        try:
            while sent < 200 * MiB:
                sock.sendall(frame)
                sent += 65_536
        except OSError:
            pass  # the server may close once it has answered
        status, _ = read_status(sock)
    after = peak_rss(pid)
    assert status == 413
    assert sent >= 2 * MiB  # the client got well past the limit before any refusal stopped it
    growth = after - before
    assert growth < 8 * MiB, f"peak RSS grew {growth / MiB:.1f} MiB ({sent / MiB:.0f} MiB sent)"


@pytest.mark.slow
@pytest.mark.parametrize(
    "framing",
    [b"Content-Length: 0\r\n\r\n", b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"],
    ids=["content-length-0", "chunked-no-data"],
)
def test_an_empty_json_body_is_a_400_problem(server: Uvicorn, framing: bytes) -> None:
    """What uvicorn hands over for an empty body declared JSON: refused, never a 500."""
    with connect(server) as sock:
        sock.sendall(
            b"POST /documents HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n" + framing
        )
        status, data = read_status(sock)
    assert status == 400
    assert b"application/problem+json" in data
