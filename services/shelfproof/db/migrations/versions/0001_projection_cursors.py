"""projection cursors

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "projection_cursors",
        sa.Column("projector", sa.String(length=64), primary_key=True),
        sa.Column("height", sa.BigInteger(), nullable=False, server_default="0"),
        sa.CheckConstraint("height >= 0", name="projection_cursors_height_nonnegative"),
    )


def downgrade() -> None:
    op.drop_table("projection_cursors")
