"""Identity domain: principals, request facts, tier limits and the step-up policy. Pure: no I/O.

The step-up policy returns its reasons as data; the service turns a non-empty list into a challenge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class TierLimits:
    """Limits of one KYC tier in fen; None means no limit. (Settings read them from
    `QIANBAO_KYC_TIERS`; they live here so the pure limit rules need nothing from the settings.)"""

    balance_cap: int | None
    single_payment: int | None
    daily_outflow: int | None


class PrincipalKind(StrEnum):
    USER = "user"
    OPERATOR = "operator"
    API_KEY = "api_key"


class Method(StrEnum):
    """Ways to prove oneself at step-up."""

    PIN = "pin"
    TOTP = "totp"
    PASSKEY = "passkey"
    SMS = "sms"
    RECOVERY_CODE = "recovery_code"  # one of the single-use codes given when TOTP was enabled


class Operation(StrEnum):
    """Operations the step-up policy knows about (the challenge is bound to one of them)."""

    PAYMENT = "payment"
    WITHDRAWAL = "withdrawal"
    ADD_BANK_ACCOUNT = "bank_account.add"
    CHANGE_PIN = "pin.change"
    CHANGE_PHONE = "phone.change"
    CHANGE_SECOND_FACTOR = "second_factor.change"
    CHANGE_PASSWORD = "password.change"  # noqa: S105 - an operation name
    SIGN_IN = "session.create"
    API_KEY_CREATE = "api_key.create"
    PAYMENT_CODE_SETUP = "payment_code.setup"  # enable payment codes on a device, raise the no-PIN allowance


SECURITY_CHANGES = frozenset(
    {
        Operation.CHANGE_PIN,
        Operation.CHANGE_PHONE,
        Operation.CHANGE_SECOND_FACTOR,
        Operation.CHANGE_PASSWORD,
        Operation.API_KEY_CREATE,
        Operation.PAYMENT_CODE_SETUP,
    }
)


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """Facts about the HTTP request that security decisions and the audit log use."""

    ip: str | None = None
    user_agent: str | None = None
    device_key: str | None = None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling. For API keys `user_id` is the key's owner and `scopes` bound what it may do."""

    kind: PrincipalKind
    id: str
    user_id: str | None
    session_id: str | None = None
    device_id: str | None = None
    device_trusted: bool = False
    scopes: frozenset[str] = field(default_factory=frozenset)
    roles: frozenset[str] = field(default_factory=frozenset)
    transport: str = "bearer"

    @property
    def scope(self) -> str:
        """Idempotency keys and rate limits are scoped per caller."""
        return f"{self.kind.value}:{self.id}"


@dataclass(frozen=True, slots=True)
class StepUpFacts:
    operation: Operation
    amount: int = 0
    payee_is_new: bool = False
    device_trusted: bool = True
    risk_challenge: bool = False


@dataclass(frozen=True, slots=True)
class StepUpPolicy:
    amount_threshold: int
    new_payee_threshold: int
    small_payment_threshold: int

    def reasons(self, facts: StepUpFacts) -> list[str]:
        """Why this operation needs fresh proof (empty: it does not)."""
        reasons: list[str] = []
        op = facts.operation
        if op is Operation.PAYMENT:
            if facts.amount >= self.amount_threshold:
                reasons.append("amount_threshold")
            if facts.payee_is_new and facts.amount > self.new_payee_threshold:
                reasons.append("new_payee")
            if not facts.device_trusted and facts.amount > self.small_payment_threshold:
                reasons.append("new_device")
        elif op is Operation.WITHDRAWAL:
            reasons.append("withdrawal")
        elif op is Operation.ADD_BANK_ACCOUNT:
            reasons.append("bank_account")
        elif op in SECURITY_CHANGES:
            reasons.append("security_change")
        if op is not Operation.PAYMENT and not facts.device_trusted and op is not Operation.SIGN_IN:
            reasons.append("new_device")
        if facts.risk_challenge:
            reasons.append("risk")
        return list(dict.fromkeys(reasons))


def effective_limits(tier: TierLimits, *, cooling_off: bool, divisor: int) -> TierLimits:
    """During cooling-off (a new phone number, a recovery) payments are capped lower."""
    if not cooling_off:
        return tier

    def reduce(limit: int | None, fallback: int) -> int:
        return (limit if limit is not None else fallback) // divisor

    return TierLimits(
        balance_cap=tier.balance_cap,
        single_payment=reduce(tier.single_payment, 5_000_000),
        daily_outflow=reduce(tier.daily_outflow, 10_000_000),
    )
