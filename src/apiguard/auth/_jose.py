r"""Strict parsing of compact JWS tokens (RFC 7515 §7.1, RFC 7519 §7.2).

Everything here runs before any key is looked up or any signature computed,
and refuses what PyJWT alone lets through: `=` padding and non-canonical
base64url, JSON that is not a UTF-8 object, duplicate members (where
Python's `json` keeps the last one), `NaN`/`Infinity`, unpaired surrogate
escapes (`"\ud800"`, which I-JSON forbids and which decode to a `str`
that cannot be encoded again), `crit` extensions, an
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
    "encode_segment",
    "foreign_bytes",
    "strict_loads",
]

_TO_STANDARD: Final = bytes.maketrans(b"-_", b"+/")
_TO_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")
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


def encode_segment(data: bytes) -> bytes:
    """The canonical base64url of `data`, unpadded: what `decode_segment` reads back."""
    return binascii.b2a_base64(data, newline=False).rstrip(b"=").translate(_TO_URLSAFE)


class JSONDecodeFailure(ValueError):
    """JSON that is not strict I-JSON (RFC 7493): duplicates, NaN, Infinity, lone surrogates."""


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
# Serialises back without escaping, so that a lone surrogate stays one (C encoder).
_REENCODE: Final = json.JSONEncoder(ensure_ascii=False, check_circular=False).encode


def _has_lone_surrogate(document: Any) -> bool:
    r"""Whether a string anywhere in `document` holds an unpaired surrogate.

    `json` decodes a paired `\ud83d\ude00` to one code point, but keeps a
    lone `\ud800` (or a reversed pair) as a surrogate, which no UTF
    encoding accepts: RFC 7493 §2.1 forbids it. Only called when the text
    holds a backslash: an escape is the one way such a string can arise
    from strictly decoded UTF-8.
    """
    try:
        _REENCODE(document).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def strict_loads(text: str) -> Any:
    """Parse JSON strictly: no duplicates, NaN, Infinity, 1e999 or lone surrogates.

    Raises:
        ValueError: the text is not strict JSON (`JSONDecodeError` and
            `JSONDecodeFailure` are both `ValueError`s).
        RecursionError: it nests too deeply.
    """
    document = _DECODER.decode(text)
    if "\\" in text and _has_lone_surrogate(document):
        raise JSONDecodeFailure("unpaired surrogate")
    return document


def decode_json_object(data: bytes) -> dict[str, Any] | None:
    """A UTF-8 JSON object, strictly parsed; `None` for anything else.

    UTF-16 or UTF-32 JSON (which `json.loads(bytes)` would detect and
    accept), a byte-order mark, invalid UTF-8, duplicate members, `NaN`,
    unpaired surrogate escapes, over-long integers and over-deep nesting
    are all refused.
    """
    try:
        text = data.decode("utf-8")
        if text[:1] == "{":
            document, end = _SCAN(text, 0)
            if end != len(text) and text[end:].strip(_JSON_SPACE):
                return None  # trailing garbage
        else:
            document = _DECODER.decode(text)  # leading whitespace, or not an object
        # Strict UTF-8 decoding refuses encoded surrogates: only an escape
        # can make one ("\\" in a str is ~15 ns; in bytes, ten times that).
        if "\\" in text and _has_lone_surrogate(document):
            return None  # not I-JSON (RFC 7493 §2.1)
    except (ValueError, RecursionError, StopIteration):
        return None
    return document if type(document) is dict else None
