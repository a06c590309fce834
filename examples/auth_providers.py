"""JWTAuth for the usual identity providers: what to put where."""

from collections.abc import Mapping

from apiguard import JWTAuth, Principal

# --8<-- [start:auth0]
# Auth0: the audience is the API identifier; the issuer ends with a slash.
# With RBAC on, permissions arrive in a `permissions` list.
auth0 = JWTAuth(
    issuer="https://example.eu.auth0.com/",
    jwks_url="https://example.eu.auth0.com/.well-known/jwks.json",
    audience="https://orders.example.com",
    algorithms=["RS256"],
    scopes_claim="permissions",
)
# --8<-- [end:auth0]


# --8<-- [start:keycloak]
# Keycloak: add an audience mapper for the client; realm roles sit in a
# nested claim, which a principal hook turns into scopes.
def keycloak_roles(principal: Principal) -> Principal:
    realm_access = principal.claims.get("realm_access")
    roles = realm_access.get("roles", []) if isinstance(realm_access, Mapping) else []
    return Principal(
        id=principal.id,
        scopes=principal.scopes | {f"role:{role}" for role in roles if isinstance(role, str)},
        claims=principal.claims,
    )


keycloak = JWTAuth(
    issuer="https://sso.example.com/realms/orders",
    jwks_url="https://sso.example.com/realms/orders/protocol/openid-connect/certs",
    audience="orders-api",
    algorithms=["RS256"],
    principal=keycloak_roles,
)
# --8<-- [end:keycloak]

# --8<-- [start:entra]
# Microsoft Entra ID (v2.0 tokens): delegated scopes come in `scp` (read by
# default), application permissions in `roles`.
TENANT = "00000000-0000-0000-0000-000000000000"
entra = JWTAuth(
    issuer=f"https://login.microsoftonline.com/{TENANT}/v2.0",
    jwks_url=f"https://login.microsoftonline.com/{TENANT}/discovery/v2.0/keys",
    audience=["api://orders", "11111111-2222-3333-4444-555555555555"],
    algorithms=["RS256"],
)
# --8<-- [end:entra]

# --8<-- [start:cognito]
# Amazon Cognito: access tokens carry no `aud` but a `client_id` and
# `token_use`; keep the app clients you accept, and access tokens only.
POOL = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf123"
CLIENTS = {"4q7o1ad2example"}


def cognito_access_tokens(principal: Principal) -> Principal | None:
    claims = principal.claims
    if claims.get("token_use") != "access" or claims.get("client_id") not in CLIENTS:
        return None  # refused: 401 invalid_token
    return principal


cognito = JWTAuth(
    issuer=POOL,
    jwks_url=f"{POOL}/.well-known/jwks.json",
    audience=None,
    algorithms=["RS256"],
    principal=cognito_access_tokens,
)
# --8<-- [end:cognito]
