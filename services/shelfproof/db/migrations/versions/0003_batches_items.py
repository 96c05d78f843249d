"""commissioned batches and serialized items

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("batch_id", sa.String(128), primary_key=True),
        sa.Column("gtin", sa.CHAR(14), sa.ForeignKey("products.gtin"), nullable=False),
        sa.Column("lot", sa.String(20), nullable=False),
        sa.Column("expiry", sa.Date(), nullable=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("serials_merkle_root", sa.LargeBinary(), nullable=False),
        sa.Column("serials_sha256", sa.LargeBinary(), nullable=False),
        sa.Column("brand_owner_gln", sa.CHAR(13), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ledger_height", sa.BigInteger(), nullable=False),
        sa.Column("tx_hash", sa.LargeBinary(), nullable=False),
    )
    op.create_index("batches_gtin_lot", "batches", ["gtin", "lot"])
    op.create_table(
        "items",
        sa.Column("gtin", sa.CHAR(14), nullable=False),
        sa.Column("serial", sa.String(20), nullable=False),
        sa.Column("batch_id", sa.String(128), sa.ForeignKey("batches.batch_id"), nullable=False),
        # Position of the serial in its batch's list: its leaf index in the Merkle tree.
        sa.Column("leaf_index", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("gtin", "serial"),
    )


def downgrade() -> None:
    op.drop_table("items")
    op.drop_index("batches_gtin_lot", table_name="batches")
    op.drop_table("batches")
