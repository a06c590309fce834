"""Failover timelines: what two apps answer while a Redis Cluster or Sentinel fails over.

`python -m benchmarks.failover [scenario ...]`, scenarios:

- `cluster`: a Cluster primary killed (`cluster-require-full-coverage no`);
- `cluster-full`: the same with Redis' default, full coverage;
- `sentinel`: the Sentinel primary killed;
- `sentinel-freeze`: the primary frozen (SIGSTOP) until the sentinels have
  promoted a replica, then thawed: for a moment two nodes take writes.

Each starts its own servers (3 primaries with a replica each,
`cluster-node-timeout` 1000 ms; or a primary, 2 replicas and 3 sentinels,
`down-after-milliseconds` 1000), and drives two apps at once on the store,
one failing open and one failing closed (store timeout 0.25 s), from 16
workers, each with keys of its own. It prints, per second from the fault,
what each app answered (counted, or not: `open` served uncounted, `503`),
split by the keys of the killed shard and the others on Cluster; the
longest request; when requests were counted again; and, on Sentinel, how
many acknowledged increments the new primary does not have.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator

from tests._cluster import RedisCluster
from tests._sentinel import RedisSentinel
from tests.ratelimit._failover import LOAD_LIMIT, Load, Record, failover_app
from tests.ratelimit._helpers import clear_of_window_edge

from apiguard.storage._keys import tag

SCENARIOS = ("cluster", "cluster-full", "sentinel", "sentinel-freeze")
MODES = ("fail-open", "fail-closed")
KEYS = [f"client-{n}" for n in range(64)]


def _answer(record: Record) -> str:
    if record.status == 200 and record.reason is None:
        return "counted"
    return "open" if record.status == 200 else str(record.status)


def _timeline(records: list[Record], fault: float, group: Callable[[str], str]) -> str:
    """Per second from the fault: answers per fail mode and key group."""
    cells: dict[tuple[int, str], collections.Counter[str]] = collections.defaultdict(
        collections.Counter
    )
    columns = sorted(
        {(r.mode, group(r.key)) for r in records}, key=lambda c: (MODES.index(c[0]), c[1])
    )
    for record in records:
        second = int((record.start - fault) // 1)
        cells[second, f"{record.mode} {group(record.key)}"][_answer(record)] += 1
    seconds = sorted({second for second, _ in cells})
    names = [f"{mode} {name}" for mode, name in columns]
    lines = [
        "| s from the fault | " + " | ".join(names) + " |",
        "|---:" + "|---" * len(names) + "|",
    ]
    for second in seconds:
        row = []
        for name in names:
            counts = cells.get((second, name), collections.Counter())
            row.append(", ".join(f"{kind} {n}" for kind, n in sorted(counts.items())) or "-")
        lines.append(f"| {second} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def _after(records: list[Record], fault: float, keys: set[str] | None = None) -> str:
    """When each app last answered uncounted for `keys`, from the fault."""
    out = []
    for mode in MODES:
        missed = [
            r.start - fault
            for r in records
            if r.mode == mode and _answer(r) != "counted" and (keys is None or r.key in keys)
        ]
        if missed:
            out.append(
                f"{mode}: {len(missed)} uncounted, from {min(missed):.2f} s "
                f"to {max(missed):.2f} s after the fault"
            )
        else:
            out.append(f"{mode}: none uncounted")
    return "; ".join(out)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    logging.getLogger("apiguard.storage").setLevel(logging.ERROR)
    try:
        yield
    finally:
        logging.getLogger("apiguard.storage").setLevel(logging.NOTSET)


async def _cluster(full_coverage: bool) -> str:
    cluster = RedisCluster(full_coverage=full_coverage, node_timeout_ms=1000)
    cluster.start()
    try:
        victim = cluster.primary_for_slot(0)
        sick = {k for k in KEYS if cluster.primary_for(tag(k)) is victim}
        apps = {mode: failover_app(cluster.url, mode, []) for mode in MODES}
        async with Load(apps, KEYS, workers=16) as load:
            await load.until_counted(KEYS)
            await asyncio.sleep(1.0)
            fault = load.now()
            replicas = cluster.replicas_of(victim)
            await asyncio.to_thread(cluster.kill_primary, victim)
            await asyncio.to_thread(cluster.wait_promoted, victim, replicas)
            ok = load.now() - fault
            await load.until_counted(sorted(sick))
            await asyncio.sleep(2.0)
        records = load.records
    finally:
        cluster.stop()
    healthy = set(KEYS) - sick
    slowest = max(records, key=lambda r: r.elapsed)
    coverage = "yes (Redis' default)" if full_coverage else "no"
    return "\n".join(
        [
            f"### Cluster primary killed, cluster-require-full-coverage {coverage}",
            "",
            f"{len(sick)} of {len(KEYS)} keys on the killed primary's shard; every node said "
            f"cluster_state:ok again {ok:.1f} s after the kill. Longest request: "
            f"{slowest.elapsed * 1000:.0f} ms ({slowest.mode}, status {slowest.status}).",
            "",
            f"- killed shard's keys: {_after(records, fault, sick)}",
            f"- other shards' keys: {_after(records, fault, healthy)}",
            "",
            _timeline(records, fault, lambda k: "killed shard" if k in sick else "other shards"),
        ]
    )


async def _sentinel(freeze: bool) -> str:
    sentinel = RedisSentinel()
    sentinel.start()
    try:
        apps = {mode: failover_app(sentinel.url, mode, []) for mode in MODES}
        async with Load(apps, KEYS, workers=16) as load:
            await load.until_counted(KEYS)
            await asyncio.sleep(1.0)
            fault = load.now()
            old = sentinel.primary()
            if freeze:
                await asyncio.to_thread(old.freeze)
                new = await asyncio.to_thread(lambda: sentinel.wait_agreed(old=old))
                thawed = load.now() - fault
                await asyncio.to_thread(old.thaw)
            else:
                _, new = await asyncio.to_thread(sentinel.fail_over)
            agreed = load.now() - fault
            await load.until_counted(KEYS)
            await asyncio.sleep(2.0)
            await load.stop()
            stored = {
                (mode, key): LOAD_LIMIT - await load.remaining(mode, key) - 1
                for mode in MODES
                for key in KEYS
            }
        records = load.records
    finally:
        sentinel.stop()
    acknowledged = collections.Counter((r.mode, r.key) for r in records if _answer(r) == "counted")
    unknown = collections.Counter(
        (r.mode, r.key) for r in records if _answer(r) != "counted" and r.elapsed >= 0.2
    )
    lost = dict.fromkeys(MODES, 0)
    for (mode, key), count in acknowledged.items():
        lost[mode] += max(count - stored[mode, key], 0)
    slowest = max(records, key=lambda r: r.elapsed)
    what = (
        f"Primary frozen (SIGSTOP); the sentinels agreed on {new.port} {agreed:.1f} s after "
        f"the fault; the old primary thawed then ({thawed:.1f} s)."
        if freeze
        else f"Primary killed; the sentinels agreed on {new.port} {agreed:.1f} s after the kill."
    )
    parts = []
    for mode in MODES:
        acked = sum(n for (m, _), n in acknowledged.items() if m == mode)
        maybe = sum(n for (m, _), n in unknown.items() if m == mode)
        parts.append(
            f"{mode}: {lost[mode]} of {acked} acknowledged increments missing on the new "
            f"primary ({maybe} more timed out: counted or not, unknown)"
        )
    totals = "; ".join(parts)
    title = "frozen, then thawed" if freeze else "killed"
    return "\n".join(
        [
            f"### Sentinel primary {title}",
            "",
            f"{what} Longest request: {slowest.elapsed * 1000:.0f} ms ({slowest.mode}, "
            f"status {slowest.status}).",
            "",
            f"- {_after(records, fault)}",
            f"- lost increments: {totals}",
            "",
            _timeline(records, fault, lambda k: "all keys"),
        ]
    )


async def run(scenario: str) -> str:
    clear_of_window_edge(3600, 60)
    with _quiet():
        if scenario.startswith("cluster"):
            return await _cluster(full_coverage=scenario == "cluster-full")
        return await _sentinel(freeze=scenario == "sentinel-freeze")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.failover", description=__doc__)
    parser.add_argument("scenarios", nargs="*", help=f"any of {', '.join(SCENARIOS)} (all)")
    args = parser.parse_args(argv)
    for unknown in set(args.scenarios) - set(SCENARIOS):
        parser.error(f"no scenario {unknown!r}: choose from {', '.join(SCENARIOS)}")
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"# Failover timelines ({started}, Python {sys.version.split()[0]})\n")
    for scenario in args.scenarios or SCENARIOS:
        print(asyncio.run(run(scenario)), end="\n\n", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
