"""ECDSA signatures in their low-s spelling, so that one token has one cache key.

ECDSA verification accepts `(r, s)` and `(r, n - s)` alike (FIPS 186-5
§6.4.2 checks only `0 < s < n`), so anyone holding an ES256 token can spell
it a second way without the key: the same claims, another signature, another
SHA-256. Refusing the high-s spelling (as Bitcoin's BIP 62 does) would
refuse real tokens: most JOSE libraries and key services sign with whichever
`s` comes out. So `JWTAuth` accepts both, and keys its cache (and the
digest it exposes) on the low-s spelling, `s' = min(s, n - s)`.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CURVES", "low_s"]

#: The order n of each curve's base point and the size in bytes of r and of s
#: in a JWS signature (RFC 7518 §3.4: `r || s`, each as long as the order).
#: P-256, P-384, P-521: SEC 2 v2 §2.4.2, §2.5.1, §2.6.1 (NIST SP 800-186
#: §3.2.1); secp256k1: SEC 2 v2 §2.4.1 (RFC 8812 §3.2).
CURVES: Final[dict[str, tuple[int, int]]] = {
    "ES256": (0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551, 32),
    "ES384": (
        int(
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
            "C7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
            16,
        ),
        48,
    ),
    "ES512": (
        int(
            "01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFA"
            "51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
            16,
        ),
        66,
    ),
    "ES256K": (0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141, 32),
}


def low_s(signature: bytes, curve: tuple[int, int]) -> bytes:
    """`signature` with s replaced by n - s when s > n / 2; else `signature` itself.

    A signature of the wrong length, or with s outside `(0, n)`, is returned
    as it is: it fails verification in either spelling.
    """
    order, size = curve
    if len(signature) != 2 * size:
        return signature
    s = int.from_bytes(signature[size:], "big")
    if order >> 1 < s < order:
        return signature[:size] + (order - s).to_bytes(size, "big")
    return signature
