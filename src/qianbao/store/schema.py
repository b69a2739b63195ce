"""Every capability's tables, imported in one place so `metadata` describes the whole schema."""

from __future__ import annotations

import qianbao.events.tables
import qianbao.identity.tables
import qianbao.ledger.tables
import qianbao.notify.tables
import qianbao.payments.code_tables
import qianbao.payments.merchant_tables
import qianbao.payments.request_tables
import qianbao.payments.tables
import qianbao.security.tables
import qianbao.store.idempotency_tables
import qianbao.store.outbox
import qianbao.wallets.tables
from qianbao.store.metadata import metadata

__all__ = ["metadata"]

_MODULES = (
    qianbao.events.tables,
    qianbao.identity.tables,
    qianbao.ledger.tables,
    qianbao.notify.tables,
    qianbao.payments.code_tables,
    qianbao.payments.merchant_tables,
    qianbao.payments.request_tables,
    qianbao.payments.tables,
    qianbao.security.tables,
    qianbao.store.idempotency_tables,
    qianbao.store.outbox,
    qianbao.wallets.tables,
)
