"""The OpenAPI schema documents what the guards impose, and stays valid OpenAPI 3.1."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from starlette.middleware import Middleware

from apiguard import (
    APIKeyAuth,
    AuthMiddleware,
    IPFilterMiddleware,
    JWTAuth,
    Principal,
    RateLimitMiddleware,
    guard,
)
from apiguard.layer import Answer, Description, HeaderInfo, Security
from apiguard.openapi import enrich_openapi, guarded_openapi
from apiguard.testing import generate_key

pytestmark = pytest.mark.anyio


def orders() -> dict[str, Any]:
    from examples.orders import app

    return app.openapi()  # type: ignore[no-any-return]


def test_the_orders_schema_validates_against_the_openapi_3_1_meta_schema() -> None:
    schema = orders()
    assert schema["openapi"].startswith("3.1")
    validate(schema)  # raises on any violation of the 3.1 meta-schema


def test_the_validator_refuses_a_broken_schema() -> None:
    """The check above can fail: a response without its required description."""
    schema = copy.deepcopy(orders())
    del schema["paths"]["/orders"]["get"]["responses"]["401"]["description"]
    with pytest.raises(OpenAPIValidationError):
        validate(schema)


def test_security_schemes_and_requirements_per_operation() -> None:
    schema = orders()
    assert schema["components"]["securitySchemes"] == {
        "api_key": {"type": "apiKey", "in": "header", "name": "x-api-key"}
    }
    paths = schema["paths"]
    assert paths["/health"]["get"]["security"] == []  # public: no requirement
    assert paths["/orders"]["get"]["security"] == [{"api_key": ["orders:read"]}]
    assert paths["/orders"]["post"]["security"] == [{"api_key": ["orders:write"]}]


def test_refusals_are_documented_with_problem_details_and_their_headers() -> None:
    responses = orders()["paths"]["/orders"]["post"]["responses"]
    assert {"400", "401", "403", "413", "415", "422", "429"} <= set(responses)
    unauthorized = responses["401"]
    assert unauthorized["headers"]["WWW-Authenticate"]["required"] is True
    body = unauthorized["content"]["application/problem+json"]["schema"]
    assert body["allOf"][0] == {"$ref": "#/components/schemas/Problem"}
    assert body["allOf"][1]["properties"]["status"] == {"const": 401}
    too_many = responses["429"]
    assert too_many["headers"]["Retry-After"]["required"] is True
    assert too_many["headers"]["Retry-After"]["schema"] == {"type": "integer", "minimum": 0}
    assert too_many["headers"]["RateLimit"]["required"] is True
    assert "RateLimit-Policy" in too_many["headers"]
    quota = too_many["content"]["application/problem+json"]["schema"]["allOf"][1]
    assert quota["properties"]["type"]["enum"] == [
        "https://iana.org/assignments/http-problem-types#quota-exceeded"
    ]


def test_a_status_the_app_documents_keeps_its_own_content_beside_the_problem() -> None:
    unprocessable = orders()["paths"]["/orders"]["post"]["responses"]["422"]
    assert unprocessable["description"] == "Validation Error"  # FastAPI's
    assert set(unprocessable["content"]) == {"application/json", "application/problem+json"}
    assert "required" not in unprocessable["headers"]["RateLimit"]


def test_the_rate_limit_fields_are_on_the_apps_own_responses() -> None:
    paths = orders()["paths"]
    created = paths["/orders"]["post"]["responses"]["201"]["headers"]
    assert set(created) == {"RateLimit", "RateLimit-Policy"}
    assert "required" not in created["RateLimit"]  # a limiter failing open sends none
    assert "headers" not in paths["/health"]["get"]["responses"]["200"]  # exempt


def test_a_public_route_has_no_authentication_refusals() -> None:
    health = orders()["paths"]["/health"]["get"]["responses"]
    assert not {"401", "403", "429"} & set(health)


async def test_the_served_schema_is_the_enriched_one() -> None:
    from examples.orders import app

    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        served = (await client.get("/openapi.json")).json()
    assert served["components"]["securitySchemes"]["api_key"]["in"] == "header"
    assert served == orders()


def jwt_app() -> FastAPI:
    app = FastAPI()

    @app.get("/me")
    async def me() -> dict[str, str]:
        return {}

    @app.get("/feed")
    async def feed() -> dict[str, str]:
        return {}

    key = generate_key("RS256", kid="k1")
    return guard(
        app,
        Middleware(IPFilterMiddleware, routes={"GET /me": _office()}),
        Middleware(
            AuthMiddleware,
            authenticators=[
                JWTAuth(key=key.public_pem(), algorithms=["RS256"], audience="api"),
                APIKeyAuth(keys={"k-partner-0001": Principal(id="partner")}),
            ],
            optional=["GET /feed"],
            scopes={"GET /me": ["profile"]},
        ),
    )


def _office() -> Any:
    from apiguard.ipfilter import IPRules

    return IPRules(allow=["10.0.0.0/8"])


def test_bearer_jwt_with_scopes_and_an_optional_route() -> None:
    app = jwt_app()
    schema = enrich_openapi(app.openapi(), app)
    validate(schema)
    assert schema["components"]["securitySchemes"]["jwt"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    me = schema["paths"]["/me"]["get"]
    assert me["security"] == [{"jwt": ["profile"]}, {"api_key": ["profile"]}]
    feed = schema["paths"]["/feed"]["get"]
    assert feed["security"] == [{"jwt": []}, {"api_key": []}, {}]  # {}: anonymous too
    # The IP filter's 403 and the scope's 403 share a status: the header is not always there.
    forbidden = me["responses"]["403"]
    assert "required" not in forbidden["headers"]["WWW-Authenticate"]
    assert "403" not in feed["responses"]


class IdempotencyLike:
    """A layer of someone else's, known to the enrichment only by its description."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    def describe(self, method: str, key: str) -> Description:
        if method != "POST":
            return Description("idempotency", "idempotency", False)
        return Description(
            "idempotency",
            "idempotency",
            answers=(
                Answer(409, "in-flight", description="A request with this key is in flight."),
                Answer(422, "key-reused", description="This key was used with another payload."),
            ),
            request_headers=(
                HeaderInfo("Idempotency-Key", required=True, description="An sf-string key."),
            ),
        )


class HealthLike:
    """A health layer answering its own routes: it counts them as public."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    def describe(self, method: str, key: str) -> Description:
        if key != "/healthz":
            return Description("health", "health", False)
        return Description("health", "health", security=Security("public"), handles=True)


def test_layers_of_other_kinds_appear_through_their_descriptions() -> None:
    app = FastAPI()

    @app.post("/payments")
    async def pay() -> dict[str, str]:
        return {}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {}

    keys = APIKeyAuth(keys={"k-1234567890": Principal(id="a")})
    guard(
        app,
        Middleware(HealthLike),
        Middleware(AuthMiddleware, authenticators=[keys]),
        Middleware(IdempotencyLike),
    )
    schema = enrich_openapi(app.openapi(), app)
    validate(schema)
    payment = schema["paths"]["/payments"]["post"]
    assert {
        "name": "Idempotency-Key",
        "in": "header",
        "required": True,
        "schema": {"type": "string"},
        "description": "An sf-string key.",
    } in payment["parameters"]
    assert payment["responses"]["409"]["description"] == "A request with this key is in flight."
    assert payment["security"] == [{"api_key": []}]
    # The health layer answers /healthz itself: authentication never runs there.
    health = schema["paths"]["/healthz"]["get"]
    assert health["security"] == []
    assert "401" not in health["responses"]


def test_two_limiters_headers_reach_inner_refusals() -> None:
    app = FastAPI()

    @app.get("/x")
    async def x() -> dict[str, str]:
        return {}

    guard(
        app,
        Middleware(RateLimitMiddleware, name="ip", limit="10/minute"),
        Middleware(
            AuthMiddleware, authenticators=[APIKeyAuth(keys={"k-1234567890": Principal(id="a")})]
        ),
    )
    responses = enrich_openapi(app.openapi(), app)["paths"]["/x"]["get"]["responses"]
    assert "RateLimit" in responses["401"]["headers"]  # the outer limiter admitted it


def test_the_original_schema_is_left_as_it_was() -> None:
    app = jwt_app()
    plain = app.openapi()
    before = copy.deepcopy(plain)
    enrich_openapi(plain, app)
    assert plain == before


def test_guarded_openapi_makes_the_schema_once() -> None:
    app = jwt_app()
    app.openapi = guarded_openapi(app)  # type: ignore[method-assign]
    first = app.openapi()
    assert app.openapi() is first
    assert "securitySchemes" in first["components"]


def test_a_replaced_problem_formatter_can_be_documented() -> None:
    app = jwt_app()
    legacy = {"type": "object", "properties": {"error": {"type": "object"}}}
    schema = enrich_openapi(
        app.openapi(), app, problem_media_type="application/json", problem_schema=legacy
    )
    validate(schema)
    assert schema["components"]["schemas"]["Problem"] == legacy
    unauthorized = schema["paths"]["/me"]["get"]["responses"]["401"]["content"]
    assert unauthorized["application/json"] == {"schema": {"$ref": "#/components/schemas/Problem"}}


def test_the_fail_safe_layers_document_their_503s() -> None:
    from apiguard import CircuitBreakerMiddleware, ConcurrencyLimitMiddleware, HealthMiddleware

    app = FastAPI()

    @app.get("/stock/{sku}")
    async def stock(sku: str) -> dict[str, str]:
        return {"sku": sku}

    guard(
        app,
        Middleware(HealthMiddleware),
        Middleware(ConcurrencyLimitMiddleware, max_in_flight=10),
        Middleware(CircuitBreakerMiddleware),
    )
    schema = enrich_openapi(app.openapi(), app)
    validate(schema)
    unavailable = schema["paths"]["/stock/{sku}"]["get"]["responses"]["503"]
    assert unavailable["headers"]["Retry-After"]["required"] is True
    assert "application/problem+json" in unavailable["content"]
    assert "/health/live" not in schema["paths"]  # not an API operation
