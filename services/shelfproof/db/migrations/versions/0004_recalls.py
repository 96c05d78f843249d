"""recalls

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recalls",
        sa.Column("gtin", sa.CHAR(14), sa.ForeignKey("products.gtin"), nullable=False),
        sa.Column("lot", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("recorded_by", sa.String(128), nullable=False),
        sa.Column("recall_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ledger_height", sa.BigInteger(), nullable=False),
        sa.Column("tx_hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("gtin", "lot"),
    )


def downgrade() -> None:
    op.drop_table("recalls")
