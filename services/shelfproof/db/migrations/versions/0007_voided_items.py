"""voided labels

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("items", sa.Column("voided_height", sa.BigInteger(), nullable=True))
    op.add_column("items", sa.Column("void_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("items", "void_reason")
    op.drop_column("items", "voided_height")
