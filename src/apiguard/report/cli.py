"""`apiguard routes MODULE:APP`: the policy report on the command line, and its CI check.

Exit status: 0 when the report was made (and, with `--check`, every rule
holds); 1 when the app would not start (a start-up check failed) or
`--check` found a route breaking a rule; 2 when the app cannot be loaded or
the command line is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from apiguard.errors import ConfigError
from apiguard.report._model import Finding, Report, build_report
from apiguard.report._render import render_json, render_table

__all__ = ["load_app", "main"]

#: Seconds the app's lifespan may take to start or stop under `--lifespan`.
LIFESPAN_TIMEOUT = 60.0


class LoadError(Exception):
    """The app could not be imported or found."""


def load_app(target: str, *, factory: bool = False, app_dir: str = ".") -> Any:
    """The object `MODULE:ATTRIBUTE` names (`"examples.orders:app"`), as uvicorn finds it.

    Args:
        target: `module.path:attribute`, the attribute possibly dotted.
        factory: Call the attribute (a function that makes the app).
        app_dir: A directory put first on `sys.path` (the current one by default).

    Raises:
        LoadError: the target is malformed, the module fails to import, or
            the attribute is missing.
        ConfigError: importing the module built a layer with a bad option.
    """
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        msg = f"{target!r} is not like 'package.module:app'"
        raise LoadError(msg)
    directory = os.path.abspath(app_dir)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        module = importlib.import_module(module_name)
    except ConfigError:
        raise  # guard() refused a layer's options at import: the report says so
    except Exception as exc:
        msg = f"cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        raise LoadError(msg) from exc
    found: Any = module
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            msg = f"module {module_name!r} has no attribute {attribute!r}"
            raise LoadError(msg) from None
    if factory:
        found = found()
    if not callable(found):
        msg = f"{target!r} is {found!r}, not an ASGI app"
        raise LoadError(msg)
    return found


async def _with_lifespan(app: Any, target: str) -> Report:
    """Start the app's lifespan, report, then shut it down."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}

    async def run() -> None:
        try:
            await app(scope, inbox.get, outbox.put)
        except Exception as exc:  # an app without lifespan support raises
            await outbox.put({"type": "raised", "message": f"{type(exc).__name__}: {exc}"})

    task = asyncio.create_task(run())
    try:
        await inbox.put({"type": "lifespan.startup"})
        answer = await asyncio.wait_for(outbox.get(), LIFESPAN_TIMEOUT)
        if answer["type"] != "lifespan.startup.complete":
            report = Report(target)
            report.error = answer.get("message") or "lifespan start-up failed"
            return report
        report = build_report(app, name=target)
        await inbox.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(outbox.get(), LIFESPAN_TIMEOUT)
        return report
    finally:
        if not task.done():
            task.cancel()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="apiguard",
        description="apiguard's tools. `apiguard routes MODULE:APP` reports every route's guards.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    routes = commands.add_parser(
        "routes",
        help="every route of an app and what each layer does there",
        description=(
            "Load the app, build its middleware stack (running the layers' start-up checks) "
            "without running its lifespan or connecting to any store, and report what each "
            "layer does on every route."
        ),
    )
    routes.add_argument("app", metavar="MODULE:APP", help="the app, as for uvicorn")
    routes.add_argument("--json", action="store_true", help="print the report as JSON")
    routes.add_argument(
        "--check",
        action="store_true",
        help="exit 1, naming each, for routes with no authentication decision "
        "or escaping a --require'd layer",
    )
    routes.add_argument(
        "--require",
        action="append",
        default=[],
        metavar="LAYER",
        help="a layer every route must pass (kind, or kind:name: ratelimit, ratelimit:ip); "
        "implies --check; repeatable",
    )
    routes.add_argument(
        "--exempt",
        action="append",
        default=[],
        metavar="ROUTE",
        help="a route key excused from --require ('GET /health'); implies --check; repeatable",
    )
    routes.add_argument(
        "--lifespan", action="store_true", help="run the app's lifespan start-up first"
    )
    routes.add_argument("--factory", action="store_true", help="APP is a function making the app")
    routes.add_argument("--app-dir", default=".", help="put this directory first on sys.path")
    return parser


def main(
    argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run `apiguard` with `argv` (the process's arguments by default); return the exit status."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    args = _parser().parse_args(argv)
    try:
        app = load_app(args.app, factory=args.factory, app_dir=args.app_dir)
    except LoadError as exc:
        print(f"apiguard routes: {exc}", file=err)
        return 2
    except ConfigError as exc:  # a layer refused its options when the module was imported
        report = Report(args.app)
        report.error = str(exc)
    else:
        report = (
            asyncio.run(_with_lifespan(app, args.app))
            if args.lifespan
            else build_report(app, name=args.app)
        )
    findings: list[Finding] | None = None
    if args.check or args.require or args.exempt or report.error is not None:
        try:
            findings = report.check(require=args.require, exempt=args.exempt)
        except ConfigError as exc:
            print(f"apiguard routes: {exc}", file=err)
            return 2
    out.write(render_json(report, findings) if args.json else render_table(report))
    for finding in findings or ():
        print(f"apiguard routes: {finding}", file=err)
    if findings:
        print(f"apiguard routes: {len(findings)} problem(s) in {args.app}", file=err)
        return 1
    return 0
