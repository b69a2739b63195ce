"""Request-scoped dependencies: the container, request facts, and who is calling.

Callers authenticate with `Authorization: Bearer <session token>`, with the web app's session cookie
(state-changing requests then need the `X-CSRF-Token` header), or with an API key whose requests are
HMAC-signed (`Qianbao-Key`, `Qianbao-Timestamp`, `Qianbao-Nonce`, `Qianbao-Signature`).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Header, Request

from qianbao.bootstrap import Container
from qianbao.errors import Forbidden, Unauthenticated
from qianbao.identity import api_keys, sessions
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal, PrincipalKind, RequestInfo

SESSION_COOKIE = "qb_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def container(request: Request) -> Container:
    found: Container = request.app.state.container
    return found


# Dependencies that do no I/O are `async def`: FastAPI runs a plain `def` dependency in the thread pool,
# and each such hop (event loop -> thread -> event loop) costs more than the dependency's own work.
async def identity(request: Request) -> IdentityContext:
    return container(request).identity


async def request_info(
    request: Request, device_id: Annotated[str | None, Header(alias="Device-Id")] = None
) -> RequestInfo:
    return RequestInfo(
        ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
        device_key=device_id,
    )


async def raw_body(request: Request) -> bytes:
    return await request.body()


def _principal(request: Request, body: bytes) -> Principal:
    ctx = container(request).identity
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("use Authorization: Bearer <token>")
        principal = sessions.authenticate_token(ctx, token.strip())
        if principal.transport == "cookie":
            raise Unauthenticated("a web session token is only valid as a cookie")
        return principal
    signed = api_keys.authenticate_signed_request(
        ctx, request.method, request.url.path, request.url.query, dict(request.headers), body
    )
    if signed is not None:
        return signed
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        principal = sessions.authenticate_token(ctx, cookie)
        if principal.transport != "cookie":
            raise Unauthenticated("this token is not a web session")
        if request.method not in SAFE_METHODS:
            sessions.check_csrf(ctx, principal.session_id or "", request.headers.get(CSRF_HEADER))
        return principal
    raise Unauthenticated("sign in first: no credentials were sent")


def current_principal(request: Request, body: Annotated[bytes, Depends(raw_body)]) -> Principal:
    """Who is calling (sync: FastAPI runs it in the thread pool, off the event loop)."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is None:
        cached = _principal(request, body)
        request.state.principal = cached
    return cached


def optional_principal(request: Request, body: Annotated[bytes, Depends(raw_body)]) -> Principal | None:
    """The caller if credentials were sent, else None (for endpoints that also serve signed-out users)."""
    if request.headers.get("authorization") or request.cookies.get(SESSION_COOKIE):
        return current_principal(request, body)
    if any(h.lower().startswith("qianbao-") for h in request.headers):
        return current_principal(request, body)
    return None


async def user_principal(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    """A signed-in user (session): the consumer endpoints."""
    if principal.kind is not PrincipalKind.USER:
        raise Forbidden("this endpoint is for signed-in users")
    return principal


def user_or_key(scope: str) -> Callable[[Principal], Coroutine[Any, Any, Principal]]:
    """A user session, or an API key holding `scope` (acting for the key's owner)."""

    async def dependency(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if principal.kind is PrincipalKind.USER:
            return principal
        if principal.kind is PrincipalKind.API_KEY and scope in principal.scopes:
            return principal
        raise Forbidden(f"this endpoint needs a user session or an API key with scope {scope!r}")

    return dependency


async def operator_principal(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if principal.kind is not PrincipalKind.OPERATOR:
        raise Forbidden("this endpoint is for operators")
    return principal


def uploading_user(request: Request) -> Principal:
    """A signed-in user, authenticated without reading the request body: uploads (a photo of up to 8 MiB)
    are read only once the server has room for them (`qr_images.UploadAdmission`), never to authenticate
    them. API keys sign the body, so they cannot be checked without it: these routes refuse them (they are
    for users, as `user_principal` says) before a byte is read."""
    if not request.headers.get("authorization") and any(
        name.lower().startswith("qianbao-") for name in request.headers
    ):
        raise Forbidden("this endpoint is for signed-in users")
    principal = _principal(request, b"")  # a bearer token or a session cookie: the body plays no part
    if principal.kind is not PrincipalKind.USER:
        raise Forbidden("this endpoint is for signed-in users")
    return principal


CurrentUser = Annotated[Principal, Depends(user_principal)]
UploadingUser = Annotated[Principal, Depends(uploading_user)]
CurrentOperator = Annotated[Principal, Depends(operator_principal)]
Identity = Annotated[IdentityContext, Depends(identity)]
Info = Annotated[RequestInfo, Depends(request_info)]
Body = Annotated[bytes, Depends(raw_body)]
MaybePrincipal = Annotated[Principal | None, Depends(optional_principal)]
