"""AI drafts as the ledger holds them (restock orders and promotions waiting for people)

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drafts",
        sa.Column("draft_id", sa.String(128), primary_key=True),
        sa.Column("organization_gln", sa.CHAR(13), nullable=False),
        sa.Column("location_gln", sa.CHAR(13), nullable=False),
        # "restock" or "promotion".
        sa.Column("kind", sa.String(16), nullable=False),
        # The ledger's status: PENDING, APPROVED, REJECTED (expiry is read against expire_time).
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("submitted_by", sa.String(128), nullable=False),
        sa.Column("total_minor", sa.BigInteger(), nullable=False),
        sa.Column("approvals_required", sa.Integer(), nullable=False),
        sa.Column("approvers", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
        # The ledger's DraftRecord, serialized: the whole draft with its decision record.
        sa.Column("record", sa.LargeBinary(), nullable=False),
        sa.Column("submit_height", sa.BigInteger(), nullable=False),
        sa.Column("submit_tx_hash", sa.LargeBinary(), nullable=False),
        sa.Column("ledger_height", sa.BigInteger(), nullable=False),
    )
    op.create_index("drafts_org_status", "drafts", ["organization_gln", "status", "create_time"])


def downgrade() -> None:
    op.drop_index("drafts_org_status", table_name="drafts")
    op.drop_table("drafts")
