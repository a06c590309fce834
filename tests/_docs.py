"""What the tests of the docs' examples share: the repository's root, and a client of an example.

`_client` keeps its name: `test_every_included_example_exists_and_is_tested`
finds the examples tested by looking for `_client("name")` calls.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


async def _client(module: str) -> httpx.AsyncClient:
    app = importlib.import_module(f"examples.{module}").app
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api.example.com")
