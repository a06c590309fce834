"""What the Redis server spends running each rate-limit script, before (issue 5) and now.

`server_costs()` calls each strategy's script (with one quota and with two)
one call after the other and reads the server's own time per call from
`INFO commandstats`, beside the scripts as they were at issue 5
(`benchmarks._scripts_issue5`). The ratelimit suite's summary prints it.
"""

from __future__ import annotations

import time
from typing import Any

from apiguard.storage import Quota


def server_costs(url: str, calls: int = 2000) -> str:
    """Server time per call of each script, before (issue 5) and now: INFO commandstats.

    Calls one after the other, as the layer makes them, on a fresh key
    each window; `usec_per_call` is what the server spent running the
    command (the script's own commands included), not the round trip.
    """
    import redis

    from apiguard.storage import _scripts
    from benchmarks import _scripts_issue5 as before

    client = redis.Redis.from_url(url)
    hour = 3_600_000
    big = 10**9

    def per_call(command: str, run: Any) -> float:
        """Server µs per `run()`: the sum over the commands it sends (space-separated)."""
        client.config_resetstat()
        for _ in range(calls):
            run()
        stats = client.info("commandstats")
        return sum(float(stats[f"cmdstat_{c}"]["usec_per_call"]) for c in command.split())

    def script(text: str, keys: list[str], args: list[int]) -> float:
        sha = client.script_load(text)
        return per_call("evalsha", lambda: client.evalsha(sha, len(keys), *keys, *args))

    from apiguard.storage._keys import tag
    from apiguard.storage._scripts import _fixed_keys, _sliding_args, _ttl_ms

    rows = []
    for strategy, old in before.SCRIPTS.items():  # the three strategies, in their order
        new = _scripts.SCRIPTS[strategy]
        for count in (1, 2):
            quotas = [Quota(f"q{i}", big, 3600) for i in range(count)]
            old_keys = [f"{{k}}:old:{i}" for i in range(count)]
            client.flushdb()
            was = script(old, old_keys, [1] + [big, hour] * count)
            now = time.time()
            if strategy == "fixed-window" and count == 1:
                # No script: SET ... PX ... NX and INCRBY, in one write.
                name = _fixed_keys(tag("k"), quotas, now)[0][0]

                def hit(name: str = name) -> None:
                    client.set(name, 0, px=hour, nx=True)
                    client.incrby(name, 1)

                cost = per_call("set incrby", hit)
                what = "SET NX + INCRBY, no script"
            elif strategy == "fixed-window":
                keys, resets = _fixed_keys(tag("k"), quotas, now)
                args = [1]
                for quota, reset in zip(quotas, resets, strict=True):
                    args += (quota.amount, _ttl_ms(reset))
                cost, what = script(new, keys, args), "EVALSHA"
            elif strategy == "sliding-window-counter":
                cost, what = script(new, *_sliding_args(tag("k"), quotas, 1, now)), "EVALSHA"
            else:
                keys = [f"{{k}}:new:{i}" for i in range(count)]
                cost, what = script(new, keys, [1] + [big, hour] * count), "EVALSHA"
            rows.append(f"| {strategy} | {count} | {was:.2f} | {cost:.2f} ({what}) |")
    ping = per_call("ping", client.ping)
    client.flushdb()
    client.close()
    return "\n".join(
        [
            f"Server time per call (INFO commandstats usec_per_call, {calls} calls one after "
            f"the other; PING {ping:.2f} µs):",
            "",
            "| strategy | quotas | issue 5 µs | now µs |",
            "|---|---:|---:|---:|",
            *rows,
        ]
    )
