"""`python -m benchmarks [suite ...] [--quick] [--rounds N] [--requests N] [--json FILE]`.

Full mode (the default) times the suites named (`all` for every suite;
none named: the published ones, `stack growth server`) and prints their
tables and their targets' verdicts; `--json` keeps every sample with the
machine and the versions (for `benchmarks.charts` and `benchmarks.compare`),
`--markdown` the printed report. Quick mode (`--quick`) runs every case of
the suites named (none named: every suite) once or a few times, at the
smallest sizes, checks each answers as expected (status and headers), and
exits non-zero if one does not: a smoke test, never a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks.driver import QUICK_ENV, run_cases, table, to_json
from benchmarks.machine import describe, load_average, machine

SUITES = [
    "stack",
    "growth",
    "server",
    "core",
    "routing",
    "auth",
    "ratelimit",
    "engines",
    "validation",
    "ipfilter",
    "idempotency",
    "resilience",
    "tracing",
]
#: The suites whose figures the docs publish (`make bench` runs them).
PUBLISHED = ["stack", "growth", "server"]
DEFAULT_ROUNDS, DEFAULT_REQUESTS = 15, 5000


def _run_suite(name: str, args: argparse.Namespace) -> tuple[str, Any, list[Any]]:
    """One suite: its report text, what goes in the JSON, its targets."""
    if name == "server":
        from benchmarks import server

        report = server.run_report(
            quick=args.quick, runs=args.server_runs, duration=args.server_duration
        )
        saved = {k: v for k, v in report.items() if k not in ("markdown", "targets")}
        return report["markdown"], saved, report["targets"]
    module = importlib.import_module(f"benchmarks.{name}")
    rounds = args.rounds or getattr(module, "ROUNDS", DEFAULT_ROUNDS)
    requests = args.requests or getattr(module, "REQUESTS", DEFAULT_REQUESTS)
    if args.quick:
        rounds, requests = 1, 3
    # A suite whose cases need processes of their own (global providers) runs itself.
    runner = getattr(module, "run_suite", None)
    if runner is not None:
        results = runner(rounds=rounds, requests=requests)
    else:
        results = asyncio.run(run_cases(module.cases(), rounds=rounds, requests=requests))
    text = [table(results, f"{module.TITLE} ({rounds} rounds x {requests})")]
    summary = getattr(module, "summary", None)  # a suite's verdict on its targets
    if summary is not None and (verdicts := summary(results)):
        text.append(verdicts)
    found = getattr(module, "targets", None)
    targets = found(results) if found is not None else []
    extra = getattr(module, "extra", None)  # figures beside the timings (memory held)
    saved: Any = to_json(results)
    if extra is not None:
        saved = {"cases": saved, **extra(results)}
    return "\n\n".join(text), saved, targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "suites",
        nargs="*",
        metavar="suite",
        help=f"which suites to run: {', '.join(SUITES)}; 'published' "
        f"({', '.join(PUBLISHED)}) or 'all'; default: the published ones, or all with --quick",
    )
    parser.add_argument("--quick", action="store_true", help="every case once: a smoke test")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default: the suite's)")
    parser.add_argument("--requests", type=int, help="requests per case per round")
    parser.add_argument("--server-runs", type=int, default=3, help="interleaved server runs")
    parser.add_argument("--server-duration", type=int, default=10, help="seconds of load a run")
    parser.add_argument("--json", type=Path, help="write every sample, machine and verdicts here")
    parser.add_argument("--markdown", type=Path, help="write the printed report here too")
    args = parser.parse_args(argv)
    groups = {"published": PUBLISHED, "all": SUITES}
    names = [s for n in args.suites for s in groups.get(n, [n])]
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        parser.error(f"unknown suites {unknown}; known: {', '.join(SUITES)}, published, all")
    names = list(dict.fromkeys(names)) or (SUITES if args.quick else PUBLISHED)
    if args.quick:
        os.environ[QUICK_ENV] = "1"  # the suites and their subprocesses build small cases
    info = machine()
    mode = "quick mode: every case checked, timings meaningless" if args.quick else "full mode"
    report = [f"# apiguard benchmarks ({mode})", "", describe(info)]
    document: dict[str, Any] = {
        "environment": describe(info),
        "machine": info,
        "quick": args.quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "suites": {},
        "targets": [],
    }
    failed: list[str] = []
    print("\n".join(report) + "\n", flush=True)
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            text, saved, targets = _run_suite(name, args)
        except Exception:
            failed.append(name)
            text = f"## {name}: FAILED\n\n```\n{traceback.format_exc()}```"
            saved, targets = None, []
        took = time.monotonic() - started
        print(f"  {name}: {took:.0f} s", file=sys.stderr, flush=True)
        print(text, end="\n\n", flush=True)
        report += ["", text]
        if saved is not None:
            document["suites"][name] = saved
        document["targets"] += [t.to_json() for t in targets]
        document["machine"]["load_average_end"] = load_average()
        # Written after every suite: a long run that fails late keeps what it measured.
        if args.json:
            args.json.write_text(json.dumps(document, indent=1))
        if args.markdown:
            args.markdown.write_text("\n".join(report) + "\n")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    if args.quick:
        print(f"quick mode: every case of {len(names)} suites answered as expected")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
