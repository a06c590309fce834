"""`python -m benchmarks [suite ...] [--rounds N] [--requests N] [--json FILE]`."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
from pathlib import Path

from benchmarks.driver import environment, run_cases, table, to_json

SUITES = [
    "core",
    "routing",
    "auth",
    "ratelimit",
    "engines",
    "validation",
    "ipfilter",
    "idempotency",
    "resilience",
    "stack",
    "tracing",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "suites",
        nargs="*",
        choices=[*SUITES, []][: len(SUITES)] or None,
        help=f"which suites to run (default: all of {', '.join(SUITES)})",
    )
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument("--requests", type=int, default=5000, help="requests per case per round")
    parser.add_argument("--json", type=Path, help="also write every sample to this file")
    args = parser.parse_args(argv)
    print(f"# apiguard benchmarks\n\n{environment()}; {args.rounds} rounds x {args.requests} ops\n")
    saved = {}
    for name in args.suites or SUITES:
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"running {name} ...", file=sys.stderr)
        # A suite whose cases need processes of their own (global providers) runs itself.
        runner = getattr(module, "run_suite", None)
        if runner is not None:
            results = runner(rounds=args.rounds, requests=args.requests)
        else:
            results = asyncio.run(
                run_cases(module.cases(), rounds=args.rounds, requests=args.requests)
            )
        print(table(results, module.TITLE), end="\n\n", flush=True)
        summary = getattr(module, "summary", None)  # a suite's verdict on its targets
        if summary is not None and (text := summary(results)):
            print(text, end="\n\n", flush=True)
        saved[name] = to_json(results)
    if args.json:
        args.json.write_text(json.dumps({"environment": environment(), "suites": saved}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
