"""EMVCo merchant-presented QR codes: decode any payload (qianbao's, UnionPay, PIX, PayNow…)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import anyio.to_thread
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from qianbao.api.body_limits import read_upload
from qianbao.api.deps import CurrentUser, Identity, UploadingUser
from qianbao.identity.context import IdentityContext
from qianbao.payments import emvco, qr_verification, receive_qr
from qianbao.payments.inputs import MAX_PAYMENT
from qianbao.payments.qr_images import ACCEPTED_FORMATS, decode_qr_image_in_thread, upload_admission

router = APIRouter(tags=["qr-codes"])
# Pictures read per user (security/ratelimit.py).
DECODE_RULE = "qr_decode"


class ParseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payload: StrictStr = Field(description="the text of the QR code, exactly as scanned")


class QrAmountOut(BaseModel):
    amount: int = Field(description="minor units (fen for CNY)")
    currency: str


class QianbaoCodeOut(BaseModel):
    kind: str = Field(description="personal: a person's receive code (pay it with POST /v1/transfers)")
    wallet_id: str


# For a code carrying qianbao's identifier, who is paid and how much are the server's records', never the
# code's own text (which anyone can edit): a client reading only these fields is not fooled by a forgery.
_RECORDED = (
    "; for a qianbao code (one with `verified`), what the server's records say: null (absent for "
    "amount) when they do not say"
)


class ParsedQrOut(BaseModel):
    crc_ok: bool = Field(description="false: the CRC (ID 63) does not match; do not pay from this code")
    point_of_initiation: str | None = Field(description="static (11), dynamic (12), or null if absent")
    merchant_name: str | None = Field(
        description="who is paid: ID 59 (a receive code's is the payee's masked name, *四)" + _RECORDED
    )
    merchant_city: str | None = Field(description="ID 60" + _RECORDED)
    mcc: str | None = Field(description="merchant category code, ID 52" + _RECORDED)
    currency: str | None = Field(description="ISO 4217 alphabetic code from the numeric ID 53" + _RECORDED)
    amount: QrAmountOut | None = Field(
        default=None, description="present only when the code has ID 54" + _RECORDED
    )
    country: str | None
    fields: dict[str, str | dict[str, str]] = Field(description="every data object by ID; templates nested")
    qianbao: QianbaoCodeOut | None = Field(
        default=None, description="present for a qianbao personal receive code: the wallet it pays"
    )


class QrMismatchOut(BaseModel):
    field: str = Field(description="what the data object is: merchant_name, amount, signature…")
    tag: str = Field(description="its EMVCo ID (59, 54, 80…)")
    in_code: str | None = Field(description="what the scanned code says (null: absent from it)")
    on_record: str | None = Field(
        description="what the code qianbao issued says, from the server's records (null: absent, or "
        "not shown: a receive code's true signature is never revealed)"
    )


class VerifiedMerchantOut(BaseModel):
    id: str
    name: str = Field(description="the merchant's registered name: show this to the payer")
    city: str
    mcc: str


class VerifiedPayeeOut(BaseModel):
    wallet_id: str
    name_masked: str = Field(description="the wallet owner's name as payers see it (*四), from the records")


class QrVerificationOut(BaseModel):
    verified: bool = Field(
        description="true: the code is exactly what qianbao issued for this payee; false: do not pay it "
        "(see reason and mismatches)"
    )
    kind: Literal["merchant", "personal", "unknown"]
    reason: str | None = Field(
        description="null when verified; else bad_crc, merchant_not_found, qr_code_not_found, unsigned, "
        "bad_signature, recipient_not_found, altered or unknown_kind"
    )
    merchant: VerifiedMerchantOut | None = Field(description="merchant codes: the merchant its id names")
    payee: VerifiedPayeeOut | None = Field(
        description="personal receive codes whose signature holds: the wallet paid and its owner"
    )
    amount: QrAmountOut | None = Field(
        description="what will be paid per the records: a dynamic code's stored amount, a receive code's "
        "signed fixed amount; null when the payer enters it"
    )
    qr_code_status: str | None = Field(description="dynamic codes: active, paid, expired or canceled")
    mismatches: list[QrMismatchOut] = Field(
        description="every data object in which the code differs from the one qianbao issued"
    )


class ParsedQianbaoQrOut(ParsedQrOut):
    verified: bool | None = Field(
        default=None,
        description="present for codes carrying qianbao's identifier: true when the code is exactly what "
        "qianbao issued (verification.verified). Either way the fields above are the records'; what "
        "the code itself says is in `fields` and each mismatch's `in_code`",
    )
    verification: QrVerificationOut | None = Field(
        default=None,
        description="present for codes carrying qianbao's identifier (dev.qianbao): what the server's "
        "records say, and every field in which the code differs. Pay only when verified is true",
    )


@router.post("/v1/qr-codes/parse", response_model=ParsedQianbaoQrOut, response_model_exclude_unset=True)
def parse_qr_code(body: ParseRequest, _principal: CurrentUser, ctx: Identity) -> dict[str, Any]:
    """Decode an EMVCo merchant-presented QR payload. Malformed TLV answers 422 `validation_error` with a
    `reason`; a wrong CRC still decodes, with `crc_ok: false`. For a qianbao code, who is paid and how
    much (`merchant_name`, `merchant_city`, `mcc`, `currency`, `amount`) are the server's records', not
    the code's; `verified` says whether the code is exactly what qianbao issued, and `verification` says
    what differs (the code's own text stays in `fields`)."""
    return _verified_view(ctx, body.payload)


def _verified_view(ctx: IdentityContext, payload: str) -> dict[str, Any]:
    """The parsed fields of a payload; for a qianbao code, who is paid and how much as the server's
    records say, and what differs."""
    parsed = emvco.parse(payload)
    return qr_verification.as_recorded(parsed, qr_verification.verify_scanned(ctx, parsed))


_PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


class DecodedQrOut(ParsedQianbaoQrOut):
    payload: str = Field(description="the text read from the image")


@router.post(
    "/v1/qr-codes/decode",
    response_model=DecodedQrOut,
    response_model_exclude_unset=True,
    responses={
        status: {"description": description, "content": _PROBLEM}
        for status, description in (
            (408, "`request_timeout`: the picture did not arrive within 30 seconds"),
            (413, "`payload_too_large`: over 8 MiB"),
            (503, "`service_unavailable`: this server is reading as many pictures as it can; Retry-After"),
        )
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                f"image/{f.lower()}": {"schema": {"type": "string", "format": "binary"}}
                for f in ACCEPTED_FORMATS
            },
        }
    },
)
async def decode_qr_code(request: Request, principal: UploadingUser, ctx: Identity) -> dict[str, Any]:
    """Read a QR code from a photo or screenshot sent as the request body (PNG, JPEG, WebP or GIF, at most
    8 MiB and 16.7 megapixels), then decode it like `/v1/qr-codes/parse`. No QR code in the image, another
    format, or not an image: 422 with a `reason`; a body over the size limit: 413 `payload_too_large`;
    one not sent within 30 seconds: 408 `request_timeout`. Each server process reads a few pictures at
    once: when it is full, `503 service_unavailable`; more than two of the caller's own at once, or more
    than 30 a minute or 300 an hour, `429 rate_limited`. Both are answered with `Retry-After`, before the
    body is read."""
    caller = principal.user_id or principal.id
    with upload_admission().admit(caller):  # before a byte of the body is read, and held until decoded
        await anyio.to_thread.run_sync(ctx.limiter.hit, DECODE_RULE, caller)  # the limiter may be Redis
        image = await read_upload(request)
        payload = await decode_qr_image_in_thread(image)
    # The records are read on a worker thread, like every database call: never on the event loop.
    shown = await anyio.to_thread.run_sync(_verified_view, ctx, payload)
    return {"payload": payload, **shown}


class ReceiveQrOut(BaseModel):
    payload: str = Field(description="the EMVCo text of the code")
    wallet_id: str
    amount: QrAmountOut | None = Field(description="the fixed amount, if one was asked for")
    name_masked: str = Field(description="the name the code shows payers (masked)")


@router.get(
    "/v1/wallets/{wallet_id}/receive-qr",
    response_model=ReceiveQrOut,
    responses={200: {"content": {"image/svg+xml": {}, "image/png": {}}}},
)
def wallet_receive_qr(
    wallet_id: str,
    principal: CurrentUser,
    ctx: Identity,
    amount: Annotated[
        int | None, Query(ge=1, le=MAX_PAYMENT, description="a fixed amount, minor units")
    ] = None,
    format: Annotated[Literal["json", "svg", "png"], Query(description="json, svg or png")] = "json",
) -> Any:
    """Your personal receive code (收款码) for one of your wallets: an EMVCo payload anyone with qianbao can
    pay with `POST /v1/transfers` `{"to": {"qr": payload}}`, optionally with a fixed amount the payer
    cannot change. It does not expire; a frozen or closed wallet cannot have one (`423 wallet_frozen`)."""
    code = receive_qr.receive_qr(ctx, principal, wallet_id, amount=amount)
    if format == "svg":
        return Response(receive_qr.qr_svg_document(code.payload), media_type="image/svg+xml")
    if format == "png":
        return Response(emvco.qr_png(code.payload), media_type="image/png")
    return {
        "payload": code.payload,
        "wallet_id": code.wallet_id,
        "amount": None if code.amount is None else {"amount": code.amount, "currency": code.currency},
        "name_masked": code.name_masked,
    }
