"""Compare two saved runs: what moved beyond the noise.

`python -m benchmarks.compare old.json new.json` (or `make bench-compare
A=old.json B=new.json`) reads two files written by `python -m benchmarks
--json FILE` and lists every case both have: its overhead over its baseline
(or its own time, for a case without one) before and after, and a verdict.
A case moved only when the change is larger than the noise of both runs:
the interquartile ranges of its per-round samples, whichever is wider, and
at least 0.5 µs (two runs on one machine an hour apart differ by about that
much with nothing changed). Server runs are compared by requests/s, the
noise being the wider of the two runs' spreads (fastest minus slowest run)
and at least 3 %. Targets whose verdict changed are listed first. Compare
ratios to the bare app, not raw µs, between machines.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

#: Moves smaller than this are never called a change (µs).
FLOOR_US = 0.5
#: Server runs: moves smaller than this share of requests/s are never a change.
FLOOR_RPS = 0.03


def _spread(samples: list[float]) -> float:
    if len(samples) < 4:
        return max(samples) - min(samples)
    low, _, high = statistics.quantiles(samples, n=4)
    return high - low


def _cases(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every in-process case, by `suite: case`; a suite's entry is a list, or `{"cases": ...}`."""
    found = {}
    for suite, saved in document.get("suites", {}).items():
        cases = saved.get("cases", []) if isinstance(saved, dict) else saved
        for case in cases:
            found[f"{suite}: {case['case']}"] = case
    return found


def _servers(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every server summary, by `server: app xN` (from `benchmarks` or `benchmarks.server`)."""
    saved = document.get("suites", {}).get("server") or document.get("server") or {}
    return {f"server: {s['app']} x{s['workers']}": s for s in saved.get("summaries", [])}


def compare(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, float, float, str]]:
    """`(case, before, after, verdict)` for every case of both runs."""
    before, after = _cases(old), _cases(new)
    rows = []
    for name in before.keys() & after.keys():
        a, b = before[name], after[name]
        value_a = a.get("overhead_us", a["median_us"])
        value_b = b.get("overhead_us", b["median_us"])
        noise = max(_spread(a["samples_us"]), _spread(b["samples_us"]), FLOOR_US)
        delta = value_b - value_a
        verdict = "same" if abs(delta) <= noise else ("slower" if delta > 0 else "faster")
        rows.append((name, value_a, value_b, verdict))
    servers_a, servers_b = _servers(old), _servers(new)
    for name in servers_a.keys() & servers_b.keys():
        a, b = servers_a[name], servers_b[name]
        noise = max(
            max(a["samples"]) - min(a["samples"]),
            max(b["samples"]) - min(b["samples"]),
            FLOOR_RPS * a["rps"],
        )
        delta = b["rps"] - a["rps"]
        verdict = "same" if abs(delta) <= noise else ("faster" if delta > 0 else "slower")
        rows.append((name + " (req/s)", a["rps"], b["rps"], verdict))
    order = {"slower": 0, "faster": 1, "same": 2}
    rows.sort(key=lambda row: (order[row[3]], row[0]))
    return rows


def verdicts(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Targets whose verdict changed: `(target, before, after)`."""
    before = {t["what"]: t for t in old.get("targets", [])}
    changed = []
    for target in new.get("targets", []):
        was = before.get(target["what"])
        if was is not None and was["met"] != target["met"]:
            changed.append((target["what"], was["verdict"], target["verdict"]))
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__)
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    args = parser.parse_args(argv)
    old, new = (json.loads(path.read_text()) for path in (args.old, args.new))
    print(f"before: {old['environment']}\nafter:  {new['environment']}\n")
    if old.get("quick") or new.get("quick"):
        print("**A quick-mode run: its timings are meaningless.**\n")
    changed = verdicts(old, new)
    if changed:
        print("| target | before | after |\n|---|---|---|")
        for what, was, now in changed:
            print(f"| {what} | {was} | {now} |")
        print()
    print("| case | before | after | change |")
    print("|---|---:|---:|---|")
    for name, a, b, verdict in compare(old, new):
        mark = f"**{verdict}** ({b - a:+.2f})" if verdict != "same" else "same"
        print(f"| {name} | {a:.2f} | {b:.2f} | {mark} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
