"""Table models of the query model. API shapes are protobuf messages; these are storage only."""

from __future__ import annotations

from sqlmodel import Field, SQLModel


class ProjectionCursor(SQLModel, table=True):
    """How far a projector has applied the ledger: rebuilding a projection starts from height 0."""

    __tablename__ = "projection_cursors"

    projector: str = Field(primary_key=True, max_length=64)
    # Last ledger height whose transactions are fully applied.
    height: int = Field(default=0, ge=0)
