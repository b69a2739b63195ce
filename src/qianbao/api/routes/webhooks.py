"""Webhook endpoints: create (secret shown once), list, read, change, delete, rotate the secret; the delivery
log and manual resend. For a user session or an API key with scope `webhooks:manage` (docs/webhooks.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from qianbao.api.deps import Body, Identity, Info, user_or_key
from qianbao.api.idempotency import SHOWN_ONCE_NOTE, run_idempotent, shown_once
from qianbao.clock import rfc3339
from qianbao.events import deliveries, webhooks
from qianbao.identity.model import Principal

router = APIRouter(tags=["webhooks"])
Manager = Annotated[Principal, Depends(user_or_key("webhooks:manage"))]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EndpointRequest(Strict):
    url: StrictStr = Field(description="https URL (sandbox: also http://localhost or http://127.0.0.1)")
    events: list[StrictStr] = Field(description='event types, families such as "payment.*", or "*"')
    description: StrictStr | None = None


class EndpointPatch(Strict):
    url: StrictStr | None = None
    events: list[StrictStr] | None = None
    enabled: StrictBool | None = None
    description: StrictStr | None = None


class RotateRequest(Strict):
    previous_secret_valid_s: StrictInt = Field(
        default=0, description="how long the old secret keeps signing too (0 to 604800 s; 0: stop now)"
    )


class EndpointOut(BaseModel):
    id: str
    url: str
    description: str | None
    events: list[str]
    enabled: bool
    created_at: str
    updated_at: str
    previous_secret_expires_at: str | None


class EndpointWithSecretOut(EndpointOut):
    secret: str | None = Field(description=f"whsec_…, to verify signatures; {SHOWN_ONCE_NOTE}")


class EndpointList(BaseModel):
    data: list[EndpointOut]
    next_cursor: str | None


class AttemptOut(BaseModel):
    id: str
    number: int
    manual: bool
    attempted_at: str
    status_code: int | None
    latency_ms: int | None = Field(description="milliseconds until the answer; null when none came (`error`)")
    response_snippet: str | None = Field(description="the first 500 characters of the answer")
    error: str | None
    succeeded: bool


class DeliveryOut(BaseModel):
    id: str
    endpoint_id: str
    event_id: str
    event_type: str
    status: str = Field(description="pending, delivered or failed")
    attempt_count: int
    next_attempt_at: str | None
    created_at: str
    last_attempt_at: str | None
    delivered_at: str | None
    attempts: list[AttemptOut] = Field(description="newest first; in a list only the latest")


class DeliveryList(BaseModel):
    data: list[DeliveryOut]
    next_cursor: str | None


def _time(us: int | None) -> str | None:
    return None if us is None else rfc3339(us)


def endpoint_json(e: webhooks.EndpointView) -> dict[str, Any]:
    return {
        "id": e.id,
        "url": e.url,
        "description": e.description,
        "events": list(e.events),
        "enabled": e.enabled,
        "created_at": rfc3339(e.created_at),
        "updated_at": rfc3339(e.updated_at),
        "previous_secret_expires_at": _time(e.previous_secret_expires_at),
    }


def with_secret_json(created: webhooks.EndpointWithSecret) -> dict[str, Any]:
    return {**endpoint_json(created.endpoint), "secret": created.secret}


def delivery_json(d: deliveries.DeliveryView) -> dict[str, Any]:
    return {
        "id": d.id,
        "endpoint_id": d.endpoint_id,
        "event_id": d.event_id,
        "event_type": d.event_type,
        "status": d.status,
        "attempt_count": d.attempt_count,
        "next_attempt_at": _time(d.next_attempt_at),
        "created_at": rfc3339(d.created_at),
        "last_attempt_at": _time(d.last_attempt_at),
        "delivered_at": _time(d.delivered_at),
        "attempts": [
            {
                "id": a.id,
                "number": a.number,
                "manual": a.manual,
                "attempted_at": rfc3339(a.attempted_at),
                "status_code": a.status_code,
                "latency_ms": a.latency_ms,
                "response_snippet": a.response_snippet,
                "error": a.error,
                "succeeded": a.succeeded,
            }
            for a in d.attempts
        ],
    }


def _no_store(response: JSONResponse) -> JSONResponse:
    # The body holds a signing secret shown once: no cache may keep it.
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/v1/webhook-endpoints", status_code=201, response_model=EndpointWithSecretOut)
def create_webhook_endpoint(
    body: EndpointRequest,
    request: Request,
    raw: Body,
    principal: Manager,
    ctx: Identity,
    info: Info,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    """Register a URL for the events about you. The `secret` (to verify signatures) is in this response
    only; at most 16 endpoints per user (`409 conflict`)."""

    def work() -> tuple[int, dict[str, Any]]:
        created = webhooks.create_endpoint(
            ctx, principal, url=body.url, events=body.events, description=body.description, info=info
        )
        return 201, with_secret_json(created)

    return _no_store(
        run_idempotent(
            ctx,
            request,
            scope=principal.scope,
            key=idempotency_key,
            body=raw,
            work=work,
            once=shown_once(principal, "secret"),
        )
    )


@router.get("/v1/webhook-endpoints", response_model=EndpointList)
def list_webhook_endpoints(
    principal: Manager,
    ctx: Identity,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """Your endpoints, newest first, without their secrets."""
    found, next_cursor = webhooks.list_endpoints(ctx, principal, limit=limit, cursor=cursor)
    return {"data": [endpoint_json(e) for e in found], "next_cursor": next_cursor}


@router.get("/v1/webhook-endpoints/{endpoint_id}", response_model=EndpointOut)
def get_webhook_endpoint(endpoint_id: str, principal: Manager, ctx: Identity) -> dict[str, Any]:
    """One of your endpoints (its URL, event types, status), without its secret."""
    return endpoint_json(webhooks.get_endpoint(ctx, principal, endpoint_id))


@router.patch("/v1/webhook-endpoints/{endpoint_id}", response_model=EndpointOut)
def update_webhook_endpoint(
    endpoint_id: str, body: EndpointPatch, principal: Manager, ctx: Identity, info: Info
) -> dict[str, Any]:
    """Change `url`, `events`, `enabled` and/or `description`; fields left out stay as they are. While
    disabled, an endpoint gets no new deliveries and its pending ones wait."""
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    return endpoint_json(webhooks.update_endpoint(ctx, principal, endpoint_id, changes, info))


@router.delete("/v1/webhook-endpoints/{endpoint_id}", status_code=204)
def delete_webhook_endpoint(endpoint_id: str, principal: Manager, ctx: Identity, info: Info) -> Response:
    """Delete the endpoint and its delivery log; nothing more is sent to it."""
    webhooks.delete_endpoint(ctx, principal, endpoint_id, info)
    return Response(status_code=204)


@router.post(
    "/v1/webhook-endpoints/{endpoint_id}/rotate-secret", status_code=201, response_model=EndpointWithSecretOut
)
def rotate_webhook_secret(
    endpoint_id: str,
    request: Request,
    raw: Body,
    principal: Manager,
    ctx: Identity,
    info: Info,
    body: RotateRequest | None = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    """A new signing secret (in this response only). With `previous_secret_valid_s`, deliveries are signed
    with both secrets until then, so receivers can switch without losing any."""
    valid_s = body.previous_secret_valid_s if body is not None else 0

    def work() -> tuple[int, dict[str, Any]]:
        rotated = webhooks.rotate_secret(ctx, principal, endpoint_id, previous_valid_s=valid_s, info=info)
        return 201, with_secret_json(rotated)

    return _no_store(
        run_idempotent(
            ctx,
            request,
            scope=principal.scope,
            key=idempotency_key,
            body=raw,
            work=work,
            once=shown_once(principal, "secret"),
        )
    )


@router.get("/v1/webhook-endpoints/{endpoint_id}/deliveries", response_model=DeliveryList)
def list_webhook_deliveries(
    endpoint_id: str,
    principal: Manager,
    ctx: Identity,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[str | None, Query(max_length=16, description="pending, delivered or failed")] = None,
) -> dict[str, Any]:
    """The delivery log, newest first, each delivery with its latest attempt."""
    found, next_cursor = deliveries.list_deliveries(
        ctx, principal, endpoint_id, limit=limit, cursor=cursor, status=status
    )
    return {"data": [delivery_json(d) for d in found], "next_cursor": next_cursor}


@router.get("/v1/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}", response_model=DeliveryOut)
def get_webhook_delivery(
    endpoint_id: str, delivery_id: str, principal: Manager, ctx: Identity
) -> dict[str, Any]:
    """One delivery with all its attempts (status code, latency, response snippet, error)."""
    return delivery_json(deliveries.get_delivery(ctx, principal, endpoint_id, delivery_id))


@router.post(
    "/v1/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/resend", response_model=DeliveryOut
)
def resend_webhook_delivery(
    endpoint_id: str,
    delivery_id: str,
    request: Request,
    raw: Body,
    principal: Manager,
    ctx: Identity,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    """Send the delivery again now, whatever its status: one more attempt, signed afresh, logged. A 2xx
    answer marks it delivered; otherwise its status and retry schedule stay as they were."""

    def work() -> tuple[int, dict[str, Any]]:
        delivery, _result = deliveries.resend_delivery(ctx, principal, endpoint_id, delivery_id)
        return 200, delivery_json(delivery)

    return run_idempotent(ctx, request, scope=principal.scope, key=idempotency_key, body=raw, work=work)
