"""The audit log of refusals: one structured record per refused request, flood-proof.

Records go through the standard `logging` module to a named logger, with
their fields in the record itself (`extra=`), so that any JSON formatter
(python-json-logger, structlog's stdlib bridge, a cloud agent's) emits them
as keys. Only what the layers and the configuration define goes in: the
route template (never the path), the method (`_OTHER` for an unknown one),
the status, the refusing layer and its reason code, the policy name, the
client address, the trace id, and the principal's id where opted in. No
header, token, key, password, body, query value or internal cause.

Rate-limited clients must not be able to flood it: per route, layer and
reason, at most `limit` records are written per `window` seconds; the rest
are counted, and one summary record per key and window says how many were
folded. Summaries are written when a later refusal finds the window over,
when the app shuts down, or on [`flush`][apiguard.tracing._audit.AuditLog.flush].
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import Any, Final

from apiguard._clock import clock
from apiguard.context import Decision

__all__ = ["AuditLog"]

#: Keys (route, layer, name, reason) tracked at once; past it, new keys share one.
_MAX_KEYS: Final = 1024
_OVERFLOW: Final = (None, "*", None, "*")


class _Slot:
    __slots__ = ("ends", "folded", "logged", "started", "status")

    def __init__(self, started: float, ends: float, status: int | None) -> None:
        self.started = started
        self.ends = ends
        self.logged = 0
        self.folded = 0
        self.status = status


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


class AuditLog:
    """Writes refusal records to a logger, at most `limit` per key and `window` seconds.

    Args:
        logger: The logger's name (`"apiguard.audit"`).
        limit: Records written per route, layer and reason in a window.
        window: The window, in seconds.
        level: The records' level.
    """

    __slots__ = ("_next_sweep", "_slots", "level", "limit", "logger", "window")

    def __init__(self, logger: str, *, limit: int, window: float, level: int = logging.INFO):
        self.logger = logging.getLogger(logger)
        self.limit = limit
        self.window = window
        self.level = level
        self._slots: dict[tuple[str | None, str, str | None, str | None], _Slot] = {}
        self._next_sweep = math.inf

    def enabled(self) -> bool:
        """Whether records of the audit level would be handled (else nothing is built)."""
        return self.logger.isEnabledFor(self.level)

    def refused(
        self,
        decision: Decision,
        *,
        method: str,
        route: str | None,
        client: str | None,
        trace_id: str | None = None,
        span_id: str | None = None,
        principal: str | None = None,
    ) -> None:
        """Record one refused request, or count it in its key's summary."""
        now = clock.monotonic()
        if now >= self._next_sweep:
            self._sweep(now)
        key = (route, decision.layer, decision.name, decision.reason)
        slot = self._slots.get(key)
        if slot is None:
            if len(self._slots) >= _MAX_KEYS:
                key = _OVERFLOW
                slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = _Slot(now, now + self.window, decision.status)
                self._next_sweep = min(self._next_sweep, slot.ends)
        if slot.logged >= self.limit:
            slot.folded += 1
            return
        slot.logged += 1
        fields: dict[str, Any] = {
            "event": "apiguard.refusal",
            "time": _timestamp(clock.time()),
            "method": method,
            "route": route,
            "status": decision.status,
            "layer": decision.layer,
            "layer_name": decision.name,
            "reason": decision.reason,
            "policy": decision.policy,
            "client_address": client,
            "trace_id": trace_id,
            "span_id": span_id,
        }
        if principal is not None:
            fields["principal"] = principal
        self.logger.log(
            self.level,
            "refused %s %s: %s by %s[%s] (%s)",
            method,
            route or "(no route)",
            decision.status,
            decision.layer,
            decision.name,
            decision.reason,
            extra=fields,
        )

    def _sweep(self, now: float) -> None:
        next_end = math.inf
        for key, slot in list(self._slots.items()):
            if slot.ends <= now:
                del self._slots[key]
                if slot.folded:
                    self._summary(key, slot)
            elif slot.ends < next_end:
                next_end = slot.ends
        self._next_sweep = next_end

    def flush(self) -> None:
        """Write the summary of every key with folded records now, and start afresh."""
        slots, self._slots = self._slots, {}
        self._next_sweep = math.inf
        for key, slot in slots.items():
            if slot.folded:
                self._summary(key, slot)

    def _summary(self, key: tuple[str | None, str, str | None, str | None], slot: _Slot) -> None:
        route, layer, name, reason = key
        elapsed = min(clock.monotonic(), slot.ends) - slot.started
        self.logger.log(
            self.level,
            "folded %d more refusals of %s by %s[%s] (%s) in %.0f s",
            slot.folded,
            route or "(no route)",
            layer,
            name,
            reason,
            self.window,
            extra={
                "event": "apiguard.refusal.summary",
                "time": _timestamp(clock.time()),
                "route": route,
                "status": slot.status,
                "layer": layer,
                "layer_name": name,
                "reason": reason,
                "folded": slot.folded,
                "logged": slot.logged,
                "window_seconds": self.window,
                "elapsed_seconds": round(elapsed, 3),
            },
        )
