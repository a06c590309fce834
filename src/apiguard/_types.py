"""ASGI type aliases and the callback protocols the layers share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol, TypeAlias

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Raw ASGI header pairs: lowercase name bytes, value bytes.
RawHeaders: TypeAlias = list[tuple[bytes, bytes]]


class KeyFunc(Protocol):
    """Derives a key (client address, principal, API key, ...) from a request scope.

    Returns `None` when the request carries nothing to key on.
    """

    def __call__(self, scope: Scope, /) -> str | None: ...
