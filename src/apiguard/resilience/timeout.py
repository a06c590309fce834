"""`TimeoutMiddleware`: a time budget per route, the request's deadline, 504 on time."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from apiguard._clock import clock
from apiguard._types import ASGIApp, Message, Receive, Scope, Send
from apiguard.context import CONTEXT_KEY, Decision, RequestContext, get_context
from apiguard.layer import Answer, Description, JSONValue, Options, checked
from apiguard.problems import Problem, ProblemResponse
from apiguard.resilience._deadlines import Expired, Queue, Run, holds_thread
from apiguard.resilience.fallbacks import Fallback, as_fallback, pass_through, with_fallback
from apiguard.routing import WEBSOCKET, RoutePolicies

__all__ = ["TimeoutMiddleware"]

logger = logging.getLogger("apiguard.resilience")

_LAYER: Final = "timeout"
_DETAIL: Final = "The server did not answer within its time budget."
#: First and longest wait between two checks of a thread that outlived its request.
_POLL_FIRST: Final = 0.02
_POLL_MAX: Final = 1.0


class _Budget:
    """One timeout value: its FIFO per event loop, its decisions and its 504, built once."""

    __slots__ = ("allowed", "outer", "queues", "response", "seconds")

    def __init__(self, name: str, seconds: float, response: ProblemResponse) -> None:
        self.seconds = seconds
        self.response = response
        attributes = MappingProxyType({"timeout.seconds": seconds})
        self.allowed = Decision(_LAYER, "allow", name, attributes=attributes)
        self.outer = Decision(_LAYER, "allow", name, "outer-deadline", attributes=attributes)
        self.queues: dict[asyncio.AbstractEventLoop, Queue] = {}


class TimeoutMiddleware:
    """Answer 504 when the app has not answered in time; give the request its deadline.

    Each request gets a time budget (`timeout`, or its route's), counted
    from when it reaches the layer (reading the body included). The budget
    becomes the request's deadline in the request context
    ([`RequestContext.deadline`][apiguard.context.RequestContext]), shortened
    by none but an earlier one: every wait apiguard makes for the request
    inside this layer (store calls, key lookups, retry backoff) is bounded by
    what is left, and the endpoint can read it
    ([`request_deadline`][apiguard.resilience.request_deadline]). An inner
    `TimeoutMiddleware` with a longer budget changes nothing; with a shorter
    one (a per-attempt timeout inside [`RetryMiddleware`][apiguard.RetryMiddleware])
    it applies inside it, and the outer deadline comes back after it.

    When the budget runs out before the response has started, the app's task
    is cancelled and the client gets the fallback's response, if it serves
    one, or `504 Gateway Timeout` as problem details, on time. Once the
    response has started it cannot be replaced: the app is cancelled and the
    stream is ended without its last chunk, so that the client sees an
    incomplete response, never a second one (HTTP/1.1 servers close the
    connection). Once the response is complete the timer lets go: Starlette's
    background tasks, which run after it, are not cut.

    `def` endpoints (and FastAPI `def` dependencies) run in anyio's worker
    threads, which cannot be cancelled. The client still gets its 504 on
    time; the thread runs on to its end, holding its token of anyio's
    thread limiter (40 by default), and the app's task is cancelled as soon
    as the thread returns. So stuck threads never number more than the
    limiter's tokens: past that, `def` endpoints wait for a token (and get
    their 504 on time, their wait cancelled), while `async` endpoints go on
    being served. [`overdue`][apiguard.TimeoutMiddleware.overdue] counts the
    requests answered whose app still runs.

    Runs on asyncio (uvicorn, hypercorn's asyncio worker, granian).

    Args:
        app: The ASGI app.
        name: The layer's name, in its decisions.
        timeout: Seconds a request may take before the 504: Envoy's route
            timeout default (15 s).
        routes: Per-route budgets by route key (`{"GET /reports": 60.0}`);
            `None` for a route with no timeout (a long-lived stream).
        fallback: What to serve instead of the 504: a
            [`Fallback`][apiguard.Fallback] ([`StaleIfError()`][apiguard.StaleIfError],
            ...), a Starlette `Response`, a function `(request, reason)`
            returning a response or `None`, or a list of these, tried in order.

    Raises:
        ConfigError: an option is out of range, or a route key names no route.

    Examples:
        >>> from starlette.applications import Starlette
        >>> from starlette.middleware import Middleware
        >>> from apiguard import guard
        >>> app = guard(
        ...     Starlette(),
        ...     Middleware(TimeoutMiddleware, timeout=5.0, routes={"/": 30.0}),
        ... )
    """

    @checked("TimeoutMiddleware", name="timeout")
    def __init__(
        self,
        app: ASGIApp,
        *,
        name: str = "timeout",
        timeout: float = 15.0,
        routes: Mapping[str, float | None] | None = None,
        fallback: object = None,
    ) -> None:
        self.name = Options().layer_name(name)
        options = self.options = Options.of("TimeoutMiddleware", name)
        seconds = options.seconds("timeout", timeout, high=86_400.0)
        response = ProblemResponse(Problem(status=504, detail=_DETAIL))
        budgets: dict[float, _Budget] = {}

        def budget(value: float) -> _Budget:
            if value not in budgets:
                budgets[value] = _Budget(self.name, value, response)
            return budgets[value]

        self.default = budget(seconds)
        #: Routes given `None`: no budget (a policy cannot be `None` itself).
        self._unbounded = _Budget(self.name, math.inf, response)
        table: dict[str, _Budget] = {}
        for key, value in options.mapping("routes", routes).items():
            if value is None:
                table[key] = self._unbounded
            else:
                table[key] = budget(options.seconds(f"routes[{key!r}]", value, high=86_400.0))
        with options.checking():
            self.routes: RoutePolicies[_Budget] = RoutePolicies("routes", table, self.default)
            self.fallback: Fallback | None = as_fallback("fallback", fallback)
        self._watches = self.fallback is not None and self.fallback.watches
        self._skip = Decision(_LAYER, "skip", self.name, "no-timeout")
        self._overdue = 0
        #: The tasks answering for timed-out requests: the loop keeps only
        #: weak references to tasks, and one must not vanish mid-answer.
        self._answering: set[asyncio.Task[None]] = set()

        self.app = options.bind_at_startup(app, self.routes, self.fallback)

    @property
    def timeout(self) -> float:
        """The default budget, in seconds."""
        return self.default.seconds

    @property
    def overdue(self) -> int:
        """Requests answered on time whose app still runs (a `def` endpoint's thread, mostly)."""
        return self._overdue

    def describe(self, method: str, key: str) -> Description:
        """The budget of requests of `method` on route `key`, and the 504 (or fallback) it gives."""
        budget = self.routes.get(method, key)
        if budget is self._unbounded or method == WEBSOCKET:
            return Description(_LAYER, self.name, False, {"timeout": None})
        summary: dict[str, JSONValue] = {"timeout": budget.seconds}
        answers = [Answer(504, "timeout", description=_DETAIL)]
        return Description(
            _LAYER, self.name, True, summary, with_fallback(self.fallback, summary, answers)
        )

    # --- the request -----------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app within the request's budget."""
        if scope["type"] != "http":
            await pass_through(self.app, self.fallback, scope, receive, send)
            return
        routes = self.routes
        budget = routes.default if routes.empty else routes.lookup(scope)
        context: RequestContext = scope.get(CONTEXT_KEY) or get_context(scope)
        if budget is self._unbounded:
            context.record(self._skip)
            await self.app(scope, receive, send)
            return
        task: asyncio.Task[Any] = asyncio.current_task()  # type: ignore[assignment]
        loop = task.get_loop()
        when = loop.time() + budget.seconds
        # Read after the loop's clock: a wait bounded by the deadline ends
        # at the timer, never before it.
        deadline = clock.monotonic() + budget.seconds
        previous = context.deadline
        if previous is not None and previous <= deadline:
            # An outer layer's deadline comes first, and its timer enforces it.
            context.record(budget.outer)
            await self.app(scope, receive, send)
            return
        watched = self.fallback.watch(scope, send) if self._watches else send  # type: ignore[union-attr]
        run = Run(budget, scope, watched, send, task, when, context)
        queue = budget.queues.get(loop)
        if queue is None:
            queue = self._queue(budget, loop)
        context.deadline = deadline
        queue.push(run)
        try:
            await self.app(scope, receive, run)
        except BaseException as exc:
            run.finished = True
            context.deadline = previous
            if not run.expired:
                run.forget()
                context.record(budget.allowed)  # the app's own error, in time
                raise
            run.resumed = True
            if run.cancelled:
                run.cancelled = False
                # Ours alone to swallow (as asyncio.timeout does): another
                # cancellation of the task (the server's) goes on up.
                if task.uncancel() > run.cancelling and isinstance(exc, asyncio.CancelledError):
                    raise
            elif isinstance(exc, asyncio.CancelledError):
                raise
            elif not isinstance(exc, Expired):
                logger.debug("apiguard: the app raised after its time was up", exc_info=exc)
        else:
            run.finished = True
            context.deadline = previous
            if not run.expired:
                run.forget()
                context.decisions.append(budget.allowed)
                return
            run.resumed = True
            if run.cancelled:  # the app swallowed the cancellation
                run.cancelled = False
                task.uncancel()
        if not run.answered.done():
            await run.answered
        if run.overdue:
            self._overdue -= 1
        run.forget()

    def _queue(self, budget: _Budget, loop: asyncio.AbstractEventLoop) -> Queue:
        """The FIFO of `budget` on `loop`, made on first use (dropping those of closed loops)."""
        for old in [old for old in budget.queues if old.is_closed()]:
            del budget.queues[old]
        queue = budget.queues[loop] = Queue(loop, self._expire)
        return queue

    def _expire(self, run: Run) -> None:
        """The timer: the run's time is up (a loop callback: no await here)."""
        task = run.task
        if task is None:  # pragma: no cover - finished runs are dropped before
            return
        loop = task.get_loop()
        run.expire(loop)
        answering = loop.create_task(self._time_up(run, task))
        self._answering.add(answering)
        answering.add_done_callback(self._answering.discard)

    async def _time_up(self, run: Run, task: asyncio.Task[Any]) -> None:
        """Cancel the app, answer in its place, and mind a thread that outlives the request."""
        thread = holds_thread(task)
        if not thread:
            self._cancel(run, task)
        try:
            if run.started:
                self._cut(run)
            else:
                # One turn of the loop: a cancelled app unwinds now, unless
                # it cannot (a thread, a shield): then it is overdue.
                await asyncio.sleep(0)
                run.overdue = not run.resumed
                if run.overdue:
                    self._overdue += 1
                await self._answer(run)
        except Exception:  # never a 500, never a hang: log and let the request end
            logger.exception("apiguard: the timeout's answer failed")
        finally:
            if not run.answered.done():
                run.answered.set_result(None)
        delay = _POLL_FIRST
        while thread and not run.finished:
            await asyncio.sleep(delay)
            if not run.finished and not holds_thread(task):
                self._cancel(run, task)
                return
            delay = min(delay * 2, _POLL_MAX)

    @staticmethod
    def _cancel(run: Run, task: asyncio.Task[Any]) -> None:
        if not run.finished and not run.cancelled:
            run.cancelled = True
            task.cancel()

    def _cut(self, run: Run) -> None:
        """The response had started: it ends where it is, and the decision says so."""
        context = run.context
        if context is not None:
            context.timeouts += 1
            context.record(
                Decision(
                    _LAYER,
                    "reject",
                    self.name,
                    "timeout",
                    run.status,
                    attributes={"timeout.seconds": run.budget.seconds, "timeout.stream_cut": True},
                )
            )

    async def _answer(self, run: Run) -> None:
        """The fallback's response, or the 504, through the layer's own `send`."""
        scope, send, context = run.scope, run.downstream, run.context
        if scope is None or send is None or context is None:  # pragma: no cover - still running
            return
        served = False
        fallback = self.fallback
        if fallback is not None:
            sent = _Sent(send)
            try:
                served = await fallback.serve(scope, "timeout", sent)
            except Exception as exc:
                # A send refused (the client went away, an outer layer
                # abandoned the attempt): no second response. A fallback's
                # own bug before it sent anything: the 504 then.
                logger.warning("apiguard: the timeout's fallback failed (%s)", type(exc).__name__)
                served = sent.started
        attributes: dict[str, Any] = {
            "timeout.seconds": run.budget.seconds,
            "timeout.overdue": run.overdue,
        }
        if fallback is not None:
            attributes["timeout.fallback"] = served
        status = None if served else 504
        context.timeouts += 1
        context.record(
            Decision(_LAYER, "reject", self.name, "timeout", status, attributes=attributes)
        )
        if not served:
            try:
                await run.budget.response.send(scope, send)
            except Exception as exc:
                logger.debug("apiguard: the 504 could not be sent", exc_info=exc)


class _Sent:
    """A `send` that notes whether a response has started through it."""

    __slots__ = ("send", "started")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        self.started = True
        await self.send(message)
