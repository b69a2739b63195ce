"""Sandbox demo data, created on first start so a new deployment has something to sign in to.

Two consumers with real accounts (phone, password, payment PIN, a funded main wallet), created through
the same code as sign-up, one of them owning a shop (a merchant), plus the system accounts. Every step is
idempotent: seeding twice changes nothing. The credentials are printed by `qianbao serve` and listed in
README.md; they exist only in sandbox mode.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sqlalchemy import select, update

from qianbao.errors import Conflict
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal, PrincipalKind, RequestInfo
from qianbao.identity.signup import create_user_in
from qianbao.identity.tables import users
from qianbao.identity.users import PHONE
from qianbao.ledger.model import ResultCode, TransferSpec
from qianbao.ledger.system_accounts import SANDBOX_FUNDING, system_account_id, system_account_specs
from qianbao.payments.merchant_tables import merchants
from qianbao.payments.merchants import create_merchant
from qianbao.wallets.tables import wallets

CURRENCY = "CNY"
DEMO_PASSWORD = "Demo-Wallet-2026"  # noqa: S105 - sandbox demo credential, printed on start
DEMO_PIN = "384729"


@dataclass(frozen=True, slots=True)
class DemoUser:
    key: str
    name: str
    label: str
    phone: str
    opening_balance: int  # fen
    wallet_id: str = ""
    merchant: tuple[str, str, str] | None = None  # a demo business this user owns: name, MCC, city
    merchant_id: str = ""


DEMO_USERS = (
    DemoUser("alice", "王丽", "王丽 (Alice Wang)", "+8613800000001", 500_000),
    DemoUser(
        "bob", "李四", "李四 (Bob Li)", "+8613800000002", 120_000, merchant=("李记面馆", "5812", "上海")
    ),
)


def seed_demo_data(ctx: IdentityContext) -> list[DemoUser]:
    for result in ctx.ledger.create_accounts(system_account_specs(CURRENCY, sandbox=True)):
        if result.code not in (ResultCode.OK, ResultCode.EXISTS):
            raise Conflict(f"system account {result.id} could not be created: {result.code}")
    ctx.keys.ensure_active_key()
    seeded = []
    for demo in DEMO_USERS:
        wallet_id = _ensure_user(ctx, demo)
        transfer = TransferSpec.posted(
            f"seed:demo:{demo.key}", system_account_id(SANDBOX_FUNDING, CURRENCY), wallet_id,
            demo.opening_balance, CURRENCY, code="sandbox.funding",
        )  # fmt: skip
        (funded,) = ctx.ledger.create_transfers([transfer])
        if not funded.succeeded:
            raise Conflict(f"demo funding for {demo.key} failed: {funded.code}")
        merchant_id = "" if demo.merchant is None else _ensure_merchant(ctx, demo, wallet_id)
        seeded.append(replace(demo, wallet_id=wallet_id, merchant_id=merchant_id))
    return seeded


def _ensure_merchant(ctx: IdentityContext, demo: DemoUser, wallet_id: str) -> str:
    """The demo user's shop (to try QR payments, payment codes and refunds on), created once."""
    assert demo.merchant is not None  # noqa: S101 - only called for users with a shop
    with ctx.db.read() as conn:
        owner = conn.execute(select(wallets.c.user_id).where(wallets.c.id == wallet_id)).scalar_one()
        found = conn.execute(select(merchants.c.id).where(merchants.c.owner_user_id == owner)).scalar()
    if found is not None:
        return str(found)
    name, mcc, city = demo.merchant
    principal = Principal(PrincipalKind.USER, str(owner), str(owner))
    return create_merchant(
        ctx, principal, name=name, mcc=mcc, city=city, currency_code=CURRENCY, info=RequestInfo()
    ).id


def _ensure_user(ctx: IdentityContext, demo: DemoUser) -> str:
    with ctx.db.read() as conn:
        user_id = conn.execute(
            select(users.c.id).where(users.c.phone_index == ctx.keys.digest(PHONE, demo.phone))
        ).scalar()
        if user_id is not None:
            wallet = conn.execute(
                select(wallets.c.id).where(wallets.c.user_id == user_id, wallets.c.kind == "main")
            ).scalar_one()
            return str(wallet)
    password_hash = ctx.hasher.hash(DEMO_PASSWORD)
    pin_hash = ctx.hasher.hash(DEMO_PIN)
    with ctx.uow() as uow:
        created = create_user_in(
            ctx, uow, phone=demo.phone, name=demo.name, password_hash=password_hash,
            device_key=f"demo-{demo.key}", info=RequestInfo(),
        )  # fmt: skip
        uow.conn.execute(update(users).where(users.c.id == created.id).values(pin_hash=pin_hash))
        uow.commit()
    return created.main_wallet_id
