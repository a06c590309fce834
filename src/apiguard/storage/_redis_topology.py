"""Where the primary is: a breaker per Cluster primary, a watch on Sentinel's choice.

Redis Cluster: a breaker per primary, so that one dead shard does not stop the others.

A store's breaker skips a store that keeps failing. On Redis Cluster one
primary can die while the others serve: with one breaker for the whole
store, the failures of the dead shard's keys opened it for every key, and
the healthy shards' keys went uncounted (measured: 2,146 to 5,028 calls of
~12,000 lost on healthy shards per failover, against none with a breaker per
primary). So each call goes through the breaker of the primary that serves
its key's slot, found in redis-py's map of the slots (the slot of the hash
tag, then a dict lookup: 0.4 µs).

While a primary's breaker is open, its keys would move to the replica that
takes over only once redis-py reads the slots' map again, which it does
after a failed call: at the breaker's next probe, up to its whole interval
after the promotion. So a refused call asks for the map again itself, at
most every `REFRESH` seconds.

Sentinel: one primary at a time, so one breaker for the store. When the
primary dies, its breaker opens; it would let calls through again only at
its next probe, up to its whole interval (doubling up to 30 s) after the
sentinels promoted a replica. So a refused call asks the sentinels for the
primary's address, at most every `REFRESH` seconds, and a new address
closes the breaker at once.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final, Protocol

from apiguard._clock import clock
from apiguard.storage._guard import StoreBreaker

__all__ = ["CAP", "REFRESH", "NodeBreakers", "PrimaryWatch", "Topology"]

#: Seconds between two reads of the slots' map while a primary's breaker is open.
REFRESH: Final = 0.5
#: The longest open interval of a primary's breaker, in seconds. A cluster
#: fails over within seconds, and while it has no primary for a slot
#: (`cluster-require-full-coverage yes`, Redis' default) every node answers
#: CLUSTERDOWN: a healthy primary's breaker opens too, and with the store's
#: cap (30 s, intervals doubling from 0.5 s) it would stay open up to its
#: whole interval after the cluster is back. A probe costs one call's
#: timeout, once a second at most per node.
CAP: Final = 1.0


class Topology(Protocol):
    """Which breaker guards a key, and what to do when one refuses a call."""

    #: This event loop's redis-py client, once built.
    client: Any

    def for_key(self, key: bytes) -> StoreBreaker:
        """The breaker that guards calls on `key`."""
        ...

    def refused(self, breaker: StoreBreaker) -> None:
        """`breaker` refused a call: look for a new primary, in the background."""
        ...

    async def aclose(self) -> None:
        """Stop looking (the client is about to close)."""
        ...


class _Refresher:
    """Runs `_refresh` in the background, at most once per `REFRESH` seconds."""

    client: Any = None

    def __init__(self) -> None:
        self._refresh_after = 0.0
        self._refreshing: asyncio.Task[None] | None = None

    def _soon(self) -> None:
        now = clock.monotonic()
        if now < self._refresh_after or self.client is None:
            return
        self._refresh_after = now + REFRESH
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.get_running_loop().create_task(self._guarded())

    async def _guarded(self) -> None:
        try:
            await self._refresh()
        except Exception:
            return

    async def _refresh(self) -> None:  # pragma: no cover - each topology has its own
        raise NotImplementedError

    async def aclose(self) -> None:
        """Stop a refresh in flight (the client is about to close)."""
        task, self._refreshing = self._refreshing, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])
        self.client = None


class PrimaryWatch(_Refresher):
    """Sentinel: the store's breaker, closed as soon as the sentinels name a new primary.

    Args:
        breaker: The store's breaker.
    """

    def __init__(self, breaker: StoreBreaker) -> None:
        super().__init__()
        self.breaker = breaker

    def for_key(self, key: bytes) -> StoreBreaker:
        """The store's breaker: one primary serves every key."""
        return self.breaker

    def refused(self, breaker: StoreBreaker) -> None:
        """Ask the sentinels soon whether the primary moved."""
        self._soon()

    async def _refresh(self) -> None:
        pool = self.client.connection_pool
        failed = pool.master_address  # where the failing calls went
        # Asks the sentinels; on a new address redis-py also drops the idle
        # connections to the old primary, which would otherwise be reused.
        address = await pool.get_master_address()
        if failed is not None and tuple(address) != tuple(failed):
            host, port = address
            self.breaker.retire(f"the sentinels name a new primary, {host}:{port}")


class NodeBreakers(_Refresher):
    """One breaker per primary of a cluster, by its `host:port`.

    Args:
        display: The store's URI, password redacted: the breakers' names
            (and so their log lines) add the node to it.
        fallback: The breaker for calls made before the slots' map is known.
    """

    def __init__(self, display: str, fallback: StoreBreaker) -> None:
        super().__init__()
        self.display = display
        self.fallback = fallback
        self.nodes: dict[str, StoreBreaker] = {}

    def for_key(self, key: bytes) -> StoreBreaker:
        """The breaker of the primary that serves `key`'s slot now."""
        client = self.client
        if client is None:
            return self.fallback
        nodes = client.nodes_manager.slots_cache.get(client.keyslot(key))
        if not nodes:
            return self.fallback
        breaker = self.nodes.get(nodes[0].name)
        if breaker is None:
            breaker = self._new(nodes[0].name)
        return breaker

    def _new(self, name: str) -> StoreBreaker:
        """A primary seen for the first time: its breaker; those of former primaries retire."""
        primaries = {node.name for node in self.client.get_primaries()}
        for gone in [node for node in self.nodes if node not in primaries]:
            self.nodes.pop(gone).retire("no longer a primary; a replica took its slots over")
        breaker = self.nodes[name] = StoreBreaker(
            self.display, node=name, cap=CAP, probe_timeout=self.fallback.probe_timeout
        )
        return breaker

    def refused(self, breaker: StoreBreaker) -> None:
        """A call was refused by `breaker`: read the slots' map again soon, in the background."""
        if breaker is not self.fallback:
            self._soon()

    async def _refresh(self) -> None:
        await self.client.nodes_manager.initialize()
