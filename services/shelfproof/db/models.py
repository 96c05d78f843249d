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


# --- pricing (the ledger's price log, projected by shelfproof.pricing.projector) ---------------------


class PriceBookRow(SQLModel, table=True):
    """The base price of a product at a location as the ledger last set it."""

    __tablename__ = "price_book"

    gtin: str = Field(primary_key=True, min_length=14, max_length=14)
    location_gln: str = Field(primary_key=True, max_length=13, index=True)
    currency_code: str = Field(max_length=3)
    amount_minor: int
    unit_cost_minor: int
    category: str = ""
    effective_time: datetime
    valid_until: datetime | None = None
    reason: str = ""
    change_id: str = ""
    draft_id: str = ""
    ledger_height: int
    # The ledger's PriceRecord (its daily lows give the 30-day reference price).
    record: bytes
    # The organisation that owns the location (whose guardrail policy applies).
    organization_gln: str = Field(default="", max_length=13)


class PromotionRow(SQLModel, table=True):
    """A promotion and its life cycle (the ledger's PromotionRecord)."""

    __tablename__ = "promotions"

    promotion_id: str = Field(primary_key=True, max_length=128)
    status: int
    start_time: datetime
    end_time: datetime
    draft_id: str = ""
    ledger_height: int
    record: bytes


class PriceEventRow(SQLModel, table=True):
    """One entry of the ledger's price log: (height, sequence) is its place in ledger order."""

    __tablename__ = "price_events"

    height: int = Field(primary_key=True)
    sequence: int = Field(primary_key=True)
    kind: int
    gtin: str = Field(default="", max_length=14)
    location_gln: str = Field(default="", max_length=13)
    # The promotion's id; for a policy event, its organisation.
    promotion_id: str = Field(default="", max_length=128)
    block_time: datetime
    # The ledger's PriceLogEntry.
    entry: bytes
