"""Each layer of two versions of apiguard, side by side in one interleaved run.

`python -m benchmarks.versions REV [--rounds N] [--requests N]` exports
`src/apiguard` at git revision `REV` into a temporary package,
`apiguard_before` (its imports rewritten), and times every layer of that
version and of the working tree in the same rounds, against the same bare
app: so that "no layer got slower" is read from one run on one machine, not
from two runs an hour apart.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import dataclasses
import importlib
import io
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from starlette.middleware import Middleware

from benchmarks.apps import NEW_ORDER, OrderIn, starlette_app
from benchmarks.driver import ASGICase, Case, Request, environment, post_json, run_cases, table

ROOT = Path(__file__).resolve().parent.parent
HIGH = "1000000/minute"  # never reached: the cost of counting, not of refusing
API_KEY = "k-partner-0123456789"


def load_revision(revision: str, name: str = "apiguard_before") -> ModuleType:
    """`src/apiguard` at `revision`, importable as `name`."""
    target = Path(tempfile.mkdtemp(prefix="apiguard-rev-"))
    atexit.register(shutil.rmtree, target, ignore_errors=True)
    git = shutil.which("git") or "git"
    archive = subprocess.run(
        [git, "-C", str(ROOT), "archive", "--format=tar", revision, "src/apiguard"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    package = target / name
    (target / "src" / "apiguard").rename(package)
    for path in package.rglob("*.py"):
        text = path.read_text()
        # Module paths only: `from apiguard.x import`, `import apiguard`, `"apiguard.x"`
        # in lazy imports; logger names ("apiguard.auth") change too, harmlessly.
        text = re.sub(r"(?<![\w-])apiguard(?=\.[a-z_])", name, text)
        text = re.sub(r"(from|import) apiguard\b", rf"\1 {name}", text)
        path.write_text(text)
    sys.path.insert(0, str(target))
    return importlib.import_module(name)


def layer_cases(ag: ModuleType, label: str) -> list[Case]:
    """One row per layer alone, and the whole stack, built on the package `ag`."""
    testing = importlib.import_module(f"{ag.__name__}.testing")
    key = testing.generate_key("HS256", kid="hs-1")
    claims = {"sub": "partner", "aud": "orders", "iss": "https://id.example/", "plan": "pro"}
    token = testing.mint_token(key, claims, expires_in=3600)
    partner = ag.Principal(id="partner", plan="pro")

    def jwt() -> Any:
        return ag.JWTAuth(
            key=key.verification_key,
            algorithms=["HS256"],
            audience="orders",
            issuer="https://id.example/",
            principal=lambda p: dataclasses.replace(p, plan=p.claims["plan"]),
        )

    def auth(authenticator: Any) -> Middleware:
        return Middleware(ag.AuthMiddleware, authenticators=[authenticator])

    def app(*layers: Middleware) -> Any:
        return ag.guard(starlette_app(), *layers)

    with_token = [(b"authorization", b"Bearer " + token.encode())]
    with_key = [(b"x-api-key", API_KEY.encode())]
    ip_limit = Middleware(ag.RateLimitMiddleware, name="ip", limit=HIGH)
    plan_limit = Middleware(
        ag.RateLimitMiddleware,
        name="plan",
        key=ag.by_principal(),
        plans={"free": "100/minute", "pro": HIGH},
    )
    validation = Middleware(
        ag.ValidationMiddleware, routes={"POST /orders": ag.Rules(body=OrderIn)}
    )
    get, post = "starlette GET", "starlette POST"
    order = Request("GET", "/orders/42")
    return [
        ASGICase(f"{label}: IP limit, memory", app(ip_limit), order, baseline=get),
        ASGICase(
            f"{label}: JWT HS256, repeat token",
            app(auth(jwt())),
            Request("GET", "/orders/42", with_token),
            baseline=get,
        ),
        ASGICase(
            f"{label}: API key",
            app(auth(ag.APIKeyAuth(keys={API_KEY: partner}))),
            Request("GET", "/orders/42", with_key),
            baseline=get,
        ),
        ASGICase(
            f"{label}: JWT + plan limit",
            app(auth(jwt()), plan_limit),
            Request("GET", "/orders/42", with_token),
            baseline=get,
        ),
        ASGICase(f"{label}: validation, GET", app(validation), order, baseline=get),
        ASGICase(
            f"{label}: validation, POST body model",
            app(validation),
            post_json("/orders", NEW_ORDER),
            expect=201,
            baseline=post,
        ),
        ASGICase(
            f"{label}: stack (IP, JWT, plan, validation), GET",
            app(ip_limit, auth(jwt()), plan_limit, validation),
            Request("GET", "/orders/42", with_token),
            baseline=get,
        ),
        ASGICase(
            f"{label}: stack (IP, JWT, plan, validation), POST",
            app(ip_limit, auth(jwt()), plan_limit, validation),
            post_json("/orders", NEW_ORDER, with_token),
            expect=201,
            baseline=post,
        ),
    ]


def cases(revision: str) -> list[Case]:
    """The bare app, then each layer of `revision` and of the working tree, paired."""
    import apiguard

    before = load_revision(revision)
    bare = [
        ASGICase("starlette GET", starlette_app(), Request("GET", "/orders/42")),
        ASGICase("starlette POST", starlette_app(), post_json("/orders", NEW_ORDER), expect=201),
    ]
    old = layer_cases(before, f"before ({revision[:10]})")
    new = layer_cases(apiguard, "now")
    return bare + [case for pair in zip(old, new, strict=True) for case in pair]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.versions", description=__doc__)
    parser.add_argument("revision", help="the git revision to compare the working tree with")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=4000)
    args = parser.parse_args(argv)
    print(f"# apiguard, two versions in one run\n\n{environment()}; ", end="")
    print(f"{args.rounds} rounds x {args.requests} requests\n")
    results = asyncio.run(
        run_cases(cases(args.revision), rounds=args.rounds, requests=args.requests)
    )
    print(table(results, f"each layer before ({args.revision}) and now"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
