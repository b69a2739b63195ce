"""EMVCo merchant-presented QR codes: decode any payload (qianbao's, UnionPay, PIX, PayNow…)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from qianbao.api.deps import CurrentUser, Identity
from qianbao.payments import emvco, receive_qr
from qianbao.payments.inputs import MAX_PAYMENT
from qianbao.payments.qr_images import ACCEPTED_FORMATS, decode_qr_image_in_thread

router = APIRouter(tags=["qr-codes"])


class ParseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payload: StrictStr = Field(description="the text of the QR code, exactly as scanned")


class QrAmountOut(BaseModel):
    amount: int = Field(description="minor units (fen for CNY)")
    currency: str


class QianbaoCodeOut(BaseModel):
    kind: str = Field(description="personal: a person's receive code (pay it with POST /v1/transfers)")
    wallet_id: str


class ParsedQrOut(BaseModel):
    crc_ok: bool = Field(description="false: the CRC (ID 63) does not match; do not pay from this code")
    point_of_initiation: str | None = Field(description="static (11), dynamic (12), or null if absent")
    merchant_name: str | None
    merchant_city: str | None
    mcc: str | None
    currency: str | None = Field(description="ISO 4217 alphabetic code from the numeric ID 53")
    amount: QrAmountOut | None = Field(default=None, description="present only when the code has ID 54")
    country: str | None
    fields: dict[str, str | dict[str, str]] = Field(description="every data object by ID; templates nested")
    qianbao: QianbaoCodeOut | None = Field(
        default=None, description="present for a qianbao personal receive code: the wallet it pays"
    )


@router.post("/v1/qr-codes/parse", response_model=ParsedQrOut, response_model_exclude_unset=True)
def parse_qr_code(body: ParseRequest, _principal: CurrentUser) -> dict[str, Any]:
    """Decode an EMVCo merchant-presented QR payload. Malformed TLV answers 422 `validation_error` with a
    `reason`; a wrong CRC still decodes, with `crc_ok: false`."""
    return emvco.parse(body.payload).as_json()


class DecodedQrOut(ParsedQrOut):
    payload: str = Field(description="the text read from the image")


@router.post(
    "/v1/qr-codes/decode",
    response_model=DecodedQrOut,
    response_model_exclude_unset=True,
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
async def decode_qr_code(request: Request, _principal: CurrentUser) -> dict[str, Any]:
    """Read a QR code from a photo or screenshot sent as the request body (PNG, JPEG, WebP or GIF, at most
    8 MiB and 16.7 megapixels), then decode it like `/v1/qr-codes/parse`. No QR code in the image, another
    format, or not an image: 422 with a `reason`; a body over the size limit: 413 `payload_too_large`."""
    payload = await decode_qr_image_in_thread(await request.body())
    return {"payload": payload, **emvco.parse(payload).as_json()}


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
