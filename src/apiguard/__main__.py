"""`python -m apiguard routes MODULE:APP`: the same as the `apiguard` command."""

from __future__ import annotations

from apiguard.report.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
