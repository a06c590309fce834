"""Schemathesis against the running demo: every status, content type and header is documented.

The demo (`examples.orders:app` under uvicorn, what `make demo` serves)
publishes the enriched schema at /openapi.json; schemathesis generates
requests from it, valid and not, and checks every response against it. The
run is bounded in examples and time; the demo's limits are raised
(`ORDERS_LIMIT_SCALE`) so that the run, from one address, explores more
than 429s.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests._servers import Uvicorn

WRITER = "X-API-Key: demo-writer-4b8d1e6f"
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)
SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))


def _demo() -> Uvicorn:
    server = Uvicorn(
        "examples.orders:app",
        "--lifespan",
        "on",
        "--no-access-log",  # thousands of requests: a full pipe would stall the server
        env={"ORDERS_LIMIT_SCALE": "100"},
    )
    server.start()
    return server


def _schemathesis(
    schema: str, cwd: Path, *options: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SCHEMATHESIS, "run", schema, "--checks", CHECKS, "--workers", "1", *options],
        cwd=cwd,  # its own files (.hypothesis) stay out of the repository
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow
def test_schemathesis_finds_nothing_undocumented_in_the_demo(tmp_path: Path) -> None:
    server = _demo()
    try:
        done = _schemathesis(
            f"{server.url}/openapi.json",
            tmp_path,
            "--max-examples",
            "20",
            "--max-time",
            "30",
            "--request-timeout",
            "10",
            "--header",
            WRITER,
        )
    finally:
        log = server.stop()
    report = done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    generated = re.search(r"(\d+) generated, (\d+) passed", done.stdout)
    assert generated is not None, report
    assert generated.group(1) == generated.group(2)
    assert int(generated.group(1)) > 100, report  # it did run, and widely
    assert "Traceback" not in log  # no exception in the app or a layer


@pytest.mark.slow
def test_schemathesis_catches_what_the_plain_schema_leaves_out(tmp_path: Path) -> None:
    """The same run on FastAPI's own schema fails: the guards' refusals are undocumented."""
    from examples.orders import create_app

    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(create_app().openapi()))
    server = _demo()
    try:
        done = _schemathesis(
            str(plain),
            tmp_path,
            "--url",
            server.url,
            "--max-examples",
            "5",
            "--max-failures",
            "1",
            "--phases",
            "examples,coverage",
            timeout=120,
        )
    finally:
        server.stop()
    assert done.returncode != 0
    assert "Undocumented status code" in done.stdout, done.stdout[-3000:]
    assert "Received: 401" in done.stdout
