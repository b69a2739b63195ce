"""Maker-checker: a requester withdraws their own request (`withdrawn`); rejecting is a checker's decision.

Until now a requester "rejected" their own request to take it back, so a `rejected` row did not say
whether a second operator had turned the request down. Those rows were withdrawals and become
`withdrawn`. Then the CHECKs say who decides what: an executed, failed or rejected row was decided by
someone other than its requester (`two_people`, now with `rejected`), a withdrawn one by its requester
(`withdrawn_by_requester`). The audit log keeps its `approval.rejected` entries as they were written
(it is append-only); their actor is the requester.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

approvals = sa.table(
    "approvals",
    sa.column("status", sa.String),
    sa.column("requested_by", sa.String),
    sa.column("decided_by", sa.String),
)

OLD_STATUS = "status IN ('pending', 'executed', 'rejected', 'failed')"
NEW_STATUS = "status IN ('pending', 'executed', 'rejected', 'withdrawn', 'failed')"
OLD_TWO_PEOPLE = (
    "status NOT IN ('executed', 'failed') OR (decided_by IS NOT NULL AND decided_by <> requested_by)"
)
NEW_TWO_PEOPLE = (
    "status NOT IN ('executed', 'failed', 'rejected') "
    "OR (decided_by IS NOT NULL AND decided_by <> requested_by)"
)
WITHDRAWN_BY_REQUESTER = "status <> 'withdrawn' OR (decided_by IS NOT NULL AND decided_by = requested_by)"


def upgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.drop_constraint(op.f("ck_approvals_status"), type_="check")
        batch.drop_constraint(op.f("ck_approvals_two_people"), type_="check")
        batch.create_check_constraint(op.f("ck_approvals_status"), NEW_STATUS)
    op.execute(
        approvals.update()
        .where(approvals.c.status == "rejected", approvals.c.decided_by == approvals.c.requested_by)
        .values(status="withdrawn")
    )
    with op.batch_alter_table("approvals") as batch:
        batch.create_check_constraint(op.f("ck_approvals_two_people"), NEW_TWO_PEOPLE)
        batch.create_check_constraint(op.f("ck_approvals_withdrawn_by_requester"), WITHDRAWN_BY_REQUESTER)


def downgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.drop_constraint(op.f("ck_approvals_withdrawn_by_requester"), type_="check")
        batch.drop_constraint(op.f("ck_approvals_two_people"), type_="check")
        batch.drop_constraint(op.f("ck_approvals_status"), type_="check")
    op.execute(approvals.update().where(approvals.c.status == "withdrawn").values(status="rejected"))
    with op.batch_alter_table("approvals") as batch:
        batch.create_check_constraint(op.f("ck_approvals_status"), OLD_STATUS)
        batch.create_check_constraint(op.f("ck_approvals_two_people"), OLD_TWO_PEOPLE)
