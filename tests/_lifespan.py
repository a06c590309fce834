"""Driving an app's lifespan the way a server does, for the tests."""

from __future__ import annotations

from typing import Any


async def startup(app: Any) -> dict[str, Any]:
    """Run lifespan start-up the way a server does; return the app's answer."""
    messages = [{"type": "lifespan.startup"}]
    answers: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        return {"type": "lifespan.shutdown"}

    async def send(message: dict[str, Any]) -> None:
        answers.append(message)

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    try:
        await app(scope, receive, send)
    except Exception as exc:  # Starlette re-raises after reporting the failure
        answers.append({"type": "raised", "error": exc})
    return answers[0]
