"""A real Redis Sentinel set-up for the tests: a primary, its replicas, three sentinels.

Each sentinel is `redis-server <its own config> --sentinel` (Sentinel
rewrites its file), told of its peers and of the replicas up front (`sentinel
known-sentinel`, `known-replica`, as Sentinel writes them itself) so that
they agree within a second rather than after a few hello rounds. Failures to
start are a `RuntimeError` with the command and its output, never a skip.
"""

from __future__ import annotations

import secrets
from typing import Any

from tests._servers import (
    RedisServer,
    poll,
    redis_server_binary,
    remove_dir,
    start_all,
    temporary_dir,
)

__all__ = ["RedisSentinel"]


def _fields(reply: Any) -> dict[str, str]:
    """A sentinel's state reply as text fields (redis-py makes a dict of some, with types)."""
    if isinstance(reply, dict):
        return {str(name): str(value) for name, value in reply.items()}
    return dict(zip(reply[::2], reply[1::2], strict=True))


class RedisSentinel:
    """A primary with `replicas` replicas, watched by `sentinels` sentinels, in a temporary dir.

    Args:
        service: The name the sentinels know the primary by.
        replicas: Replicas of the primary.
        sentinels: Sentinel processes.
        quorum: Sentinels that must find the primary down before a failover.
        down_after_ms: `down-after-milliseconds`: silence that marks a node down.
        failover_timeout_ms: `failover-timeout` (a second failover of the same
            primary waits twice as long).
        binary: The redis-server to run.
    """

    def __init__(
        self,
        *,
        service: str = "mymaster",
        replicas: int = 2,
        sentinels: int = 3,
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
        binary: str | None = None,
    ) -> None:
        self.binary = binary or redis_server_binary()
        self.service = service
        self.dir = temporary_dir("apiguard-sentinel-")
        # Replicas sync at once; the default waits 5 s for more of them.
        fast_sync = ["--repl-diskless-sync-delay", "0"]
        first = RedisServer(self.binary, args=fast_sync)
        self.data = [first] + [
            RedisServer(self.binary, args=[*fast_sync, "--replicaof", "127.0.0.1", str(first.port)])
            for _ in range(replicas)
        ]
        self.sentinels = [RedisServer(self.binary) for _ in range(sentinels)]
        ids = [secrets.token_hex(20) for _ in self.sentinels]
        for index, sentinel in enumerate(self.sentinels):
            lines = [
                f"sentinel myid {ids[index]}",
                f"sentinel monitor {service} 127.0.0.1 {first.port} {quorum}",
                f"sentinel down-after-milliseconds {service} {down_after_ms}",
                f"sentinel failover-timeout {service} {failover_timeout_ms}",
                f"sentinel parallel-syncs {service} 1",
            ]
            lines += [
                f"sentinel known-replica {service} 127.0.0.1 {replica.port}"
                for replica in self.data[1:]
            ]
            lines += [
                f"sentinel known-sentinel {service} 127.0.0.1 {peer.port} {ids[other]}"
                for other, peer in enumerate(self.sentinels)
                if other != index
            ]
            config = self.dir / f"sentinel-{sentinel.port}.conf"
            config.write_text("\n".join(lines) + "\n")
            sentinel.config = config
            sentinel.workdir = self.dir
            sentinel.args = ["--sentinel"]

    def __repr__(self) -> str:
        return (
            f"RedisSentinel(data={[n.port for n in self.data]}, "
            f"sentinels={[s.port for s in self.sentinels]})"
        )

    @property
    def url(self) -> str:
        """`redis+sentinel://` with every sentinel, and the service name as the path."""
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}"

    def start(self, timeout: float = 30.0) -> None:
        """Start the data nodes, then the sentinels; wait until they agree on the primary."""
        try:
            start_all(self.data)
            start_all(self.sentinels)
            self.wait_agreed(self.data[0], timeout=timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Kill every process (by process group) and remove the directory."""
        for server in [*self.sentinels, *self.data]:
            server.kill()
        remove_dir(self.dir)

    # --- what the sentinels say -----------------------------------------------------

    def node(self, port: int) -> RedisServer:
        for server in self.data:
            if server.port == port:
                return server
        raise LookupError(f"no data node of this set-up listens on {port}")

    def named(self, sentinel: RedisServer) -> RedisServer:
        """The primary that `sentinel` names."""
        _, port = sentinel.query("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        return self.node(int(port))

    def primary(self) -> RedisServer:
        """The primary the live sentinels name (they must agree)."""
        named = {self.named(sentinel).port for sentinel in self.sentinels if sentinel.alive}
        if len(named) != 1:
            raise RuntimeError(f"the sentinels name different primaries: {sorted(named)}")
        return self.node(named.pop())

    def replicas(self) -> list[RedisServer]:
        """The live data nodes that are replicas now."""
        return [n for n in self.data if n.alive and n.query("ROLE")[0] == "slave"]

    def _not_agreed(self, expected: RedisServer | None, old: RedisServer | None) -> str | None:
        live_sentinels = [s for s in self.sentinels if s.alive]
        # A primary that a failover demoted turns replica only when the
        # sentinels next read its INFO (every 10 s): not waited for.
        live_data = [n for n in self.data if n.alive and n is not old]
        named = {self.named(sentinel).port for sentinel in live_sentinels}
        if len(named) != 1:
            return f"the sentinels name {sorted(named)}"
        port = named.pop()
        if expected is not None and port != expected.port:
            return f"the sentinels name {port}, not {expected.port}"
        if old is not None and port == old.port:
            return f"the sentinels still name {port}"
        primary = self.node(port)
        if primary.query("ROLE")[0] != "master":
            return f"{port} is not a primary yet"
        for node in live_data:
            if node is primary:
                continue
            role = node.query("ROLE")
            if role[0] != "slave" or int(role[2]) != port or role[3] != "connected":
                return f"{node.port} does not replicate {port} yet ({role[:4]})"
        for sentinel in live_sentinels:
            master = _fields(sentinel.query("SENTINEL", "MASTER", self.service))
            if master["flags"] != "master":
                return f"sentinel {sentinel.port} flags the primary {master['flags']}"
            if int(master["num-other-sentinels"]) < len(self.sentinels) - 1:
                return f"sentinel {sentinel.port} knows {master['num-other-sentinels']} others"
            seen = {
                int(fields["port"])
                for fields in map(_fields, sentinel.query("SENTINEL", "REPLICAS", self.service))
                if fields["flags"] == "slave"
            }
            missing = {n.port for n in live_data if n is not primary} - seen
            if missing:
                return f"sentinel {sentinel.port} does not see replicas {sorted(missing)} yet"
        return None

    def wait_agreed(
        self,
        expected: RedisServer | None = None,
        *,
        old: RedisServer | None = None,
        timeout: float = 30.0,
    ) -> RedisServer:
        """Wait until every live sentinel names one primary and sees every live replica.

        Args:
            expected: The primary they must name, if known.
            old: A primary they must no longer name (after a failover).
            timeout: Seconds to wait.

        Returns:
            The primary they name, whose live replicas replicate it.

        Raises:
            TimeoutError: with why they do not agree yet.
        """
        poll(
            lambda: self._not_agreed(expected, old),
            timeout=timeout,
            what="the sentinels do not agree",
        )
        return self.primary()

    # --- faults ---------------------------------------------------------------------

    def fail_over(
        self, *, kill: bool = True, timeout: float = 30.0
    ) -> tuple[RedisServer, RedisServer]:
        """Move the primary: kill it (the sentinels find it down) or `SENTINEL FAILOVER`.

        Returns:
            `(old, new)` once every live sentinel names the new primary and
            the other live replicas replicate it (an old primary left alive
            is turned into a replica later, when the sentinels next read it).
        """
        old = self.primary()
        if kill:
            old.kill()
        else:
            self.sentinels[0].query("SENTINEL", "FAILOVER", self.service)
        return old, self.wait_agreed(old=old, timeout=timeout)

    def flush(self) -> None:
        """Thaw every process, FLUSHALL the primary; fail loudly on a dead process."""
        for server in [*self.data, *self.sentinels]:
            if not server.alive:
                msg = (
                    f"{server.port} of the session sentinel set-up is dead: a test that "
                    "kills nodes needs a set-up of its own (make_sentinel)"
                )
                raise RuntimeError(msg)
            server.thaw()
        self.primary().query("FLUSHALL")
