"""Who is calling: the principal an authenticator establishes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from apiguard.errors import ConfigError

__all__ = ["Principal"]

_NO_CLAIMS: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller, as authentication established it.

    After the authentication layer, `request.state.principal` is this object,
    and `request.user` is too: it has Starlette's `BaseUser` properties, so
    `request.user.is_authenticated`, `request.user.display_name` and
    `@requires(...)` work as with Starlette's own `AuthenticationMiddleware`.

    Args:
        id: A stable identifier: the token's subject, the API key's owner.
        scopes: What the caller may do (`"orders:write"`), any iterable of
            strings; kept as a frozenset.
        plan: The caller's plan (`"free"`, `"pro"`), for per-plan quotas.
        method: How the caller was authenticated: `"jwt"`, `"api_key"`, ...
        claims: The verified token's claims, or whatever the key lookup
            returned about the caller; read-only.

    Raises:
        ConfigError: a field is of the wrong type (a `ValueError`, as before).

    Examples:
        >>> partner = Principal(id="partner", scopes=["orders:read"], plan="pro")
        >>> partner.scopes
        frozenset({'orders:read'})
        >>> partner.is_authenticated, partner.display_name
        (True, 'partner')
    """

    id: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    plan: str | None = None
    method: str | None = None
    claims: Mapping[str, Any] = field(default_factory=lambda: _NO_CLAIMS)

    def __post_init__(self) -> None:
        given_id: object = self.id  # typed str, but users pass anything
        if not isinstance(given_id, str) or not given_id:
            msg = f"Principal: id {given_id!r} is not a non-empty string"
            raise ConfigError(msg)
        scopes: object = self.scopes
        if isinstance(scopes, str) or not isinstance(scopes, Iterable):
            msg = f"Principal: scopes {scopes!r} is not an iterable of strings (a list, a set)"
            raise ConfigError(msg)
        if not isinstance(scopes, frozenset):
            object.__setattr__(self, "scopes", frozenset(scopes))
        plan: object = self.plan
        if plan is not None and not isinstance(plan, str):
            msg = f"Principal: plan {plan!r} is not a string"
            raise ConfigError(msg)
        if not isinstance(self.claims, MappingProxyType):
            object.__setattr__(self, "claims", MappingProxyType(dict(self.claims)))

    # Starlette's BaseUser interface, so that request.user works.
    @property
    def is_authenticated(self) -> bool:
        """Always true: a principal is an authenticated caller."""
        return True

    @property
    def display_name(self) -> str:
        """The principal's id."""
        return self.id

    @property
    def identity(self) -> str:
        """The principal's id."""
        return self.id
