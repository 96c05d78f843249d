"""Purchase orders (as the ledger holds them, their lines and every change) and the restock loop's runs

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "purchase_orders",
        sa.Column("order_id", sa.String(160), primary_key=True),
        sa.Column("buyer_gln", sa.String(13), nullable=False),
        sa.Column("supplier_gln", sa.String(13), nullable=False),
        sa.Column("ship_to_gln", sa.String(13), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("draft_id", sa.String(128), nullable=False),
        sa.Column("issue_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("record", sa.LargeBinary(), nullable=False),
        sa.Column("issue_height", sa.BigInteger(), nullable=False),
        sa.Column("ledger_height", sa.BigInteger(), nullable=False),
    )
    op.create_index("purchase_orders_draft", "purchase_orders", ["draft_id"])
    op.create_index("purchase_orders_buyer", "purchase_orders", ["buyer_gln", "status"])
    op.create_index("purchase_orders_supplier", "purchase_orders", ["supplier_gln", "status"])
    op.create_table(
        "purchase_order_lines",
        sa.Column("order_id", sa.String(160), sa.ForeignKey("purchase_orders.order_id"), nullable=False),
        sa.Column("gtin", sa.CHAR(14), nullable=False),
        sa.Column("ship_to_gln", sa.String(13), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("confirmed_quantity", sa.BigInteger(), nullable=False),
        sa.Column("received_quantity", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", "gtin"),
    )
    op.create_index("purchase_order_lines_open", "purchase_order_lines", ["ship_to_gln", "gtin", "status"])
    op.create_table(
        "purchase_order_changes",
        sa.Column("height", sa.BigInteger(), nullable=False),
        sa.Column("tx_index", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.String(160), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("buyer_gln", sa.String(13), nullable=False),
        sa.Column("supplier_gln", sa.String(13), nullable=False),
        sa.Column("record", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("height", "tx_index", "order_id"),
    )
    op.create_table(
        "restock_runs",
        sa.Column("run_id", sa.String(128), primary_key=True),
        sa.Column("location_gln", sa.String(13), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("draft_id", sa.String(128), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("forecast_mase", sa.Float(), nullable=True),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("restock_runs_location", "restock_runs", ["location_gln", "start_time"])


def downgrade() -> None:
    op.drop_index("restock_runs_location", table_name="restock_runs")
    op.drop_table("restock_runs")
    op.drop_table("purchase_order_changes")
    op.drop_index("purchase_order_lines_open", table_name="purchase_order_lines")
    op.drop_table("purchase_order_lines")
    op.drop_index("purchase_orders_supplier", table_name="purchase_orders")
    op.drop_index("purchase_orders_buyer", table_name="purchase_orders")
    op.drop_index("purchase_orders_draft", table_name="purchase_orders")
    op.drop_table("purchase_orders")
