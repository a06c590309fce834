"""`IPRules`: one route's allow and deny lists."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["IPRules"]


@dataclass(frozen=True, slots=True)
class IPRules:
    """The address rules of one route, beside the layer's own.

    Args:
        allow: CIDRs or addresses allowed on this route, in place of the
            layer's `allow` list (`None`: the layer's list, if any). To open
            a route to everyone under a layer-wide allow list, give
            `["0.0.0.0/0", "::/0"]`.
        deny: CIDRs or addresses refused on this route, in addition to the
            layer's `deny` list (which no route can lift).

    Examples:
        >>> IPRules(allow=["10.0.0.0/8"], deny=["10.6.6.0/24"])
        IPRules(allow=['10.0.0.0/8'], deny=['10.6.6.0/24'])
    """

    allow: Sequence[str] | None = None
    deny: Sequence[str] = ()
