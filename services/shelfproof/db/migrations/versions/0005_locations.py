"""locations

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "locations",
        sa.Column("gln", sa.CHAR(13), primary_key=True),
        sa.Column("organization_gln", sa.CHAR(13), nullable=False, index=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("street", sa.Text(), nullable=False, server_default=""),
        sa.Column("city", sa.Text(), nullable=False, server_default=""),
        sa.Column("postal_code", sa.Text(), nullable=False, server_default=""),
        sa.Column("country_code", sa.CHAR(2), nullable=True),
        sa.Column("ledger_height", sa.BigInteger(), nullable=False),
        sa.Column("tx_hash", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("gln ~ '^[0-9]{13}$'", name="locations_gln_digits"),
    )


def downgrade() -> None:
    op.drop_table("locations")
