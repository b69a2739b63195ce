"""KYC verification ports and their sandbox adapters.

Outside checks are ports (`NameIdVerifier`, `BankAccountVerifier`), called by the KYC flows
(`identity/kyc.py`) before their unit of work; the sandbox adapters here stand in for the real providers
(a public-security name/ID check, a bank's account verification). Kept apart so a real provider can be
added without touching the flows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from stdnum import luhn

from qianbao.config import Settings
from qianbao.errors import ServiceUnavailable

# The sandbox name/ID check fails for names containing one of these (how testers provoke kyc_rejected).
SANDBOX_MISMATCH_MARKERS = ("不符", "mismatch")


class NameIdVerifier(Protocol):
    """Does this real name belong to this resident ID number? (The public-security identity check.)"""

    def matches(self, name: str, id_number: str) -> bool: ...


class BankAccountVerifier(Protocol):
    """Is this bank account held in this name by the holder of this ID number? (A bank's verification.)"""

    def verify(self, *, account_number: str, account_name: str, id_number: str) -> bool: ...


class SandboxNameIdVerifier:
    """Sandbox: every name matches, except names containing "不符" or "mismatch" (any case)."""

    def matches(self, name: str, id_number: str) -> bool:
        del id_number
        folded = name.casefold()
        return not any(marker in folded for marker in SANDBOX_MISMATCH_MARKERS)


class SandboxBankAccountVerifier:
    """Sandbox: every well-formed account number (12-19 digits, valid Luhn check) is accepted."""

    def verify(self, *, account_number: str, account_name: str, id_number: str) -> bool:
        del account_name, id_number
        return luhn.is_valid(account_number)


@dataclass(frozen=True, slots=True)
class KycPorts:
    name_id: NameIdVerifier
    bank_account: BankAccountVerifier


def ports_for(settings: Settings) -> KycPorts:
    """The verification providers: the sandbox adapters in sandbox mode. Production has no provider yet,
    so it refuses (503) rather than pretending to verify anyone."""
    if settings.is_sandbox:
        return KycPorts(SandboxNameIdVerifier(), SandboxBankAccountVerifier())
    raise ServiceUnavailable("no identity verification provider is configured")
