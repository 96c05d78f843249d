"""products and idempotency keys

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("projection_cursors", sa.Column("tx_index", sa.Integer(), nullable=False, server_default="-1"))
    op.create_table(
        "products",
        sa.Column("gtin", sa.CHAR(14), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("brand", sa.Text(), nullable=False, server_default=""),
        sa.Column("category", sa.Text(), nullable=False, server_default=""),
        sa.Column("net_content", sa.Text(), nullable=False, server_default=""),
        sa.Column("attributes", postgresql.JSONB(), nullable=False, server_default="{}"),
        sa.Column("brand_owner_gln", sa.CHAR(13), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ledger_height", sa.BigInteger(), nullable=False),
        sa.Column("tx_hash", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("gtin ~ '^[0-9]{14}$'", name="products_gtin_digits"),
    )
    op.create_index("products_brand_owner", "products", ["brand_owner_gln", "gtin"])
    op.create_table(
        "request_ids",
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("resource", sa.String(128), nullable=False),
        sa.Column("tx_hash", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("request_ids")
    op.drop_index("products_brand_owner", table_name="products")
    op.drop_table("products")
    op.drop_column("projection_cursors", "tx_index")
