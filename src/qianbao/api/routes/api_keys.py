"""API keys: create (step-up), list, revoke, rotate; `whoami` for a signed request or a user session.

Keys are managed only from a user session (a key cannot mint or revoke keys). Signed requests are
authenticated in `api.deps` through `identity.api_keys.authenticate_signed_request`; endpoints that accept
keys use `user_or_key(scope)`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from qianbao.api.deps import Body, CurrentUser, Identity, Info, user_or_key
from qianbao.api.idempotency import SHOWN_ONCE_NOTE, run_idempotent, shown_once
from qianbao.clock import rfc3339
from qianbao.identity import api_keys
from qianbao.identity.model import Principal, PrincipalKind

router = APIRouter(tags=["api-keys"])


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KeyRequest(Strict):
    name: StrictStr
    scopes: list[StrictStr]


class KeyCreated(BaseModel):
    id: str
    name: str
    scopes: list[str]
    secret: str | None = Field(description=f"qbk_…, to sign requests; {SHOWN_ONCE_NOTE}")
    created_at: str


class KeyItem(BaseModel):
    id: str
    name: str
    scopes: list[str]
    status: str
    created_at: str
    expires_at: str | None
    revoked_at: str | None
    last_used_at: str | None
    replaced_by: str | None


class KeyList(BaseModel):
    data: list[KeyItem]
    next_cursor: str | None


class WhoAmI(BaseModel):
    kind: str
    key_id: str | None
    owner_user_id: str | None
    scopes: list[str]


def _time(us: int | None) -> str | None:
    return None if us is None else rfc3339(us)


def created_json(created: api_keys.CreatedKey) -> dict[str, Any]:
    key = created.key
    return {
        "id": key.id,
        "name": key.name,
        "scopes": list(key.scopes),
        "secret": created.secret,
        "created_at": rfc3339(key.created_at),
    }


def key_json(key: api_keys.ApiKeyView, now_us: int) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "scopes": list(key.scopes),
        "status": key.status(now_us),
        "created_at": rfc3339(key.created_at),
        "expires_at": _time(key.expires_at),
        "revoked_at": _time(key.revoked_at),
        "last_used_at": _time(key.last_used_at),
        "replaced_by": key.replaced_by,
    }


def _no_store(response: JSONResponse) -> JSONResponse:
    # The body holds a secret shown once: no cache may keep it.
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/v1/api-keys", status_code=201, response_model=KeyCreated)
def create_api_key(
    body: KeyRequest,
    request: Request,
    raw: Body,
    principal: CurrentUser,
    ctx: Identity,
    info: Info,
    step_up: Annotated[str | None, Header(alias="Step-Up")] = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    """Create a key with `scopes` ⊆ {read, payments:write, refunds:write, webhooks:manage}. A security
    change: the first answer is `401 step_up_required`. The `secret` is in this response only."""

    def work() -> tuple[int, dict[str, Any]]:
        created = api_keys.create_key(
            ctx, principal, name=body.name, scopes=body.scopes, info=info, step_up_header=step_up
        )
        return 201, created_json(created)

    return _no_store(
        run_idempotent(
            ctx,
            request,
            scope=principal.scope,
            key=idempotency_key,
            body=raw,
            work=work,
            once=shown_once(principal, "secret"),  # sealed; the secret replayed to this session only
        )
    )


@router.get("/v1/api-keys", response_model=KeyList)
def list_api_keys(
    principal: CurrentUser,
    ctx: Identity,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> dict[str, Any]:
    """The caller's keys, newest first, without secrets."""
    keys, next_cursor = api_keys.list_keys(ctx, principal, limit=limit, cursor=cursor)
    now = ctx.now()
    return {"data": [key_json(k, now) for k in keys], "next_cursor": next_cursor}


@router.get("/v1/api-keys/whoami", response_model=WhoAmI)
def whoami(principal: Annotated[Principal, Depends(user_or_key("read"))]) -> dict[str, Any]:
    """Who a signed request (a key with scope `read`) or a user session is acting as."""
    if principal.kind is PrincipalKind.API_KEY:
        return {
            "kind": principal.kind.value,
            "key_id": principal.id,
            "owner_user_id": principal.user_id,
            "scopes": sorted(principal.scopes),
        }
    # A user session may do whatever any key of theirs could.
    return {
        "kind": principal.kind.value,
        "key_id": None,
        "owner_user_id": principal.user_id,
        "scopes": list(api_keys.SCOPES),
    }


@router.delete("/v1/api-keys/{key_id}", status_code=204)
def revoke_api_key(key_id: str, principal: CurrentUser, ctx: Identity, info: Info) -> Response:
    """Revoke a key now (its signed requests are refused from the next one on)."""
    api_keys.revoke_key(ctx, principal, key_id, info)
    return Response(status_code=204)


@router.post("/v1/api-keys/{key_id}/rotate", status_code=201, response_model=KeyCreated)
def rotate_api_key(
    key_id: str,
    request: Request,
    raw: Body,
    principal: CurrentUser,
    ctx: Identity,
    info: Info,
    step_up: Annotated[str | None, Header(alias="Step-Up")] = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    """A new key with the same name and scopes (step-up first); the old key keeps working for the overlap
    period (`api_key_overlap_s`, 24 h by default), then expires."""

    def work() -> tuple[int, dict[str, Any]]:
        return 201, created_json(api_keys.rotate_key(ctx, principal, key_id, info, step_up))

    return _no_store(
        run_idempotent(
            ctx,
            request,
            scope=principal.scope,
            key=idempotency_key,
            body=raw,
            work=work,
            once=shown_once(principal, "secret"),  # sealed; the secret replayed to this session only
        )
    )
