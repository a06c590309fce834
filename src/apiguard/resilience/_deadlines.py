"""Deadlines for many requests on one timer: the machinery under `TimeoutMiddleware`.

`asyncio.timeout()` arms one timer handle per request and runs an async
context manager around the app: about 3.7 µs a request on the benchmark
machine. Every request of one budget (one timeout value) has its deadline
`timeout` seconds after it arrived, so their deadlines come in the order the
requests came: one FIFO per budget and event loop holds them, and one timer
handle, armed for the oldest request still running, serves them all. A
request that ends is only marked; the FIFO drops it when it reaches the head
(at the next push, or when the timer fires), and forgets what it held (its
scope, its `send`) at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from apiguard._types import Message, Scope, Send

if TYPE_CHECKING:
    from apiguard.context import RequestContext

__all__ = ["Expired", "Queue", "Run", "holds_thread"]


class Expired(Exception):
    """Raised into the app by its `send` once its time is up: its answer is no longer wanted."""


class Run:
    """One request under a timeout: the app's `send`, and what the timer needs.

    The app gets the run as its `send`: it notes the response's start and
    end, and refuses every message once the time is up (the layer has
    answered, or has cut the stream), so that no second response is sent.
    """

    __slots__ = (
        "answered",
        "budget",
        "cancelled",
        "cancelling",
        "complete",
        "context",
        "downstream",
        "expired",
        "finished",
        "overdue",
        "resumed",
        "scope",
        "send",
        "started",
        "status",
        "task",
        "when",
    )

    def __init__(
        self,
        budget: Any,
        scope: Scope,
        send: Send,
        downstream: Send,
        task: asyncio.Task[Any],
        when: float,
        context: RequestContext,
    ) -> None:
        self.budget = budget
        self.scope: Scope | None = scope
        self.send: Send | None = send
        #: Where the layer's own answer goes: the layer's `send`, never a
        #: fallback's watcher (a stale copy served must not be kept again).
        self.downstream: Send | None = downstream
        self.task: asyncio.Task[Any] | None = task
        self.context: RequestContext | None = context
        self.when = when
        self.cancelling = task.cancelling()
        self.started = False
        self.complete = False
        self.expired = False
        self.finished = False
        # Set by `expire` (the rare path), never read before it:
        self.status: int
        self.resumed: bool
        self.cancelled: bool
        self.overdue: bool
        self.answered: asyncio.Future[None]

    def expire(self, loop: asyncio.AbstractEventLoop) -> None:
        """The time is up: from now on the app's messages are refused."""
        self.expired = True
        self.resumed = self.cancelled = self.overdue = False
        self.answered = loop.create_future()

    def __call__(self, message: Message) -> Awaitable[None]:
        # Plain, not async: the downstream `send`'s awaitable, no coroutine
        # of its own for each message (`Expired` is raised where the app
        # calls, which is where it awaits).
        if self.expired:
            raise Expired
        kind = message["type"]
        if kind == "http.response.start":
            self.started = True
            self.status = message["status"]
        elif kind == "http.response.body" and not message.get("more_body", False):
            # After the last byte the timer lets go: background tasks that
            # Starlette runs after the response are not cut short.
            self.complete = True
        return self.send(message)  # type: ignore[misc]

    def forget(self) -> None:
        """Drop what the run holds: it may sit in its FIFO for a while."""
        self.scope = self.send = self.downstream = self.task = self.context = None


class Queue:
    """The runs of one budget on one event loop, oldest first, and one timer for the oldest."""

    __slots__ = ("_expire", "_handle", "_loop", "_runs")

    def __init__(self, loop: asyncio.AbstractEventLoop, expire: Callable[[Run], None]) -> None:
        self._loop = loop
        self._expire = expire
        self._runs: deque[Run] = deque()
        self._handle: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._runs)

    def push(self, run: Run) -> None:
        """Add a request that just arrived (its deadline is the latest of the FIFO)."""
        runs = self._runs
        while runs and (runs[0].finished or runs[0].complete):
            runs.popleft()
        runs.append(run)
        if self._handle is None:
            self._handle = self._loop.call_at(runs[0].when, self._fire)

    def _fire(self) -> None:
        self._handle = None
        runs = self._runs
        now = self._loop.time()
        while runs:
            run = runs[0]
            if run.finished or run.complete:
                runs.popleft()
                continue
            if run.when > now:
                self._handle = self._loop.call_at(run.when, self._fire)
                return
            runs.popleft()
            self._expire(run)


def holds_thread(task: asyncio.Task[Any]) -> bool:
    """Whether `task` holds a token of anyio's default thread limiter: it waits on a thread.

    Starlette and FastAPI run `def` endpoints (and FastAPI `def`
    dependencies) with `anyio.to_thread.run_sync`, which holds one of the
    limiter's tokens (40 by default) while the thread runs. Cancelling the
    task then would give the token back while the thread keeps running, and
    anyio would start another thread for the next request: threads without
    bound. So such a task is cancelled only once it gave its token back.
    Must run inside a task (anyio finds its event loop from there).
    """
    try:
        limiter = anyio.to_thread.current_default_thread_limiter()
        return task in limiter.statistics().borrowers
    except Exception:  # no anyio event loop here: nothing to protect
        return False
