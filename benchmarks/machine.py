"""What a run was measured on: the machine, Python, the packages, the load.

Saved with every result file (`python -m benchmarks --json FILE`), so that
a figure can be read with what produced it, and two files compared knowing
whether they came from the same machine and versions.
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: The distributions whose versions a figure depends on: apiguard, its
#: dependencies on the hot path, the peers, and the server's parts.
PACKAGES = (
    "apiguard",
    "starlette",
    "fastapi",
    "pydantic",
    "pydantic-core",
    "limits",
    "pyjwt",
    "cryptography",
    "opentelemetry-api",
    "opentelemetry-sdk",
    "opentelemetry-instrumentation-asgi",
    "slowapi",
    "redis",
    "hiredis",
    "uvicorn",
    "uvloop",
    "httptools",
    "matplotlib",
)


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what `platform` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (the machine may be shared)."""
    with contextlib.suppress(OSError, AttributeError):
        return [round(x, 2) for x in os.getloadavg()]
    return []


def packages() -> dict[str, str]:
    """Installed versions of `PACKAGES` (those missing are left out)."""
    found = {}
    for name in PACKAGES:
        with contextlib.suppress(md.PackageNotFoundError):
            found[name] = md.version(name)
    return found


def _output(*command: str) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=10)
        if done.returncode == 0:
            lines = (done.stdout or done.stderr).strip().splitlines()
            return lines[0] if lines else ""
    return None


def git_revision() -> str | None:
    """The commit measured, `+dirty` when the worktree has changes."""
    revision = _output("git", "rev-parse", "--short=12", "HEAD")
    if revision is None:
        return None
    dirty = _output("git", "status", "--porcelain", "--untracked-files=no")
    return revision + ("+dirty" if dirty else "")


def machine() -> dict[str, Any]:
    """Everything above, as one JSON object."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": packages(),
        "redis_server": _output("redis-server", "--version"),
        "git": git_revision(),
        "load_average": load_average(),
    }


def describe(info: dict[str, Any]) -> str:
    """One line for the top of a report."""
    versions = info.get("packages", {})
    named = ", ".join(
        f"{name} {versions[name]}"
        for name in ("starlette", "fastapi", "pydantic", "limits", "pyjwt")
        if name in versions
    )
    load = "/".join(f"{x:.2f}" for x in info.get("load_average", []))
    return (
        f"{info['python']} on {info['cpu']} ({info['cores']} cores), {info['system']}; "
        f"{named}; load average {load or 'unknown'} at the start"
    )
