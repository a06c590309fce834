"""The registered claims of a verified token (RFC 7519 §4.1), checked once, here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from apiguard._clock import clock
from apiguard.auth._base import Failure
from apiguard.auth._options import check_seconds, check_strings
from apiguard.errors import ConfigError
from apiguard.principal import Principal

__all__ = ["ClaimRules"]

BAD_CLAIM: Final = Failure("invalid", "claim")
MISSING_CLAIM: Final = Failure("invalid", "missing_claim")
EXPIRED: Final = Failure("invalid", "expired")
NOT_YET_VALID: Final = Failure("invalid", "not_yet_valid")
ISSUED_IN_FUTURE: Final = Failure("invalid", "issued_in_future")
BAD_ISSUER: Final = Failure("invalid", "issuer")
BAD_AUDIENCE: Final = Failure("invalid", "audience")
NO_SUBJECT: Final = Failure("invalid", "subject")

#: Numeric dates beyond ±2**53 s are refused (and never overflow a float).
_MAX_DATE: Final = 2**53
_ABSENT: Final[Any] = object()
#: Where the principal's id comes from, in order: the subject, else the client
#: of a client-credentials token (Cognito's `client_id`, OIDC's `azp`).
_SUBJECT_CLAIMS: Final = ("sub", "client_id", "azp")


class ClaimRules:
    """`exp`, `nbf`, `iat` with leeway, exact `iss`, `aud`, required claims, scopes.

    Raises:
        ConfigError: an option is invalid.
    """

    __slots__ = ("_audience", "_issuer", "_leeway", "_required", "_scopes_claims")

    def __init__(
        self,
        *,
        audience: object,
        issuer: object,
        leeway: object,
        required_claims: object,
        scopes_claim: object,
    ) -> None:
        self._audience = _audience(audience)
        if issuer is not None and (not isinstance(issuer, str) or not issuer):
            msg = f"issuer: expected the exact 'iss' string, got {issuer!r}"
            raise ConfigError(msg)
        self._issuer: str | None = issuer
        self._leeway = check_seconds("leeway", leeway, high=300.0)
        self._required = check_strings("required_claims", required_claims)
        if scopes_claim is not None and (not isinstance(scopes_claim, str) or not scopes_claim):
            msg = f"scopes_claim: expected a claim name, got {scopes_claim!r}"
            raise ConfigError(msg)
        self._scopes_claims: Sequence[str] = (scopes_claim,) if scopes_claim else ("scope", "scp")

    def check(self, claims: dict[str, Any]) -> Failure | tuple[Principal, float | None]:
        """The principal and the cache deadline (`exp`), or why the claims are refused."""
        now = clock.time()
        leeway = self._leeway
        for name in self._required:
            if name not in claims:
                return MISSING_CLAIM
        exp = claims.get("exp", _ABSENT)
        if exp is not _ABSENT:
            if not _is_date(exp):
                return BAD_CLAIM
            if now >= exp + leeway:  # RFC 7519 §4.1.4: on or after exp is too late
                return EXPIRED
        nbf = claims.get("nbf", _ABSENT)
        if nbf is not _ABSENT:
            if not _is_date(nbf):
                return BAD_CLAIM
            if nbf > now + leeway:
                return NOT_YET_VALID
        iat = claims.get("iat", _ABSENT)
        if iat is not _ABSENT:
            if not _is_date(iat):
                return BAD_CLAIM
            if iat > now + leeway:
                return ISSUED_IN_FUTURE
        # Exact match: a prefix, a suffix or another spelling is another issuer.
        if self._issuer is not None and claims.get("iss") != self._issuer:
            return BAD_ISSUER
        aud = claims.get("aud", _ABSENT)
        if self._audience is None:
            if aud is not _ABSENT:  # RFC 7519 §4.1.3: not naming us is a refusal
                return BAD_AUDIENCE
        elif not _audience_matches(aud, self._audience):
            return BAD_AUDIENCE
        subject = None
        for name in _SUBJECT_CLAIMS:
            value = claims.get(name)
            if value is not None:
                if type(value) is not str or not value:
                    return BAD_CLAIM
                subject = subject or value
        if subject is None:
            return NO_SUBJECT
        scopes = self._scopes(claims)
        if scopes is None:
            return BAD_CLAIM
        principal = Principal(id=subject, scopes=scopes, method="jwt", claims=claims)
        return principal, (float(exp) if exp is not _ABSENT else None)

    def _scopes(self, claims: dict[str, Any]) -> frozenset[str] | None:
        """From `scope` (space-separated) or `scp` (a list, or a string in Entra ID)."""
        for name in self._scopes_claims:
            value = claims.get(name)
            if value is None:
                continue
            if type(value) is str:
                return frozenset(value.split())
            if type(value) is list and all(type(item) is str for item in value):
                return frozenset(value)
            return None
        return frozenset()


def _is_date(value: object) -> bool:
    """A NumericDate (RFC 7519 §2): a JSON number, not a string or a boolean."""
    kind = type(value)
    return (kind is int or kind is float) and -_MAX_DATE <= value <= _MAX_DATE  # type: ignore[operator]


def _audience(audience: object) -> frozenset[str] | None:
    if audience is None:
        return None
    if isinstance(audience, str):
        audience = (audience,)
    return frozenset(check_strings("audience", audience, allow_empty=False))


def _audience_matches(aud: object, accepted: frozenset[str]) -> bool:
    if type(aud) is str:
        return aud in accepted
    if type(aud) is list and aud and all(type(item) is str for item in aud):
        return not accepted.isdisjoint(aud)
    return False
