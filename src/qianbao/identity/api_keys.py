"""API keys for merchants and partners: scoped, shown once, HMAC-signed requests (being built)."""

from __future__ import annotations

from collections.abc import Mapping

from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal


def authenticate_signed_request(
    ctx: IdentityContext, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes
) -> Principal | None:
    """The API key principal of a signed request; None when the request carries no signature headers."""
    del ctx, method, path, query, body
    if any(h.lower() == "qianbao-key" for h in headers):
        from qianbao.errors import Unauthenticated

        raise Unauthenticated("API keys are not enabled yet")
    return None
