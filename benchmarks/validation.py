"""The validation layer: a 300-byte JSON order with a model, and 1 MiB bodies.

Beside the layer, the primitives in the same run: pydantic's own
`model_validate_json` on the same bytes (the floor for validating a body at
all), the layer's parse-and-validate (`from_json` + `validate_python`), the
parse alone (as the layer calls it, with the cyclic GC paused, and plain),
the bounded parse, `json.loads` (what Starlette's `request.json()` runs), and
the per-character Python depth scan that the layer does not do (the CPU
attack the issue puts at ~17 ms per MiB).

1 MiB cases run fewer requests per round (`Scaled`), extrapolated to the
round's count, so that a round stays short; their figures are per request
as for every case.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from pydantic import BaseModel, Field
from pydantic_core import from_json
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from apiguard import Rules, ValidationMiddleware, guard
from apiguard.validation import validated_body
from apiguard.validation._json import _from_json as parse_unbounded
from apiguard.validation._json import parse_json
from benchmarks.driver import ASGICase, Case, FuncCase, post_json
from benchmarks.driver import Request as BenchRequest

TITLE = "validation: µs per request over the bare app, and the primitives"

MiB = 1_048_576


class LineIn(BaseModel):
    sku: Annotated[str, Field(pattern=r"^[A-Z0-9-]{3,32}$")]
    quantity: Annotated[int, Field(gt=0, le=1000)]
    unit_price: Annotated[Decimal, Field(gt=0, max_digits=10, decimal_places=2)]


class OrderIn(BaseModel):
    customer_email: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)]
    lines: Annotated[list[LineIn], Field(min_length=1, max_length=100)]
    note: Annotated[str | None, Field(max_length=500)] = None


ORDER = {
    "customer_email": "ada.lovelace@example.com",
    "lines": [
        {"sku": "BOOK-1984", "quantity": 2, "unit_price": "12.50"},
        {"sku": "PEN-22", "quantity": 10, "unit_price": "1.20"},
        {"sku": "NOTEBOOK-A5", "quantity": 3, "unit_price": "4.75"},
    ],
    "note": "Leave at the door, please; ring twice.",
}
ORDER_BYTES = json.dumps(ORDER).encode()


def one_mib(item: bytes, depth: int) -> bytes:
    """Just under 1 MiB: a list of `item`, ending in one branch `depth` levels deep in all."""
    branch = b"[" * (depth - 1) + b"1" + b"]" * (depth - 1)
    count = (MiB - 64 - len(branch)) // (len(item) + 1)
    return b"[" + b",".join([item] * count) + b"," + branch + b"]"


RECORD = json.dumps(
    {"id": 123456, "name": "widget, blue", "tags": ["a", "b"], "price": 12.5, "ok": True}
).encode()
#: Realistic records (~9,000 of them), and one branch at the depth limit or past it.
RECORDS_32 = one_mib(RECORD, 32)
RECORDS_33 = one_mib(RECORD, 33)
#: Nothing but nesting, every branch 32 deep: the worst case for parsing and walking.
DENSE = b"[" * 30 + b"1" + b"]" * 30
DENSE_32 = one_mib(DENSE, 32)
DENSE_33 = one_mib(DENSE, 33)


#: Records of a few fields, one nested list and object each: bodies with more
#: brackets than the bound, below and above the walk/wrap threshold.
MID_SIZES = {
    f"{len(body):,} B ({body.count(b'[') + body.count(b'{')} brackets)": body
    for body in (
        json.dumps(
            {"items": [{"id": 1, "name": "widget", "tags": ["a"], "dims": {"w": 1}}] * n}
        ).encode()
        for n in (20, 500)
    )
}


def python_depth_scan(body: bytes) -> int:
    """The per-character scan the layer avoids: strings skipped, brackets counted."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


class Scaled(Case):
    """Run a slow case `1/scale` as often and extrapolate, to keep rounds short."""

    def __init__(self, case: Case, scale: int) -> None:
        self.case = case
        self.name = case.name
        self.baseline = case.baseline
        self.unit = case.unit
        self.scale = scale

    async def check(self) -> None:
        await self.case.check()

    async def batch(self, n: int) -> int:
        runs = max(1, n // self.scale)
        return await self.case.batch(runs) * n // runs


async def create_order(request: Request) -> Response:
    body = await request.json()
    return JSONResponse({"id": 43, "lines": len(body["lines"])}, status_code=201)


async def get_order(request: Request) -> Response:
    return JSONResponse({"id": request.path_params["order_id"], "status": "open"})


async def store_blob(request: Request) -> Response:
    body = await request.body()
    return JSONResponse({"bytes": len(body)}, status_code=201)


def starlette_app(*layers: Middleware) -> Starlette:
    app = Starlette(
        routes=[
            Route("/orders/{order_id:int}", get_order),
            Route("/orders", create_order, methods=["POST"]),
            Route("/blobs", store_blob, methods=["POST"]),
        ]
    )
    return guard(app, *layers)


def fastapi_app(*layers: Middleware, dependency: bool = False) -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    if dependency:

        @app.post("/orders", status_code=201)
        async def new_order(order: Annotated[OrderIn, Depends(validated_body)]) -> dict[str, Any]:
            return {"id": 43, "lines": len(order.lines)}

    else:

        @app.post("/orders", status_code=201)
        async def new_order_own(order: OrderIn) -> dict[str, Any]:
            return {"id": 43, "lines": len(order.lines)}

    return guard(app, *layers)


def cases() -> list[Case]:
    model = Middleware(ValidationMiddleware, routes={"POST /orders": Rules(body=OrderIn)})
    defaults = Middleware(ValidationMiddleware)
    post = post_json("/orders", ORDER)
    get = BenchRequest("GET", "/orders/42")

    def blob(body: bytes) -> BenchRequest:
        return BenchRequest("POST", "/blobs", [], body)

    validator = OrderIn.__pydantic_validator__

    def scaled_post(name: str, app: Any, body: bytes, expect: int, base: str | None) -> Case:
        case = ASGICase(name, app, blob(body), expect=expect, baseline=base)
        return Scaled(case, 100 if body in (RECORDS_32, RECORDS_33) else 500)

    def scaled_func(name: str, func: Any, base: str | None = None) -> Case:
        return Scaled(FuncCase(name, func, baseline=base), 100)

    bare = starlette_app()
    layer = starlette_app(defaults)
    one_mib: list[Case] = [
        scaled_post("starlette POST 1 MiB records", bare, RECORDS_32, 201, None),
        scaled_post(
            "+ validation, 1 MiB records at depth 32",
            layer,
            RECORDS_32,
            201,
            "starlette POST 1 MiB records",
        ),
        scaled_post(
            "+ validation, 1 MiB records at depth 33 (400)",
            layer,
            RECORDS_33,
            400,
            "starlette POST 1 MiB records",
        ),
        scaled_func("from_json, 1 MiB records", lambda i: from_json(RECORDS_32)),
        scaled_func(
            "from_json, GC paused, 1 MiB records",
            lambda i: parse_unbounded(RECORDS_32, pause_gc=True),
        ),
        scaled_func(
            "parse_json (bounded, GC paused), 1 MiB records",
            lambda i: parse_json(RECORDS_32, 32),
            "from_json, GC paused, 1 MiB records",
        ),
        scaled_func("json.loads, 1 MiB records", lambda i: json.loads(RECORDS_32)),
        scaled_func("python depth scan, 1 MiB records", lambda i: python_depth_scan(RECORDS_32)),
        scaled_post("starlette POST 1 MiB dense", bare, DENSE_32, 201, None),
        scaled_post(
            "+ validation, 1 MiB dense at depth 32",
            layer,
            DENSE_32,
            201,
            "starlette POST 1 MiB dense",
        ),
        scaled_post(
            "+ validation, 1 MiB dense at depth 33 (400)",
            layer,
            DENSE_33,
            400,
            "starlette POST 1 MiB dense",
        ),
        scaled_func("python depth scan, 1 MiB dense", lambda i: python_depth_scan(DENSE_32)),
    ]
    return [
        ASGICase("starlette GET", starlette_app(), get),
        ASGICase("+ validation GET", starlette_app(defaults), get, baseline="starlette GET"),
        ASGICase("starlette POST 300 B", starlette_app(), post, expect=201),
        ASGICase(
            "+ validation, defaults (no model)",
            starlette_app(defaults),
            post,
            expect=201,
            baseline="starlette POST 300 B",
        ),
        ASGICase(
            "+ validation, body model",
            starlette_app(model),
            post,
            expect=201,
            baseline="starlette POST 300 B",
        ),
        FuncCase(
            "pydantic model_validate_json, 300 B",
            lambda i: OrderIn.model_validate_json(ORDER_BYTES),
        ),
        FuncCase(
            "from_json + validate_python, 300 B",
            lambda i: validator.validate_python(from_json(ORDER_BYTES, allow_inf_nan=False)),
            baseline="pydantic model_validate_json, 300 B",
        ),
        FuncCase("from_json, 300 B", lambda i: from_json(ORDER_BYTES, allow_inf_nan=False)),
        FuncCase(
            "parse_json (bounded), 300 B",
            lambda i: parse_json(ORDER_BYTES, 32),
            baseline="from_json, 300 B",
        ),
        FuncCase(
            "parse_json (bounded), 300 B, bound 4",
            lambda i: parse_json(ORDER_BYTES, 4),
            baseline="from_json, 300 B",
        ),
        FuncCase("python depth scan, 300 B", lambda i: python_depth_scan(ORDER_BYTES)),
        *[
            case
            for size, body in MID_SIZES.items()
            for case in (
                FuncCase(f"from_json, {size}", lambda i, b=body: from_json(b, allow_inf_nan=False)),
                FuncCase(
                    f"parse_json (bounded), {size}",
                    lambda i, b=body: parse_json(b, 32),
                    baseline=f"from_json, {size}",
                ),
            )
        ],
        ASGICase("fastapi POST 300 B", fastapi_app(), post, expect=201),
        ASGICase(
            "+ validation, body model (FastAPI validates again)",
            fastapi_app(model),
            post,
            expect=201,
            baseline="fastapi POST 300 B",
        ),
        ASGICase(
            "+ validation, body model via Depends(validated_body)",
            fastapi_app(model, dependency=True),
            post,
            expect=201,
            baseline="fastapi POST 300 B",
        ),
        *one_mib,
    ]
