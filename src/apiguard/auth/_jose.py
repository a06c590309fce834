"""Strict parsing of compact JWS tokens (RFC 7515 §7.1, RFC 7519 §7.2).

Everything here runs before any key is looked up or any signature computed,
and refuses what PyJWT alone lets through: `=` padding and non-canonical
base64url, JSON that is not a UTF-8 object, duplicate members (where
Python's `json` keeps the last one), `NaN`/`Infinity`, `crit` extensions, an
unexpected `typ`, nested tokens, and keys offered by the token itself
(`jku`, `x5u`, `jwk`). Failures are returned as short reason codes, not
raised, because refusing a flood of garbage must stay cheap.
"""

from __future__ import annotations

import binascii
import json
import json.scanner
import math
from typing import Any, Final

__all__ = [
    "JSONDecodeFailure",
    "decode_json_object",
    "decode_segment",
    "foreign_bytes",
    "strict_loads",
]

_TO_STANDARD: Final = bytes.maketrans(b"-_", b"+/")
_PADDING: Final = (b"", b"", b"==", b"=")
# A canonical encoding leaves the unused low bits of its last character zero
# (RFC 4648 §3.5): 4 spare bits when len % 4 == 2, 2 spare bits when == 3.
# Refusing the rest stops one signature from having several spellings.
_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_ALPHABET_AND_DOT: Final = _ALPHABET + b"."
_CANONICAL_LAST: Final[tuple[frozenset[int], ...]] = (
    frozenset(_ALPHABET),
    frozenset(),  # len % 4 == 1 is never valid
    frozenset(c for i, c in enumerate(_ALPHABET) if i % 16 == 0),
    frozenset(c for i, c in enumerate(_ALPHABET) if i % 4 == 0),
)


def foreign_bytes(data: bytes) -> bytes:
    """The bytes of `data` outside the base64url alphabet and `.` (empty when none).

    One C pass (`bytes.translate`): `=` padding, the standard alphabet's
    `+` and `/`, whitespace and anything else are all foreign.
    """
    return data.translate(None, _ALPHABET_AND_DOT)


def decode_segment(segment: bytes) -> bytes | None:
    """Decode one non-empty base64url segment already known to be of the alphabet.

    `None` when it is empty, its length is impossible, or its last character
    carries stray bits (a non-canonical encoding).
    """
    remainder = len(segment) % 4
    if not segment or segment[-1] not in _CANONICAL_LAST[remainder]:
        return None
    return binascii.a2b_base64(segment.translate(_TO_STANDARD) + _PADDING[remainder])


class JSONDecodeFailure(ValueError):
    """JSON that is not strict I-JSON (RFC 7493): duplicates, NaN, Infinity."""


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        # RFC 7515 §5.2 step 4 / RFC 7519 §7.2 step 9: reject duplicate members,
        # which `json` would silently resolve to the last one.
        raise JSONDecodeFailure("duplicate member")
    return document


def _refuse_constant(name: str) -> Any:
    raise JSONDecodeFailure(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999
        raise JSONDecodeFailure("number out of range")
    return value


_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_object_without_duplicates,
    parse_constant=_refuse_constant,
    parse_float=_finite_float,
)
# The decoder's C scanner, called directly: `JSONDecoder.decode` adds ~0.7 µs
# of Python-level wrapping per call, as much as parsing a JWT header.
_SCAN: Final = json.scanner.make_scanner(_DECODER)  # type: ignore[arg-type]
_JSON_SPACE: Final = " \t\n\r"


def strict_loads(text: str) -> Any:
    """Parse JSON strictly: no duplicate members, no NaN or Infinity, finite numbers.

    Raises:
        ValueError: the text is not strict JSON (`JSONDecodeError` and
            `JSONDecodeFailure` are both `ValueError`s).
        RecursionError: it nests too deeply.
    """
    return _DECODER.decode(text)


def decode_json_object(data: bytes) -> dict[str, Any] | None:
    """A UTF-8 JSON object, strictly parsed; `None` for anything else.

    UTF-16 or UTF-32 JSON (which `json.loads(bytes)` would detect and
    accept), a byte-order mark, invalid UTF-8, duplicate members, `NaN`,
    over-long integers and over-deep nesting are all refused.
    """
    try:
        text = data.decode("utf-8")
        if text[:1] == "{":
            document, end = _SCAN(text, 0)
            if end != len(text) and text[end:].strip(_JSON_SPACE):
                return None  # trailing garbage
        else:
            document = _DECODER.decode(text)  # leading whitespace, or not an object
    except (ValueError, RecursionError, StopIteration):
        return None
    return document if type(document) is dict else None
