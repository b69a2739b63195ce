"""EMVCo merchant-presented QR codes: decode any payload (qianbao's, UnionPay, PIX, PayNow…)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from qianbao.api.deps import CurrentUser
from qianbao.payments import emvco

router = APIRouter(tags=["qr-codes"])


class ParseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payload: StrictStr = Field(description="the text of the QR code, exactly as scanned")


class QrAmountOut(BaseModel):
    amount: int = Field(description="minor units (fen for CNY)")
    currency: str


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


@router.post("/v1/qr-codes/parse", response_model=ParsedQrOut, response_model_exclude_unset=True)
def parse_qr_code(body: ParseRequest, _principal: CurrentUser) -> dict[str, Any]:
    """Decode an EMVCo merchant-presented QR payload. Malformed TLV answers 422 `validation_error` with a
    `reason`; a wrong CRC still decodes, with `crc_ok: false`."""
    return emvco.parse(body.payload).as_json()
