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


class EventRow(SQLModel, table=True):
    """An EPCIS 2.0 event as captured (migrations 0006, 0009), under its CBV 2.0 Event Hash ID."""

    __tablename__ = "events"

    event_hash: str = Field(primary_key=True, max_length=100)
    event_type: str
    event_time: datetime = Field(index=True)
    action: str | None = None
    biz_step: str | None = None
    disposition: str | None = None
    biz_location_gln: str | None = Field(default=None, max_length=13)
    # The event's JSON as captured, every field and extension kept (with its document's @context).
    document: dict = Field(sa_column=Column(JSONB, nullable=False))
    recorded_by: str = Field(max_length=128)
    ledger_height: int
    tx_index: int
    tx_hash: bytes
    event_id: str | None = Field(default=None, index=True)
    # The errorDeclaration a later copy carried, and where that declaration is on the ledger.
    error_declaration: dict | None = Field(default=None, sa_column=Column(JSONB, nullable=True))
    declaration_hash: str | None = Field(default=None, max_length=100, unique=True)
    declaration_height: int | None = None
    declaration_tx_hash: bytes | None = None
    # For the EPCIS REST binding's query parameters (migration 0010): the block time of the event's
    # transaction (its recordTime), readPoint and bizLocation as canonical Digital Links.
    record_time: datetime | None = Field(default=None, index=True)
    read_point: str | None = Field(default=None, index=True)
    biz_location: str | None = Field(default=None, index=True)


class EventItemRow(SQLModel, table=True):
    """A serialised item an event names (its EPC as GTIN-14 + serial)."""

    __tablename__ = "event_items"

    event_hash: str = Field(foreign_key="events.event_hash", primary_key=True, max_length=100)
    gtin: str = Field(primary_key=True, min_length=14, max_length=14)
    serial: str = Field(primary_key=True, max_length=20)


class EventCorrectionRow(SQLModel, table=True):
    """A declared event's corrective events (correctiveEventIDs: eventIDs or Event Hash IDs)."""

    __tablename__ = "event_corrections"

    event_hash: str = Field(foreign_key="events.event_hash", primary_key=True, max_length=100)
    corrective_event_id: str = Field(primary_key=True, index=True)


# --- EPCIS REST binding (registry/rest.py) ---------------------------------------------------------


class EventEpcRow(SQLModel, table=True):
    """An identifier an event names (any GS1 key, serialised or class), canonical, by the field naming it."""

    __tablename__ = "event_epcs"

    epc: str = Field(primary_key=True)  # collation "C" (migration 0010): a pattern is a prefix range
    field: str = Field(primary_key=True, max_length=24)  # epcList, childEPCs, parentID, inputEPCList, ...
    event_hash: str = Field(foreign_key="events.event_hash", primary_key=True, max_length=100, index=True)


class CaptureJobRow(SQLModel, table=True):
    """A `POST /capture` job and its outcome (the binding's CaptureJob document)."""

    __tablename__ = "capture_jobs"

    capture_id: str = Field(primary_key=True, max_length=64)
    created_at: datetime = Field(index=True)
    finished_at: datetime | None = None
    running: bool
    success: bool
    error_behaviour: str = Field(max_length=16)
    event_count: int
    # RFC 7807 problem objects, and the Event Hash IDs captured, in document order.
    errors: list = Field(default_factory=list, sa_column=Column(JSONB, nullable=False))
    event_hashes: list = Field(default_factory=list, sa_column=Column(JSONB, nullable=False))
