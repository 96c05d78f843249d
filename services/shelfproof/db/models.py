"""Table models of the query model. API shapes are protobuf messages; these are storage only."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel


class ProjectionCursor(SQLModel, table=True):
    """How far a projector has applied the ledger: rebuilding a projection starts from height 0."""

    __tablename__ = "projection_cursors"

    projector: str = Field(primary_key=True, max_length=64)
    # Position (height, index in block) of the last ledger transaction applied.
    height: int = Field(default=0, ge=0)
    tx_index: int = Field(default=-1)


class ProductRow(SQLModel, table=True):
    """A registered product as the ledger committed it (the ledger is the source of truth)."""

    __tablename__ = "products"

    gtin: str = Field(primary_key=True, min_length=14, max_length=14)
    name: str
    brand: str = ""
    category: str = ""
    net_content: str = ""
    attributes: dict = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    brand_owner_gln: str = Field(index=True, max_length=13)
    create_time: datetime
    update_time: datetime
    ledger_height: int
    tx_hash: bytes


class RequestIdRow(SQLModel, table=True):
    """Idempotency keys (AIP-155): a retried write returns what the first attempt did."""

    __tablename__ = "request_ids"

    request_id: str = Field(primary_key=True, max_length=128)
    method: str = Field(max_length=64)
    resource: str = Field(max_length=128)
    tx_hash: bytes
