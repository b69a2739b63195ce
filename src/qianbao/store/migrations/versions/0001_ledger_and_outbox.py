"""Ledger accounts and transfers, the outbox, and the database-side ledger guards.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_IMMUTABLE = "ledger transfers are immutable; post a reversing transfer instead"
_NO_ACCOUNT_DELETE = "ledger accounts cannot be deleted; close them instead"
_ACCOUNT_IDENTITY = "the id, currency and normal balance of a ledger account cannot change"


def upgrade() -> None:
    op.create_table(
        "ledger_accounts",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("owner_ref", sa.String(128), nullable=True),
        sa.Column("normal_balance", sa.String(6), nullable=False),
        sa.Column("debits_must_not_exceed_credits", sa.Boolean(), nullable=False),
        sa.Column("credits_must_not_exceed_debits", sa.Boolean(), nullable=False),
        sa.Column("balance_ceiling", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("debits_posted", sa.BigInteger(), nullable=False),
        sa.Column("credits_posted", sa.BigInteger(), nullable=False),
        sa.Column("debits_pending", sa.BigInteger(), nullable=False),
        sa.Column("credits_pending", sa.BigInteger(), nullable=False),
        # Seq of the newest transfer touching the account: its version, compared under lock by the
        # pipelined writer, and the guarantee that an account's history is in seq order.
        sa.Column("last_seq", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_accounts")),
        sa.UniqueConstraint("id", "currency", name=op.f("uq_ledger_accounts_id_currency")),
        sa.CheckConstraint(
            "normal_balance IN ('credit', 'debit')", name=op.f("ck_ledger_accounts_normal_balance")
        ),
        sa.CheckConstraint(
            "status IN ('open', 'debit_frozen', 'frozen', 'closed')", name=op.f("ck_ledger_accounts_status")
        ),
        sa.CheckConstraint(
            "debits_posted >= 0 AND credits_posted >= 0 AND debits_pending >= 0 AND credits_pending >= 0",
            name=op.f("ck_ledger_accounts_balances_non_negative"),
        ),
        sa.CheckConstraint(
            "NOT debits_must_not_exceed_credits OR debits_posted + debits_pending <= credits_posted",
            name=op.f("ck_ledger_accounts_debits_within_credits"),
        ),
        sa.CheckConstraint(
            "NOT credits_must_not_exceed_debits OR credits_posted + credits_pending <= debits_posted",
            name=op.f("ck_ledger_accounts_credits_within_debits"),
        ),
        sa.CheckConstraint(
            "balance_ceiling IS NULL OR (balance_ceiling >= 0 AND CASE normal_balance"
            " WHEN 'credit' THEN credits_posted + credits_pending - debits_posted"
            " ELSE debits_posted + debits_pending - credits_posted END <= balance_ceiling)",
            name=op.f("ck_ledger_accounts_within_ceiling"),
        ),
        sa.CheckConstraint(
            "NOT (debits_must_not_exceed_credits AND credits_must_not_exceed_debits)",
            name=op.f("ck_ledger_accounts_one_flag"),
        ),
        sa.CheckConstraint("length(currency) = 3", name=op.f("ck_ledger_accounts_currency_code")),
        # Balance rows are rewritten on every batch; leave room for in-page (HOT) updates on PostgreSQL.
        postgresql_with={"fillfactor": 70},
    )
    postgresql = op.get_context().dialect.name == "postgresql"
    # SQLite checks foreign keys cheaply in C; on PostgreSQL per-row FK triggers cost more than the rest
    # of the insert, so there one statement-level trigger checks the whole batch (see _postgresql_guards).
    account_keys = (
        []
        if postgresql
        else [
            sa.ForeignKeyConstraint(
                [f"{side}_account_id", "currency"],
                ["ledger_accounts.id", "ledger_accounts.currency"],
                name=op.f(f"fk_ledger_transfers_{side}_account_id_currency_ledger_accounts"),
            )
            for side in ("debit", "credit")
        ]
    )
    op.create_table(
        "ledger_transfers",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("debit_account_id", sa.String(64), nullable=False),
        sa.Column("credit_account_id", sa.String(64), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("pending_id", sa.String(128), nullable=True),
        sa.Column("timeout_at", sa.BigInteger(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("debit_net_after", sa.BigInteger(), nullable=False),
        sa.Column("credit_net_after", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_transfers")),
        *account_keys,
        sa.CheckConstraint("amount > 0", name=op.f("ck_ledger_transfers_amount_positive")),
        sa.CheckConstraint(
            "debit_account_id <> credit_account_id", name=op.f("ck_ledger_transfers_accounts_differ")
        ),
        sa.CheckConstraint(
            "kind IN ('posted', 'pending', 'post_pending', 'void_pending', 'expire_pending')",
            name=op.f("ck_ledger_transfers_kind"),
        ),
        sa.CheckConstraint(
            "(kind IN ('posted', 'pending')) = (pending_id IS NULL)",
            name=op.f("ck_ledger_transfers_pending_id_iff_resolution"),
        ),
        sa.CheckConstraint(
            "timeout_at IS NULL OR kind = 'pending'",
            name=op.f("ck_ledger_transfers_timeout_only_for_pending"),
        ),
    )
    op.create_index(
        "ix_ledger_transfers_debit_account_id_seq", "ledger_transfers", ["debit_account_id", "seq"]
    )
    op.create_index(
        "ix_ledger_transfers_credit_account_id_seq", "ledger_transfers", ["credit_account_id", "seq"]
    )
    op.create_index(
        "uq_ledger_transfers_pending_id",
        "ledger_transfers",
        ["pending_id"],
        unique=True,
        postgresql_where=sa.text("pending_id IS NOT NULL"),
        sqlite_where=sa.text("pending_id IS NOT NULL"),
    )
    op.create_index(
        "ix_ledger_transfers_open_timeouts",
        "ledger_transfers",
        ["timeout_at"],
        postgresql_where=sa.text("timeout_at IS NOT NULL"),
        sqlite_where=sa.text("timeout_at IS NOT NULL"),
    )
    op.create_table(
        "outbox",
        sa.Column(
            "seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("aggregate_type", sa.String(64), nullable=False),
        sa.Column("aggregate_id", sa.String(128), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("published_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_outbox")),
        sa.UniqueConstraint("id", name=op.f("uq_outbox_id")),
    )
    op.create_index(
        "ix_outbox_unpublished",
        "outbox",
        ["seq"],
        postgresql_where=sa.text("published_at IS NULL"),
        sqlite_where=sa.text("published_at IS NULL"),
    )
    if postgresql:
        _postgresql_guards()
    else:
        _sqlite_guards()


def _postgresql_guards() -> None:
    # Transfer sequence numbers are drawn in bulk by each batch after it has locked its accounts.
    op.execute("CREATE SEQUENCE ledger_transfer_seq AS bigint CACHE 1")
    op.execute(
        f"""
        CREATE FUNCTION ledger_refuse_transfer_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '{_IMMUTABLE} (% refused)', TG_OP
                USING ERRCODE = 'integrity_constraint_violation';
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER ledger_transfers_immutable BEFORE UPDATE OR DELETE ON ledger_transfers"
        " FOR EACH ROW EXECUTE FUNCTION ledger_refuse_transfer_change()"
    )
    op.execute(
        "CREATE TRIGGER ledger_transfers_no_truncate BEFORE TRUNCATE ON ledger_transfers"
        " FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_transfer_change()"
    )
    op.execute(
        """
        CREATE FUNCTION ledger_check_transfer_accounts() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            bad text;
        BEGIN
            -- Two anti-joins (an OR of NOT EXISTS would be probed row by row).
            SELECT n.id INTO bad FROM new_transfers n
            WHERE NOT EXISTS (SELECT 1 FROM ledger_accounts a
                              WHERE a.id = n.debit_account_id AND a.currency = n.currency)
            LIMIT 1;
            IF bad IS NULL THEN
                SELECT n.id INTO bad FROM new_transfers n
                WHERE NOT EXISTS (SELECT 1 FROM ledger_accounts a
                                  WHERE a.id = n.credit_account_id AND a.currency = n.currency)
                LIMIT 1;
            END IF;
            IF bad IS NOT NULL THEN
                RAISE EXCEPTION 'transfer % refers to a missing account or one in another currency', bad
                    USING ERRCODE = 'foreign_key_violation';
            END IF;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER ledger_transfers_accounts_exist AFTER INSERT ON ledger_transfers"
        " REFERENCING NEW TABLE AS new_transfers FOR EACH STATEMENT"
        " EXECUTE FUNCTION ledger_check_transfer_accounts()"
    )
    op.execute(
        f"""
        CREATE FUNCTION ledger_refuse_account_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'UPDATE' THEN
                RAISE EXCEPTION '{_ACCOUNT_IDENTITY}' USING ERRCODE = 'integrity_constraint_violation';
            END IF;
            RAISE EXCEPTION '{_NO_ACCOUNT_DELETE}' USING ERRCODE = 'integrity_constraint_violation';
        END $$
        """
    )
    # The WHEN clause is evaluated without calling plpgsql, so balance updates pay almost nothing.
    op.execute(
        "CREATE TRIGGER ledger_accounts_identity BEFORE UPDATE ON ledger_accounts FOR EACH ROW"
        " WHEN (OLD.id IS DISTINCT FROM NEW.id OR OLD.currency IS DISTINCT FROM NEW.currency"
        " OR OLD.normal_balance IS DISTINCT FROM NEW.normal_balance)"
        " EXECUTE FUNCTION ledger_refuse_account_change()"
    )
    op.execute(
        "CREATE TRIGGER ledger_accounts_no_delete BEFORE DELETE ON ledger_accounts"
        " FOR EACH ROW EXECUTE FUNCTION ledger_refuse_account_change()"
    )
    op.execute(
        "CREATE TRIGGER ledger_accounts_no_truncate BEFORE TRUNCATE ON ledger_accounts"
        " FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_account_change()"
    )


def _sqlite_guards() -> None:
    # SQLite has no sequences; batches draw transfer numbers from this row under their write lock.
    op.execute("CREATE TABLE ledger_sequences (name VARCHAR(32) PRIMARY KEY, value BIGINT NOT NULL)")
    op.execute("INSERT INTO ledger_sequences (name, value) VALUES ('transfer', 0)")
    for event in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER ledger_transfers_no_{event.lower()} BEFORE {event} ON ledger_transfers"
            f" BEGIN SELECT RAISE(ABORT, '{_IMMUTABLE}'); END"
        )
    op.execute(
        "CREATE TRIGGER ledger_accounts_no_delete BEFORE DELETE ON ledger_accounts"
        f" BEGIN SELECT RAISE(ABORT, '{_NO_ACCOUNT_DELETE}'); END"
    )
    op.execute(
        "CREATE TRIGGER ledger_accounts_identity BEFORE UPDATE OF id, currency, normal_balance"
        " ON ledger_accounts WHEN OLD.id IS NOT NEW.id OR OLD.currency IS NOT NEW.currency"
        " OR OLD.normal_balance IS NOT NEW.normal_balance"
        f" BEGIN SELECT RAISE(ABORT, '{_ACCOUNT_IDENTITY}'); END"
    )


def downgrade() -> None:
    # Dropping the ledger would destroy financial history; refuse rather than offer it.
    raise RuntimeError("the initial ledger migration cannot be downgraded")
