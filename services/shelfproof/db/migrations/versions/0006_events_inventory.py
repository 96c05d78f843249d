"""EPCIS events, the items they name, and inventory positions

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("event_hash", sa.String(100), primary_key=True),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(8), nullable=True),
        sa.Column("biz_step", sa.Text(), nullable=True),
        sa.Column("disposition", sa.Text(), nullable=True),
        sa.Column("biz_location_gln", sa.CHAR(13), nullable=True),
        sa.Column("document", postgresql.JSONB(), nullable=False),
        sa.Column("recorded_by", sa.String(128), nullable=False),
        sa.Column("ledger_height", sa.BigInteger(), nullable=False),
        sa.Column("tx_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.LargeBinary(), nullable=False),
    )
    op.create_index("events_time", "events", ["event_time", "event_hash"])
    op.create_index("events_location_time", "events", ["biz_location_gln", "event_time"])
    op.create_table(
        "event_items",
        sa.Column("event_hash", sa.String(100), sa.ForeignKey("events.event_hash"), nullable=False),
        sa.Column("gtin", sa.CHAR(14), nullable=False),
        sa.Column("serial", sa.String(20), nullable=False),
        sa.PrimaryKeyConstraint("gtin", "serial", "event_hash"),
    )
    op.create_index("event_items_event", "event_items", ["event_hash"])
    op.create_table(
        "inventory_positions",
        sa.Column("gtin", sa.CHAR(14), nullable=False),
        sa.Column("location_gln", sa.CHAR(13), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("ledger_height", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("gtin", "location_gln"),
    )


def downgrade() -> None:
    op.drop_table("inventory_positions")
    op.drop_index("event_items_event", table_name="event_items")
    op.drop_table("event_items")
    op.drop_index("events_location_time", table_name="events")
    op.drop_index("events_time", table_name="events")
    op.drop_table("events")
