"""A token's JOSE header: parsed strictly, checked, and kept by segment."""

from __future__ import annotations

from typing import Any, Final

from apiguard.auth._base import Failure
from apiguard.auth._jose import decode_json_object, decode_segment, foreign_bytes

__all__ = ["BAD_ALGORITHM", "MALFORMED_TOKEN", "HeaderCheck"]

# Why a token was refused: internal codes, for decisions and debug logs only.
MALFORMED_TOKEN: Final = Failure("invalid", "malformed")
BAD_ALGORITHM: Final = Failure("invalid", "algorithm")
BAD_HEADER: Final = Failure("invalid", "header")
BAD_TYPE: Final = Failure("invalid", "typ")
BAD_KID: Final = Failure("invalid", "kid")

#: Header parameters refused outright. `crit`: no extension is understood
#: (RFC 7515 §4.1.11). `jku`, `x5u`, `jwk`: keys named or carried by the token
#: itself are never trusted. `b64`: unencoded payloads (RFC 7797) are not
#: supported. `cty`: nested tokens are not supported (RFC 7519 §5.2).
_REFUSED_HEADERS: Final = frozenset({"crit", "jku", "x5u", "jwk", "b64", "cty"})
_ABSENT: Final[Any] = object()
#: Parsed headers kept (an issuer uses a handful: one per key and type).
_CACHE_SIZE: Final = 256


class HeaderCheck:
    """The `alg` and `kid` of a header segment, checked against a verifier's rules.

    Args:
        algorithms: The `alg` values allowed.
        types: The `typ` values accepted when `typ` is present, lowercase,
            without the `application/` prefix.
    """

    __slots__ = ("_algorithms", "_parsed", "_types")

    def __init__(self, algorithms: frozenset[str], types: frozenset[str]) -> None:
        self._algorithms = algorithms
        self._types = types
        self._parsed: dict[bytes, tuple[str, str | None] | Failure] = {}

    def __call__(self, segment: bytes) -> tuple[str, str | None] | Failure:
        """`(alg, kid)`, or why the header is refused; cached by segment."""
        parsed = self._parsed.get(segment)
        if parsed is None:
            parsed = self._parse(segment)
            if len(self._parsed) >= _CACHE_SIZE:
                self._parsed.clear()  # random headers (an attack) cannot grow it
            self._parsed[segment] = parsed
        return parsed

    def _parse(self, segment: bytes) -> tuple[str, str | None] | Failure:
        if foreign_bytes(segment):
            return MALFORMED_TOKEN
        header_bytes = decode_segment(segment)
        header = decode_json_object(header_bytes) if header_bytes is not None else None
        if header is None:
            return MALFORMED_TOKEN
        alg = header.get("alg")
        if type(alg) is not str or alg not in self._algorithms:
            return BAD_ALGORITHM
        if not _REFUSED_HEADERS.isdisjoint(header):
            return BAD_HEADER
        typ = header.get("typ", _ABSENT)
        if typ is not _ABSENT and (
            type(typ) is not str or typ.lower().removeprefix("application/") not in self._types
        ):
            return BAD_TYPE
        kid = header.get("kid")
        if kid is not None and type(kid) is not str:
            return BAD_KID
        return alg, kid
