"""A real Redis Cluster for the tests: primaries with a replica each, on free loopback ports.

Made as an operator makes one: `redis-server --cluster-enabled yes` per node,
then `redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes`.
Failures to start are a `RuntimeError` with the command and its output,
never a skip.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Sequence

from tests._servers import (
    RedisServer,
    free_port,
    poll,
    redis_cli_binary,
    redis_server_binary,
    redis_version,
    remove_dir,
    start_all,
    temporary_dir,
)

__all__ = ["SLOTS", "RedisCluster", "cluster_ports"]

SLOTS = 16384


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cluster_ports(count: int, *, bus_option: bool) -> list[tuple[int, int]]:
    """`count` (port, bus port) pairs, all free and distinct.

    With `cluster-port` (Redis 7+) the bus port is a free port of its own: the
    default, port + 10000, overflows 65535 for a port from the ephemeral
    range. Without it, ports are drawn until port + 10000 is free too.
    """
    pairs: list[tuple[int, int]] = []
    taken: set[int] = set()
    while len(pairs) < count:
        port = free_port()
        if port in taken:
            continue
        if bus_option:
            bus = free_port()
        else:
            bus = port + 10000
            if bus > 65535 or not _port_is_free(bus):
                continue
        if bus in taken or bus == port:
            continue
        taken.update((port, bus))
        pairs.append((port, bus))
    return pairs


class RedisCluster:
    """`primaries` primaries with `replicas` replicas each, in a temporary directory.

    Args:
        primaries: Primary nodes (3, the least Redis accepts).
        replicas: Replicas per primary.
        node_timeout_ms: `cluster-node-timeout`: how long a node may be
            unreachable before it is failed over.
        full_coverage: `cluster-require-full-coverage`: with `True` (Redis'
            default) the whole cluster refuses queries while a slot has no
            live primary.
        binary: The redis-server to run.
    """

    def __init__(
        self,
        *,
        primaries: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 1000,
        full_coverage: bool = True,
        binary: str | None = None,
    ) -> None:
        self.binary = binary or redis_server_binary()
        self.cli = redis_cli_binary(self.binary)
        self.replicas = replicas
        self.dir = temporary_dir("apiguard-cluster-")
        bus_option = redis_version(self.binary) >= (7, 0, 0)
        self.nodes: list[RedisServer] = []
        for port, bus in cluster_ports(primaries * (1 + replicas), bus_option=bus_option):
            args = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{port}.conf",
                "--cluster-node-timeout",
                str(node_timeout_ms),
                "--cluster-require-full-coverage",
                "yes" if full_coverage else "no",
                # A replica may take over however long its link was down:
                # on a loaded machine the default factor (10) can refuse it.
                "--cluster-replica-validity-factor",
                "0",
                # Replicas sync at once; the default waits 5 s for more of them.
                "--repl-diskless-sync-delay",
                "0",
            ]
            if bus_option:
                args += ["--cluster-port", str(bus)]
            # A directory each: a replica writes the RDB it receives there.
            workdir = self.dir / str(port)
            workdir.mkdir()
            self.nodes.append(RedisServer(self.binary, port, args, workdir=workdir))

    def __repr__(self) -> str:
        return f"RedisCluster(ports={[node.port for node in self.nodes]})"

    @property
    def url(self) -> str:
        """`redis+cluster://` with every node as a seed."""
        seeds = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"redis+cluster://{seeds}"

    def start(self, timeout: float = 30.0) -> None:
        """Start every node side by side, create the cluster, wait until it serves every slot."""
        try:
            start_all(self.nodes)
            command = [
                self.cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ]
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                msg = f"{' '.join(command)} did not finish in {timeout}s:\n{exc.stdout}"
                raise RuntimeError(msg) from None
            if done.returncode != 0 or "All 16384 slots covered" not in done.stdout:
                msg = f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
                raise RuntimeError(msg)
            self.wait_ok(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Kill every node (by process group) and remove the directory."""
        for node in self.nodes:
            node.kill()
        remove_dir(self.dir)

    # --- the cluster's own view ----------------------------------------------------

    def live(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.alive]

    def node(self, port: int) -> RedisServer:
        for node in self.nodes:
            if node.port == port:
                return node
        raise LookupError(f"no node of this cluster listens on {port}")

    def primaries(self) -> list[RedisServer]:
        """The live nodes that are primaries now."""
        return [node for node in self.live() if node.query("ROLE")[0] == "master"]

    def replicas_of(self, primary: RedisServer) -> list[RedisServer]:
        """The live nodes that replicate `primary` now."""
        found = []
        for node in self.live():
            role = node.query("ROLE")
            if role[0] == "slave" and int(role[2]) == primary.port:
                found.append(node)
        return found

    def slot(self, key: str | bytes) -> int:
        """The hash slot of `key`, as the cluster computes it."""
        return int(self.live()[0].query("CLUSTER", "KEYSLOT", key))

    def primary_for_slot(self, slot: int) -> RedisServer:
        """The primary that serves `slot` now, as a live node sees it."""
        for start, end, primary, *_ in self.live()[0].query("CLUSTER", "SLOTS"):
            if int(start) <= slot <= int(end):
                return self.node(int(primary[1]))
        raise LookupError(f"no node serves slot {slot}")

    def primary_for(self, key: str | bytes) -> RedisServer:
        """The primary that serves `key`'s slot now."""
        return self.primary_for_slot(self.slot(key))

    def _not_ok(self) -> str | None:
        """Why the cluster is not yet healthy, or `None`."""
        live = self.live()
        ports = {node.port for node in live}
        for node in live:
            info = node.query("CLUSTER", "INFO")
            fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
            if fields.get("cluster_state") != "ok":
                return f"node {node.port}: cluster_state {fields.get('cluster_state')}"
            if int(fields.get("cluster_slots_ok", 0)) != SLOTS:
                return f"node {node.port}: {fields.get('cluster_slots_ok')} slots ok"
            for _, _, primary, *_ in node.query("CLUSTER", "SLOTS"):
                if int(primary[1]) not in ports:
                    return f"node {node.port} sends slots to dead node {primary[1]}"
            role = node.query("ROLE")
            if role[0] == "slave" and role[3] != "connected":
                return f"replica {node.port}: link to {role[2]} is {role[3]}"
        return None

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every live node says `cluster_state:ok`, with every slot on a live primary.

        And every live replica's link to its primary is up (so that it can
        take over).

        Raises:
            TimeoutError: with why it is not.
        """
        poll(self._not_ok, timeout=timeout, what="the cluster is not ok")

    # --- faults ---------------------------------------------------------------------

    def kill_primary(self, primary: RedisServer | None = None) -> RedisServer:
        """SIGKILL a primary (the one of slot 0 by default); returns it."""
        victim = primary or self.primary_for_slot(0)
        victim.kill()
        return victim

    def wait_promoted(
        self, old: RedisServer, replicas: Sequence[RedisServer], timeout: float = 30.0
    ) -> RedisServer:
        """Wait until one of `old`'s `replicas` is a primary and the cluster is ok again."""

        def promoted() -> str | None:
            if not any(r.alive and r.query("ROLE")[0] == "master" for r in replicas):
                return f"no replica of {old.port} is a primary yet"
            return self._not_ok()

        poll(promoted, timeout=timeout, what=f"no replica took over from {old.port}")
        return next(r for r in replicas if r.alive and r.query("ROLE")[0] == "master")

    def fail_over(
        self, primary: RedisServer | None = None, timeout: float = 30.0
    ) -> tuple[RedisServer, RedisServer]:
        """Kill a primary and wait until its replica serves its slots: `(old, new)`."""
        victim = primary or self.primary_for_slot(0)
        replicas = self.replicas_of(victim)
        self.kill_primary(victim)
        return victim, self.wait_promoted(victim, replicas, timeout)

    def flush(self) -> None:
        """Thaw every node, FLUSHALL every primary; fail loudly on a dead node."""
        for node in self.nodes:
            if not node.alive:
                msg = (
                    f"node {node.port} of the session cluster is dead: a test that kills "
                    "nodes needs a cluster of its own (make_cluster)"
                )
                raise RuntimeError(msg)
            node.thaw()
        for node in self.primaries():
            node.query("FLUSHALL")
