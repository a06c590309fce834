"""The audit log of refusals as JSON lines, with the standard `logging` module only."""

from __future__ import annotations

# --8<-- [start:logging]
import json
import logging
import sys

#: The attributes every LogRecord has: the rest are the audit record's fields.
STANDARD = set(vars(logging.makeLogRecord({}))) | {"message"}


class JSONLines(logging.Formatter):
    """One JSON object per record: the message and the record's own fields."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in vars(record).items() if k not in STANDARD}
        return json.dumps({"message": record.getMessage(), **fields})


handler = logging.StreamHandler(sys.stdout)
handler.setFormatter(JSONLines())
audit = logging.getLogger("apiguard.audit")
audit.addHandler(handler)
audit.setLevel(logging.INFO)  # records are written at INFO
audit.propagate = False
# --8<-- [end:logging]

# --8<-- [start:layer]
from starlette.applications import Starlette  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from apiguard import APIKeyAuth, AuthMiddleware, Principal, TracingMiddleware, guard  # noqa: E402


async def read_order(request: object) -> JSONResponse:
    return JSONResponse({"id": 1})


app = guard(
    Starlette(routes=[Route("/orders/{order_id:int}", read_order)]),
    # At most 10 records per route and reason a minute; the rest are folded
    # into one summary record that says how many.
    Middleware(TracingMiddleware, audit_limit=10, audit_window=60.0),
    Middleware(
        AuthMiddleware,
        authenticators=[APIKeyAuth(keys={"k-partner-0001": Principal(id="partner")})],
    ),
)
# --8<-- [end:layer]
