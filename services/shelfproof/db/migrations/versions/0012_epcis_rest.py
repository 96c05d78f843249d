"""EPCIS 2.0 REST binding: what its standard query parameters filter on, and capture jobs

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # recordTime is the block time of the event's transaction; readPoint and bizLocation as their
    # canonical Digital Link (the GLN column alone loses the /254/ extension and non-GLN places).
    op.add_column("events", sa.Column("record_time", sa.DateTime(timezone=True), nullable=True))
    op.add_column("events", sa.Column("read_point", sa.Text(), nullable=True))
    op.add_column("events", sa.Column("biz_location", sa.Text(), nullable=True))
    op.create_index("events_record_order", "events", ["ledger_height", "tx_index", "event_hash"])
    op.create_index("events_record_time", "events", ["record_time"])
    op.create_index("events_read_point", "events", ["read_point"])
    op.create_index("events_biz_location", "events", ["biz_location"])
    op.create_index("events_biz_step", "events", ["biz_step"])
    op.create_index("events_disposition", "events", ["disposition"])
    op.create_index("events_type_time", "events", ["event_type", "event_time"])
    # Every identifier an event names, by the field that names it, in canonical form; collation C so
    # that an EPC pattern (a prefix) is an index range.
    op.create_table(
        "event_epcs",
        sa.Column("event_hash", sa.String(100), sa.ForeignKey("events.event_hash"), nullable=False),
        sa.Column("field", sa.String(24), nullable=False),
        sa.Column("epc", sa.Text(collation="C"), nullable=False),
        sa.PrimaryKeyConstraint("epc", "field", "event_hash"),
    )
    # The other direction: does this event name a match? (walking events in page order, a broad
    # pattern stops after one page instead of collecting every match first)
    op.create_index("event_epcs_event", "event_epcs", ["event_hash", "field", "epc"])
    op.create_table(
        "capture_jobs",
        sa.Column("capture_id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("running", sa.Boolean(), nullable=False),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.Column("error_behaviour", sa.String(16), nullable=False),
        sa.Column("event_count", sa.Integer(), nullable=False),
        sa.Column("errors", postgresql.JSONB(), nullable=False),
        sa.Column("event_hashes", postgresql.JSONB(), nullable=False),
    )
    op.create_index("capture_jobs_created", "capture_jobs", ["created_at"])


def downgrade() -> None:
    op.drop_index("capture_jobs_created", table_name="capture_jobs")
    op.drop_table("capture_jobs")
    op.drop_index("event_epcs_event", table_name="event_epcs")
    op.drop_table("event_epcs")
    for name in ("events_type_time", "events_disposition", "events_biz_step", "events_biz_location",
                 "events_read_point", "events_record_time", "events_record_order"):
        op.drop_index(name, table_name="events")
    op.drop_column("events", "biz_location")
    op.drop_column("events", "read_point")
    op.drop_column("events", "record_time")
