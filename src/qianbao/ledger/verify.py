"""`qianbao ledger verify`: recompute every balance from the transfer history and compare.

Checks, per account: the four stored totals equal the sums over its transfers; its `last_seq` is its
newest transfer's; the "net after" recorded on each of its transfers equals the running sum of its
history. Per currency: total debits equal total credits (posted and pending). Any difference is a
finding naming the account.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from qianbao.ledger.repository import LedgerRepository
from qianbao.store.database import Database

CHUNK = 500

_EXPECTED_TOTALS = """
SELECT account_id, SUM(dp), SUM(cp), SUM(dq), SUM(cq), MAX(seq) FROM (
  SELECT t.debit_account_id AS account_id, t.seq,
         CASE WHEN t.kind IN ('posted', 'post_pending') THEN t.amount ELSE 0 END AS dp, 0 AS cp,
         CASE WHEN t.kind = 'pending' AND NOT EXISTS
              (SELECT 1 FROM ledger_transfers r WHERE r.pending_id = t.id) THEN t.amount ELSE 0 END AS dq,
         0 AS cq
  FROM ledger_transfers t WHERE {debit_in}
  UNION ALL
  SELECT t.credit_account_id, t.seq, 0,
         CASE WHEN t.kind IN ('posted', 'post_pending') THEN t.amount ELSE 0 END,
         0, CASE WHEN t.kind = 'pending' AND NOT EXISTS
              (SELECT 1 FROM ledger_transfers r WHERE r.pending_id = t.id) THEN t.amount ELSE 0 END
  FROM ledger_transfers t WHERE {credit_in}
) x GROUP BY account_id
"""

_BROKEN_CHAIN = """
SELECT account_id, seq, net_after, running FROM (
  SELECT account_id, seq, net_after, SUM(delta) OVER (PARTITION BY account_id ORDER BY seq) AS running FROM (
    SELECT debit_account_id AS account_id, seq, debit_net_after AS net_after,
           CASE WHEN kind IN ('posted', 'post_pending') THEN -amount ELSE 0 END AS delta
    FROM ledger_transfers WHERE {debit_in}
    UNION ALL
    SELECT credit_account_id, seq, credit_net_after,
           CASE WHEN kind IN ('posted', 'post_pending') THEN amount ELSE 0 END
    FROM ledger_transfers WHERE {credit_in}
  ) e
) w WHERE running <> net_after ORDER BY account_id, seq
"""

_CURRENCY_TOTALS = """
SELECT currency, SUM(debits_posted), SUM(credits_posted), SUM(debits_pending), SUM(credits_pending)
FROM ledger_accounts GROUP BY currency ORDER BY currency
"""

_ORPHAN_RESOLUTIONS = """
SELECT r.id FROM ledger_transfers r LEFT JOIN ledger_transfers p ON p.id = r.pending_id
WHERE r.pending_id IS NOT NULL AND (p.id IS NULL OR p.kind <> 'pending'
   OR p.debit_account_id <> r.debit_account_id OR p.credit_account_id <> r.credit_account_id
   OR r.amount > p.amount)
"""


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    subject: str  # an account id, a currency or a transfer id
    detail: str


@dataclass(slots=True)
class VerifyReport:
    accounts: int = 0
    transfers: int = 0
    currencies: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def verify_ledger(db: Database, progress: Callable[[int, int], None] | None = None) -> VerifyReport:
    """Recompute everything. `progress(done, total)` is called after each chunk of accounts."""
    repo = LedgerRepository(db.dialect)
    report = VerifyReport()
    # One snapshot for every query: otherwise transfers committed while verify runs would make the stored
    # totals and the recomputed ones disagree on a healthy ledger.
    with db.snapshot() as conn:
        report.transfers = conn.exec_driver_sql("SELECT COUNT(*) FROM ledger_transfers").scalar_one()
        total = conn.exec_driver_sql("SELECT COUNT(*) FROM ledger_accounts").scalar_one()
        report.accounts = total
        after = ""
        done = 0
        p = "%s" if db.is_postgresql else "?"
        while True:
            rows = conn.exec_driver_sql(
                "SELECT id, debits_posted, credits_posted, debits_pending, credits_pending, last_seq"
                " FROM ledger_accounts"
                f" WHERE id > {p} ORDER BY id LIMIT {CHUNK}",
                (after,),
            ).fetchall()
            if not rows:
                break
            ids = [r[0] for r in rows]
            param = repo.list_param(ids)
            where = {
                "debit_in": repo.in_list("debit_account_id"),
                "credit_in": repo.in_list("credit_account_id"),
            }
            expected = {
                r[0]: tuple(int(v) for v in r[1:])
                for r in conn.exec_driver_sql(_EXPECTED_TOTALS.format(**where), (param, param))
            }
            for row in rows:
                stored = tuple(int(v) for v in row[1:5])
                want = expected.get(row[0], (0, 0, 0, 0, 0))
                if int(row[5]) != want[4]:
                    report.findings.append(
                        Finding(
                            "version_mismatch", row[0], f"last_seq is {row[5]}, newest transfer is {want[4]}"
                        )
                    )
                want = want[:4]
                if stored != want:
                    report.findings.append(
                        Finding(
                            "balance_mismatch",
                            row[0],
                            "stored (debits_posted, credits_posted, debits_pending, credits_pending) = "
                            f"{stored}, recomputed from history = {want}",
                        )
                    )
            for account_id, seq, net_after, running in conn.exec_driver_sql(
                _BROKEN_CHAIN.format(**where), (param, param)
            ):
                report.findings.append(
                    Finding(
                        "history_mismatch",
                        account_id,
                        f"transfer seq {seq} says net {net_after}, history sums to {running}",
                    )  # fmt: skip
                )
            done += len(rows)
            after = ids[-1]
            if progress is not None:
                progress(done, total)
        for currency, dp, cp, dq, cq in conn.exec_driver_sql(_CURRENCY_TOTALS):
            report.currencies += 1
            if int(dp) != int(cp) or int(dq) != int(cq):
                report.findings.append(
                    Finding(
                        "currency_unbalanced",
                        currency,
                        f"posted debits {dp} vs credits {cp}; pending debits {dq} vs credits {cq}",
                    )  # fmt: skip
                )
        for (transfer_id,) in conn.exec_driver_sql(_ORPHAN_RESOLUTIONS):
            report.findings.append(
                Finding("bad_resolution", transfer_id, "resolves a transfer that is not a matching hold")
            )
    return report
