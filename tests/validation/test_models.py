"""Pydantic models per route: body, query, headers; 422s that do not echo input."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, Literal

import httpx
import pytest
from fastapi import Depends, FastAPI
from pydantic import BaseModel, Field, field_validator
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from apiguard import ConfigError, Rules, ValidationMiddleware, guard
from apiguard.validation import (
    validated,
    validated_body,
    validated_headers,
    validated_query,
)
from apiguard.validation._models import MAX_ERRORS
from tests.validation._apps import ORDER, Calls, OrderIn, starlette_app

pytestmark = pytest.mark.anyio

SECRET = "sk_live_4f9b2c0d8e7a6b5c"


def client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app, client=("203.0.113.9", 4000))
    return httpx.AsyncClient(transport=transport, base_url="http://api.example.com")


async def test_valid_body_is_handed_to_the_endpoint() -> None:
    calls = Calls()
    async with client(starlette_app(calls)) as c:
        response = await c.post("/orders", json=ORDER)
    assert response.status_code == 201
    order = calls.seen[0]["values"]["body"]
    assert isinstance(order, OrderIn)
    assert order.lines[0].quantity == 2


async def test_invalid_body_is_422_with_location_message_and_type() -> None:
    calls = Calls()
    bad = {**ORDER, "lines": [{"sku": "BOOK-1", "quantity": 0}, {"sku": "x"}]}
    async with client(starlette_app(calls)) as c:
        response = await c.post("/orders", json=bad)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    document = response.json()
    assert document["type"] == "about:blank"
    assert document["title"] == "Unprocessable Content"
    assert document["status"] == 422
    assert document["errors"] == [
        {
            "loc": ["body", "lines", 0, "quantity"],
            "msg": "Input should be greater than 0",
            "type": "greater_than",
        },
        {
            "loc": ["body", "lines", 1, "sku"],
            "msg": "String should match pattern '^[A-Z0-9-]{3,32}$'",
            "type": "string_pattern_mismatch",
        },
        {"loc": ["body", "lines", 1, "quantity"], "msg": "Field required", "type": "missing"},
    ]
    assert calls.seen == []


async def test_422_does_not_echo_submitted_values() -> None:
    bad = {**ORDER, "customer_email": SECRET * 20, "lines": [{"sku": SECRET, "quantity": SECRET}]}
    async with client(starlette_app()) as c:
        response = await c.post("/orders", json=bad)
    assert response.status_code == 422
    assert SECRET not in response.text
    assert all(set(e) == {"loc", "msg", "type"} for e in response.json()["errors"])


async def test_echo_input_opt_in_adds_input_and_ctx() -> None:
    bad = {**ORDER, "lines": [{"sku": "BOOK-1", "quantity": 5000}]}
    async with client(starlette_app(echo_input=True)) as c:
        response = await c.post("/orders", json=bad)
    (error,) = response.json()["errors"]
    assert error["input"] == 5000
    assert error["ctx"] == {"le": 1000}


class Cat(BaseModel):
    kind: Literal["cat"]
    meows: int


class Dog(BaseModel):
    kind: Literal["dog"]
    barks: int


class Pet(BaseModel):
    pet: Annotated[Cat | Dog, Field(discriminator="kind")]
    id: uuid.UUID
    name: str

    @field_validator("name")
    @classmethod
    def no_digits(cls, value: str) -> str:
        if any(c.isdigit() for c in value):
            raise ValueError("no digits in names")
        return value


def pets_app(**options: Any) -> Starlette:
    async def create(request: Request) -> JSONResponse:
        return JSONResponse({})

    return guard(
        Starlette(routes=[Route("/pets", create, methods=["POST"])]),
        Middleware(ValidationMiddleware, routes={"POST /pets": Rules(body=Pet)}, **options),
    )


async def test_builtin_messages_that_quote_input_are_replaced() -> None:
    """A discriminator tag and a UUID parser's complaint quote the input: not by default."""
    bad = {"pet": {"kind": SECRET}, "id": "zz" + SECRET, "name": "Rex"}
    async with client(pets_app()) as c:
        response = await c.post("/pets", json=bad)
    assert response.status_code == 422
    assert SECRET not in response.text
    kinds = {e["type"]: e["msg"] for e in response.json()["errors"]}
    assert kinds["union_tag_invalid"].startswith("Input tag found using 'kind' does not match")
    assert kinds["uuid_parsing"] == "Input should be a valid UUID"


async def test_app_validator_messages_go_out_as_written() -> None:
    bad = {"pet": {"kind": "cat", "meows": 1}, "id": str(uuid.uuid4()), "name": "R2"}
    async with client(pets_app()) as c:
        response = await c.post("/pets", json=bad)
    assert response.json()["errors"] == [
        {"loc": ["body", "name"], "msg": "Value error, no digits in names", "type": "value_error"}
    ]


async def test_echoed_context_is_json_even_for_exceptions() -> None:
    bad = {"pet": {"kind": "cat", "meows": 1}, "id": str(uuid.uuid4()), "name": "R2"}
    async with client(pets_app(echo_input=True)) as c:
        response = await c.post("/pets", json=bad)
    (error,) = response.json()["errors"]
    assert error["ctx"] == {"error": "no digits in names"}
    assert error["input"] == "R2"


async def test_errors_are_capped() -> None:
    """Thousands of bad items make a bounded 422, not one larger than the request."""

    class Numbers(BaseModel):
        values: list[int]

    async def create(request: Request) -> JSONResponse:  # pragma: no cover
        return JSONResponse({})

    app = guard(
        Starlette(routes=[Route("/n", create, methods=["POST"])]),
        Middleware(ValidationMiddleware, routes={"POST /n": Rules(body=Numbers)}),
    )
    async with client(app) as c:
        response = await c.post("/n", json={"values": ["x"] * 5000})
    assert response.status_code == 422
    assert len(response.json()["errors"]) == MAX_ERRORS


async def test_body_type_need_not_be_a_model() -> None:
    class Item(BaseModel):
        name: str

    seen = []

    async def create(request: Request) -> JSONResponse:
        seen.append(validated(request))
        return JSONResponse({})

    app = guard(
        Starlette(routes=[Route("/items", create, methods=["POST"])]),
        Middleware(ValidationMiddleware, routes={"POST /items": Rules(body=list[Item])}),
    )
    async with client(app) as c:
        assert (await c.post("/items", json=[{"name": "a"}])).status_code == 200
        response = await c.post("/items", json={"name": "a"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body"]
    assert seen == [[Item(name="a")]]


async def test_optional_body_may_be_empty() -> None:
    seen = []

    async def create(request: Request) -> JSONResponse:
        seen.append(validated(request))
        return JSONResponse({})

    app = guard(
        Starlette(routes=[Route("/o", create, methods=["POST"])]),
        Middleware(ValidationMiddleware, routes={"POST /o": Rules(body=OrderIn | None)}),
    )
    async with client(app) as c:
        assert (await c.post("/o")).status_code == 200
    assert seen == [None]


# --- query ---------------------------------------------------------------------------


async def test_query_model_is_validated_and_handed_over() -> None:
    calls = Calls()
    async with client(starlette_app(calls)) as c:
        response = await c.get("/search?q=books&limit=5&tag=a&tag=b")
    assert response.status_code == 200
    query = calls.seen[0]["values"]["query"]
    assert (query.q, query.limit, query.tag) == ("books", 5, ["a", "b"])


async def test_repeated_scalar_query_parameter_takes_the_last_value() -> None:
    """As Starlette's request.query_params[...] does."""
    calls = Calls()
    async with client(starlette_app(calls)) as c:
        assert (await c.get("/search?q=a&q=b")).status_code == 200
    assert calls.seen[0]["values"]["query"].q == "b"


@pytest.mark.parametrize(
    ("query", "loc", "kind"),
    [
        ("", ["query", "q"], "missing"),
        ("q=x&limit=0", ["query", "limit"], "greater_than_equal"),
        ("q=x&limit=abc", ["query", "limit"], "int_parsing"),
        ("q=x&debug=1", ["query", "<key>"], "extra_forbidden"),  # a name it does not declare
    ],
)
async def test_invalid_query_is_422(query: str, loc: list[str], kind: str) -> None:
    calls = Calls()
    async with client(starlette_app(calls)) as c:
        response = await c.get(f"/search?{query}")
    assert response.status_code == 422
    assert [(e["loc"], e["type"]) for e in response.json()["errors"]] == [(loc, kind)]
    assert calls.seen == []


class Strict(BaseModel):
    model_config = {"extra": "forbid"}
    sku: str
    scores: dict[str, int] = {}
    amount: int | list[int] = 0
    lines: list[Strict] = []


def strict_app(**options: Any) -> Starlette:
    async def create(request: Request) -> JSONResponse:
        return JSONResponse({})

    return guard(
        Starlette(routes=[Route("/strict", create, methods=["POST"])]),
        Middleware(ValidationMiddleware, routes={"POST /strict": Rules(body=Strict)}, **options),
    )


async def post_strict(body: dict[str, Any], **options: Any) -> httpx.Response:
    async with client(strict_app(**options)) as c:
        return await c.post("/strict", json=body)


async def test_undeclared_keys_are_not_echoed_in_loc() -> None:
    """Review finding 13: an extra key, a dict key: the client's text, not the model's."""
    response = await post_strict({"sku": "A", SECRET: 1, "scores": {SECRET: "x"}})
    assert response.status_code == 422
    assert SECRET not in response.text
    errors = {e["type"]: e["loc"] for e in response.json()["errors"]}
    assert errors == {
        "extra_forbidden": ["body", "<key>"],
        "int_parsing": ["body", "scores", "<key>"],
    }


async def test_undeclared_keys_are_hidden_at_any_depth() -> None:
    body = {"sku": "A", "lines": [{"sku": "B", "scores": {"ok": 1, SECRET: []}, SECRET: 2}]}
    response = await post_strict(body)
    assert SECRET not in response.text
    assert sorted(e["loc"] for e in response.json()["errors"]) == [
        ["body", "lines", 0, "<key>"],
        ["body", "lines", 0, "scores", "<key>"],
    ]


async def test_declared_names_and_union_labels_stay_in_loc() -> None:
    """What the model declares is no secret: field names, and pydantic's union labels."""
    response = await post_strict({"sku": 5, "amount": "x", "scores": {"sku": "y"}})
    locs = sorted(map(tuple, (e["loc"] for e in response.json()["errors"])), key=str)
    assert locs == sorted(
        [
            ("body", "sku"),
            ("body", "scores", "sku"),  # a client's key, but one the model names
            ("body", "amount", "int"),
            ("body", "amount", "list[int]"),
        ],
        key=str,
    )


async def test_echo_input_opt_in_shows_the_keys() -> None:
    response = await post_strict({"sku": "A", SECRET: 1}, echo_input=True)
    assert response.json()["errors"][0]["loc"] == ["body", SECRET]


async def test_undeclared_query_names_are_not_echoed() -> None:
    async with client(starlette_app()) as c:
        response = await c.get("/search", params={"q": "x", SECRET: "1"})
    assert response.status_code == 422
    assert SECRET not in response.text
    assert response.json()["errors"][0]["loc"] == ["query", "<key>"]


def test_a_body_model_always_has_its_depth_checked() -> None:
    """The depth bound applies to every JSON body; a body model accepts JSON types only."""
    with pytest.raises(ConfigError, match="a body model validates JSON"):
        guard(
            Starlette(routes=[Route("/strict", lambda r: None, methods=["POST"])]),
            Middleware(
                ValidationMiddleware,
                routes={"POST /strict": Rules(body=Strict, content_types=["*/*"])},
            ),
        )


async def test_query_errors_do_not_echo_values() -> None:
    async with client(starlette_app()) as c:
        response = await c.get("/search", params={"q": "x", "limit": SECRET})
    assert response.status_code == 422
    assert SECRET not in response.text


# --- headers -------------------------------------------------------------------------


async def test_header_model_reads_declared_headers() -> None:
    calls = Calls()
    async with client(starlette_app(calls)) as c:
        response = await c.get(
            "/tenant", headers=[("X-Tenant", "acme"), ("X-Trace", "1"), ("X-Trace", "2")]
        )
    assert response.status_code == 200
    headers = calls.seen[0]["values"]["headers"]
    assert (headers.x_tenant, headers.x_trace) == ("acme", ["1", "2"])


async def test_invalid_header_is_422_without_its_value() -> None:
    async with client(starlette_app()) as c:
        missing = await c.get("/tenant")
        bad = await c.get("/tenant", headers={"x-tenant": SECRET})
    assert missing.status_code == 422
    assert missing.json()["errors"] == [
        {"loc": ["header", "x-tenant"], "msg": "Field required", "type": "missing"}
    ]
    assert bad.status_code == 422
    assert SECRET not in bad.text


async def test_header_alias_names_the_header() -> None:
    class Signed(BaseModel):
        signature: Annotated[str, Field(alias="X-Signature-256", min_length=10)]

    seen = []

    async def hook(request: Request) -> JSONResponse:
        seen.append(validated(request, "headers").signature)
        return JSONResponse({})

    app = guard(
        Starlette(routes=[Route("/hook", hook, methods=["GET"])]),
        Middleware(ValidationMiddleware, routes={"GET /hook": Rules(headers=Signed)}),
    )
    async with client(app) as c:
        assert (await c.get("/hook", headers={"x-signature-256": "a" * 12})).status_code == 200
        refused = await c.get("/hook", headers={"x-signature-256": "short"})
    assert refused.json()["errors"][0]["loc"] == ["header", "x-signature-256"]
    assert seen == ["a" * 12]


async def test_query_and_header_errors_come_together_before_the_body_is_read() -> None:
    class Q(BaseModel):
        page: int

    class H(BaseModel):
        x_tenant: str

    async def create(request: Request) -> JSONResponse:  # pragma: no cover
        return JSONResponse({})

    app = guard(
        Starlette(routes=[Route("/x", create, methods=["POST"])]),
        Middleware(
            ValidationMiddleware, routes={"POST /x": Rules(query=Q, headers=H, body=OrderIn)}
        ),
    )
    async with client(app) as c:
        response = await c.post(
            "/x?page=z", content=b"{not json", headers={"content-type": "application/json"}
        )
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["errors"]] == [
        ["query", "page"],
        ["header", "x-tenant"],
    ]


# --- getting the values --------------------------------------------------------------


async def test_validated_raises_lookup_error_when_nothing_was_validated() -> None:
    outcome = []

    async def endpoint(request: Request) -> JSONResponse:
        try:
            validated(request, "query")
        except LookupError as exc:
            outcome.append(str(exc))
        return JSONResponse({})

    app = guard(Starlette(routes=[Route("/e", endpoint)]), Middleware(ValidationMiddleware))
    async with client(app) as c:
        assert (await c.get("/e")).status_code == 200
    assert "no validated 'query'" in outcome[0]


# Module level: FastAPI resolves string annotations in the module's namespace.
class Filters(BaseModel):
    state: Literal["open", "cancelled"] = "open"


class Tenant(BaseModel):
    x_tenant: str


def fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.post("/orders", status_code=201)
    async def create(order: Annotated[OrderIn, Depends(validated_body)]) -> dict[str, Any]:
        return {"email": order.customer_email, "type": type(order).__name__}

    @app.post("/legacy", status_code=201)
    async def legacy(order: OrderIn) -> dict[str, Any]:
        """FastAPI validates its own model from the replayed body."""
        return {"email": order.customer_email}

    @app.get("/orders")
    async def search(
        filters: Annotated[Filters, Depends(validated_query)],
        tenant: Annotated[Tenant, Depends(validated_headers)],
    ) -> dict[str, Any]:
        return {"state": filters.state, "tenant": tenant.x_tenant}

    return guard(
        app,
        Middleware(
            ValidationMiddleware,
            routes={
                "POST /orders": Rules(body=OrderIn),
                "POST /legacy": Rules(body=OrderIn),
                "GET /orders": Rules(query=Filters, headers=Tenant),
            },
        ),
    )


async def test_fastapi_dependencies_receive_the_validated_models() -> None:
    async with client(fastapi_app()) as c:
        created = await c.post("/orders", json=ORDER)
        listed = await c.get("/orders?state=cancelled", headers={"x-tenant": "acme"})
    assert created.status_code == 201
    assert created.json() == {"email": "ada@example.com", "type": "OrderIn"}
    assert listed.json() == {"state": "cancelled", "tenant": "acme"}


async def test_fastapi_endpoint_with_its_own_model_keeps_working() -> None:
    async with client(fastapi_app()) as c:
        created = await c.post("/legacy", json=ORDER)
        refused = await c.post("/legacy", json={"lines": []})
    assert created.json() == {"email": "ada@example.com"}
    # The layer answered, in problem details, before FastAPI's own 422.
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    assert {e["loc"][-1] for e in refused.json()["errors"]} == {"customer_email", "lines"}


async def test_fastapi_body_bytes_arrive_unchanged() -> None:
    raw = json.dumps(ORDER, indent=3).encode()
    async with client(fastapi_app()) as c:
        response = await c.post(
            "/legacy", content=raw, headers={"content-type": "application/json"}
        )
    assert response.status_code == 201
