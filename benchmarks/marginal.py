"""What each layer of the stack costs inside it: the stack, and the stack less each layer.

`python -m benchmarks.marginal [--method GET|POST] [--rounds N] [--requests N]`
times, in one interleaved run, the bare app, the recommended stack
(`benchmarks.apps.stack_layers`), and the stack without each of its layers
(the principal limit leaves with the JWT layer it needs, as one row). A
layer's marginal cost is the stack's time less the stack's without it, in
the same round; beside its cost alone (`python -m benchmarks stack`), it
shows how much dearer a layer is among the others than by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics

from benchmarks.apps import full_stack, stack_layers, starlette_app
from benchmarks.driver import ASGICase, Case, Result, run_cases, table
from benchmarks.server_apps import DEFAULT_SECRET
from benchmarks.stack import request

SECRET = DEFAULT_SECRET.encode()


def cases(method: str = "GET") -> list[Case]:
    """The bare app, the stack, and the stack less each layer (or pair)."""
    layers = stack_layers(secret=SECRET)
    expect = 200 if method == "GET" else 201
    req = request(method)
    found: list[Case] = [
        ASGICase("bare", starlette_app(), req, expect=expect),
        ASGICase("stack", full_stack(secret=SECRET), req, expect=expect, baseline="bare"),
    ]
    needs = {layer.after: name for name, layer in layers.items() if layer.after}
    for name, layer in layers.items():
        if layer.after is not None:
            continue  # leaves with the layer it needs
        gone = {name} | ({needs[name]} if name in needs else set())
        label = " and ".join(layers[n].label for n in sorted(gone, key=list(layers).index))
        kept = set(layers) - gone
        found.append(
            ASGICase(
                f"stack less {label}",
                full_stack(secret=SECRET, only=kept),
                req,
                expect=expect,
                baseline="stack",
            )
        )
    return found


def marginals(results: list[Result]) -> dict[str, float]:
    """Each layer's marginal cost, µs: the median over rounds of stack less stack-without-it."""
    by = {r.case.name: r for r in results}
    stack = by["stack"].samples
    return {
        name.removeprefix("stack less "): statistics.median(
            s - o for s, o in zip(stack, by[name].samples, strict=True)
        )
        for name in by
        if name.startswith("stack less ")
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.marginal", description=__doc__)
    parser.add_argument("--method", choices=("GET", "POST"), default="GET")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args(argv)
    results = asyncio.run(run_cases(cases(args.method), rounds=args.rounds, requests=args.requests))
    print(table(results, f"the stack less each layer, {args.method}"))
    found = marginals(results)
    print("\nEach layer's marginal cost in the stack (µs):")
    for name, cost in found.items():
        print(f"- {name}: {cost:+.2f}")
    print(f"- sum of the marginals: {sum(found.values()):+.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
