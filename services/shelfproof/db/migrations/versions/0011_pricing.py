"""Pricing: the price book, promotions and the price log, projected from the ledger

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "price_book",
        sa.Column("gtin", sa.String(14), primary_key=True),
        sa.Column("location_gln", sa.String(13), primary_key=True),
        sa.Column("currency_code", sa.String(3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("unit_cost_minor", sa.BigInteger(), nullable=False),
        sa.Column("category", sa.Text(), nullable=False),
        sa.Column("effective_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("change_id", sa.Text(), nullable=False),
        sa.Column("draft_id", sa.Text(), nullable=False),
        sa.Column("ledger_height", sa.BigInteger(), nullable=False),
        sa.Column("record", sa.LargeBinary(), nullable=False),
        sa.Column("organization_gln", sa.String(13), nullable=False),
    )
    op.create_index("ix_price_book_location_gln", "price_book", ["location_gln"])
    op.create_table(
        "promotions",
        sa.Column("promotion_id", sa.String(128), primary_key=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("draft_id", sa.Text(), nullable=False),
        sa.Column("ledger_height", sa.BigInteger(), nullable=False),
        sa.Column("record", sa.LargeBinary(), nullable=False),
    )
    op.create_table(
        "price_events",
        sa.Column("height", sa.BigInteger(), primary_key=True),
        sa.Column("sequence", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("gtin", sa.String(14), nullable=False),
        sa.Column("location_gln", sa.String(13), nullable=False),
        sa.Column("promotion_id", sa.String(128), nullable=False),
        sa.Column("block_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("entry", sa.LargeBinary(), nullable=False),
    )
    # History of one price, newest first.
    op.create_index("price_events_by_price", "price_events", ["gtin", "location_gln", "height", "sequence"])
    op.create_index("price_events_by_kind", "price_events", ["kind", "promotion_id", "height", "sequence"])


def downgrade() -> None:
    op.drop_table("price_events")
    op.drop_table("promotions")
    op.drop_table("price_book")
