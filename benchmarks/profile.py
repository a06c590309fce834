"""Profile one benchmark case: where its time goes, function by function.

`python -m benchmarks.profile SUITE "CASE NAME" [--requests N] [--top N]`
builds the suite's cases, checks the one named, warms it up, then runs
`--requests` of its requests under cProfile and prints the functions that
took the most time of their own (and, with `--baseline`, its baseline's
profile after it, to subtract by eye). cProfile slows every Python call
alike, so read the shares, not the µs; the benchmark's own figure is the
measure. `APIGUARD_BENCH_GROWTH=keys` and the like select what a suite builds.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib
import io
import pstats

from benchmarks.driver import Case


async def _profile(case: Case, requests: int, top: int) -> str:
    await case.check()
    await case.batch(max(requests // 5, 100))  # warm-up, not profiled
    profiler = cProfile.Profile()
    profiler.enable()
    await case.batch(requests)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs().sort_stats("tottime").print_stats(top)
    return f"## {case.name}: {requests} requests under cProfile\n\n{out.getvalue()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    parser.add_argument("suite")
    parser.add_argument("case", help="the case's name, as its table shows it")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--baseline", action="store_true", help="profile its baseline too")
    args = parser.parse_args(argv)
    module = importlib.import_module(f"benchmarks.{args.suite}")
    cases = {case.name: case for case in module.cases()}
    if args.case not in cases:
        parser.error(f"no case {args.case!r} in {args.suite}; cases: {sorted(cases)}")
    chosen = [cases[args.case]]
    if args.baseline and chosen[0].baseline is not None:
        chosen.append(cases[chosen[0].baseline])

    async def run() -> None:
        for case in chosen:
            print(await _profile(case, args.requests, args.top))
        closing = getattr(importlib.import_module("benchmarks.ratelimit"), "aclose", None)
        if closing is not None:
            await closing()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
