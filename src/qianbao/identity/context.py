"""What the identity services need, built once per process (bootstrap) and handed to every use case."""

from __future__ import annotations

from dataclasses import dataclass

from qianbao.clock import Clock
from qianbao.config import Settings
from qianbao.identity.credentials import SecretHasher
from qianbao.identity.model import StepUpPolicy
from qianbao.identity.passkeys import RelyingParty
from qianbao.ledger.engine import LedgerEngine
from qianbao.notify.service import Notifier
from qianbao.security.keyring import KeyRing
from qianbao.security.ratelimit import RateLimiter
from qianbao.store.database import Database
from qianbao.store.unit_of_work import UnitOfWork


@dataclass
class IdentityContext:
    settings: Settings
    db: Database
    clock: Clock
    keys: KeyRing
    hasher: SecretHasher
    limiter: RateLimiter
    notifier: Notifier
    ledger: LedgerEngine
    relying_party: RelyingParty

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.db, self.clock)

    def now(self) -> int:
        return self.clock.now_us()

    @property
    def step_up_policy(self) -> StepUpPolicy:
        s = self.settings
        return StepUpPolicy(s.step_up_amount, s.new_payee_step_up_amount, s.small_payment_amount)
