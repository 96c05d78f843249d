"""EPCIS error declarations: the declaration on the declared event, and its corrective events

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column("events", "event_type", type_=sa.Text())
    op.alter_column("events", "action", type_=sa.Text())
    op.add_column("events", sa.Column("event_id", sa.Text(), nullable=True))
    op.add_column("events", sa.Column("error_declaration", postgresql.JSONB(), nullable=True))
    # Ledger key of the declaration transaction (the declared event keeps its Event Hash ID).
    op.add_column("events", sa.Column("declaration_hash", sa.String(100), nullable=True))
    op.add_column("events", sa.Column("declaration_height", sa.BigInteger(), nullable=True))
    op.add_column("events", sa.Column("declaration_tx_hash", sa.LargeBinary(), nullable=True))
    op.create_index("events_event_id", "events", ["event_id"])
    op.create_index("events_declaration_hash", "events", ["declaration_hash"], unique=True)
    op.create_table(
        "event_corrections",
        sa.Column("event_hash", sa.String(100), sa.ForeignKey("events.event_hash"), nullable=False),
        sa.Column("corrective_event_id", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("event_hash", "corrective_event_id"),
    )
    op.create_index("event_corrections_corrective", "event_corrections", ["corrective_event_id"])


def downgrade() -> None:
    op.drop_index("event_corrections_corrective", table_name="event_corrections")
    op.drop_table("event_corrections")
    op.drop_index("events_declaration_hash", table_name="events")
    op.drop_index("events_event_id", table_name="events")
    op.drop_column("events", "declaration_tx_hash")
    op.drop_column("events", "declaration_height")
    op.drop_column("events", "declaration_hash")
    op.drop_column("events", "error_declaration")
    op.drop_column("events", "event_id")
    op.alter_column("events", "action", type_=sa.String(8))
    op.alter_column("events", "event_type", type_=sa.String(32))
