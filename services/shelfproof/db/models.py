"""Table models of the query model. API shapes are protobuf messages; these are storage only."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CHAR, BigInteger, Column, Index, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel


class ProjectionCursor(SQLModel, table=True):
    """How far a projector has applied the ledger: rebuilding a projection starts from height 0."""

    __tablename__ = "projection_cursors"

    projector: str = Field(primary_key=True, max_length=64)
    # Position (height, index in block) of the last ledger transaction applied.
    height: int = Field(default=0, ge=0, sa_type=BigInteger)
    tx_index: int = Field(default=-1)


class ProductRow(SQLModel, table=True):
    """A registered product as the ledger committed it (the ledger is the source of truth)."""

    __tablename__ = "products"
    __table_args__ = (Index("products_brand_owner", "brand_owner_gln", "gtin"),)

    gtin: str = Field(primary_key=True, min_length=14, max_length=14, sa_type=CHAR(14))
    name: str = Field(sa_type=Text)
    brand: str = Field(default="", sa_type=Text)
    category: str = Field(default="", sa_type=Text)
    net_content: str = Field(default="", sa_type=Text)
    attributes: dict = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    brand_owner_gln: str = Field(max_length=13, sa_type=CHAR(13))
    create_time: datetime
    update_time: datetime
    ledger_height: int = Field(sa_type=BigInteger)
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
    # As migration 0009 named them.
    __table_args__ = (
        Index("events_time", "event_time", "event_hash"),
        Index("events_location_time", "biz_location_gln", "event_time"),
        Index("events_event_id", "event_id"),
        Index("events_declaration_hash", "declaration_hash", unique=True),
        # migration 0012 (the EPCIS REST binding's query parameters)
        Index("events_record_order", "ledger_height", "tx_index", "event_hash"),
        Index("events_record_time", "record_time"),
        Index("events_read_point", "read_point"),
        Index("events_biz_location", "biz_location"),
        Index("events_biz_step", "biz_step"),
        Index("events_disposition", "disposition"),
        Index("events_type_time", "event_type", "event_time"),
    )

    event_hash: str = Field(primary_key=True, max_length=100)
    event_type: str = Field(sa_type=Text)
    event_time: datetime
    action: str | None = Field(default=None, sa_type=Text)
    biz_step: str | None = Field(default=None, sa_type=Text)
    disposition: str | None = Field(default=None, sa_type=Text)
    biz_location_gln: str | None = Field(default=None, max_length=13, sa_type=CHAR(13))
    # The event's JSON as captured, every field and extension kept (with its document's @context).
    document: dict = Field(sa_column=Column(JSONB, nullable=False))
    recorded_by: str = Field(max_length=128)
    ledger_height: int = Field(sa_type=BigInteger)
    tx_index: int
    tx_hash: bytes
    event_id: str | None = Field(default=None, sa_type=Text)
    # The errorDeclaration a later copy carried, and where that declaration is on the ledger.
    error_declaration: dict | None = Field(default=None, sa_column=Column(JSONB, nullable=True))
    declaration_hash: str | None = Field(default=None, max_length=100)
    declaration_height: int | None = Field(default=None, sa_type=BigInteger)
    declaration_tx_hash: bytes | None = None
    # For the EPCIS REST binding's query parameters (migration 0012): the block time of the event's
    # transaction (its recordTime), readPoint and bizLocation as canonical Digital Links.
    record_time: datetime | None = None
    read_point: str | None = Field(default=None, sa_type=Text)
    biz_location: str | None = Field(default=None, sa_type=Text)


class EventItemRow(SQLModel, table=True):
    """A serialised item an event names (its EPC as GTIN-14 + serial)."""

    __tablename__ = "event_items"
    __table_args__ = (Index("event_items_event", "event_hash"),)

    event_hash: str = Field(foreign_key="events.event_hash", primary_key=True, max_length=100)
    gtin: str = Field(primary_key=True, min_length=14, max_length=14, sa_type=CHAR(14))
    serial: str = Field(primary_key=True, max_length=20)


class EventCorrectionRow(SQLModel, table=True):
    """A declared event's corrective events (correctiveEventIDs: eventIDs or Event Hash IDs)."""

    __tablename__ = "event_corrections"
    __table_args__ = (Index("event_corrections_corrective", "corrective_event_id"),)

    event_hash: str = Field(foreign_key="events.event_hash", primary_key=True, max_length=100)
    corrective_event_id: str = Field(primary_key=True, sa_type=Text)


# --- orders (issue 13): purchase orders and the restock loop's runs ---------------------------------


class PurchaseOrderRow(SQLModel, table=True):
    """A purchase order as the ledger now holds it (replaced by each transaction that changes it)."""

    __tablename__ = "purchase_orders"
    __table_args__ = (
        Index("purchase_orders_draft", "draft_id"),
        Index("purchase_orders_buyer", "buyer_gln", "status"),
        Index("purchase_orders_supplier", "supplier_gln", "status"),
    )

    order_id: str = Field(primary_key=True, max_length=160)
    buyer_gln: str = Field(max_length=13)
    supplier_gln: str = Field(max_length=13)
    ship_to_gln: str = Field(max_length=13)
    # The ledger's status name without its prefix: ISSUED, ACCEPTED, ACCEPTED_WITH_CHANGES, REJECTED, CLOSED.
    status: str = Field(max_length=32)
    draft_id: str = Field(max_length=128)
    issue_time: datetime
    # The ledger's PurchaseOrderRecord, serialized.
    record: bytes
    issue_height: int = Field(sa_type=BigInteger)
    ledger_height: int = Field(sa_type=BigInteger)


class PurchaseOrderLineRow(SQLModel, table=True):
    """One line of an order, for what is on order per product and location (the policy's input)."""

    __tablename__ = "purchase_order_lines"
    __table_args__ = (Index("purchase_order_lines_open", "ship_to_gln", "gtin", "status"),)

    order_id: str = Field(foreign_key="purchase_orders.order_id", primary_key=True, max_length=160)
    gtin: str = Field(primary_key=True, min_length=14, max_length=14, sa_type=CHAR(14))
    ship_to_gln: str = Field(max_length=13)
    # OPEN, RECEIVED, REJECTED, CLOSED_SHORT.
    status: str = Field(max_length=16)
    confirmed_quantity: int = Field(sa_type=BigInteger)
    received_quantity: int = Field(sa_type=BigInteger)


class PurchaseOrderChangeRow(SQLModel, table=True):
    """Every committed change of an order at its ledger position: what StreamPurchaseOrders replays."""

    __tablename__ = "purchase_order_changes"

    height: int = Field(primary_key=True, sa_type=BigInteger)
    tx_index: int = Field(primary_key=True)
    order_id: str = Field(primary_key=True, max_length=160)
    action: str = Field(max_length=64)
    buyer_gln: str = Field(max_length=13)
    supplier_gln: str = Field(max_length=13)
    record: bytes


class RestockRunRow(SQLModel, table=True):
    """One autonomous run of the restock loop for a store (run_id is deterministic per store and period,
    so a restarted planner finds the run it had begun and never orders twice)."""

    __tablename__ = "restock_runs"
    __table_args__ = (Index("restock_runs_location", "location_gln", "start_time"),)

    run_id: str = Field(primary_key=True, max_length=128)
    location_gln: str = Field(max_length=13)
    # "cadence" or "reorder_point".
    trigger: str = Field(max_length=16)
    # "running", "drafted", "nothing_to_order", "failed".
    outcome: str = Field(max_length=32)
    draft_id: str | None = Field(default=None, max_length=128)
    reason: str = Field(default="", sa_type=Text)
    forecast_mase: float | None = None
    start_time: datetime
    end_time: datetime | None = None


# --- pricing (the ledger's price log, projected by shelfproof.pricing.projector) ---------------------


class PriceBookRow(SQLModel, table=True):
    """The base price of a product at a location as the ledger last set it."""

    __tablename__ = "price_book"

    gtin: str = Field(primary_key=True, min_length=14, max_length=14)
    location_gln: str = Field(primary_key=True, max_length=13, index=True)
    currency_code: str = Field(max_length=3)
    amount_minor: int = Field(sa_type=BigInteger)
    unit_cost_minor: int = Field(sa_type=BigInteger)
    category: str = Field(default="", sa_type=Text)
    effective_time: datetime
    valid_until: datetime | None = None
    reason: str = Field(default="", sa_type=Text)
    change_id: str = Field(default="", sa_type=Text)
    draft_id: str = Field(default="", sa_type=Text)
    ledger_height: int = Field(sa_type=BigInteger)
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
    draft_id: str = Field(default="", sa_type=Text)
    ledger_height: int = Field(sa_type=BigInteger)
    record: bytes


class PriceEventRow(SQLModel, table=True):
    """One entry of the ledger's price log: (height, sequence) is its place in ledger order."""

    __tablename__ = "price_events"
    __table_args__ = (
        # History of one price, newest first; the newest event of a kind per subject.
        Index("price_events_by_price", "gtin", "location_gln", "height", "sequence"),
        Index("price_events_by_kind", "kind", "promotion_id", "height", "sequence"),
    )

    height: int = Field(primary_key=True, sa_type=BigInteger)
    sequence: int = Field(primary_key=True)
    kind: int
    gtin: str = Field(default="", max_length=14)
    location_gln: str = Field(default="", max_length=13)
    # The promotion's id; for a policy event, its organisation.
    promotion_id: str = Field(default="", max_length=128)
    block_time: datetime
    # The ledger's PriceLogEntry.
    entry: bytes


# --- EPCIS REST binding (registry/rest.py) ---------------------------------------------------------


class EventEpcRow(SQLModel, table=True):
    """An identifier an event names (any GS1 key, serialised or class), canonical, by the field naming it."""

    __tablename__ = "event_epcs"
    __table_args__ = (Index("event_epcs_event", "event_hash", "field", "epc"),)

    epc: str = Field(primary_key=True, sa_type=Text(collation="C"))  # collation "C" (migration 0012): a pattern is a prefix range
    field: str = Field(primary_key=True, max_length=24)  # epcList, childEPCs, parentID, inputEPCList, ...
    event_hash: str = Field(foreign_key="events.event_hash", primary_key=True, max_length=100)


class CaptureJobRow(SQLModel, table=True):
    """A `POST /capture` job and its outcome (the binding's CaptureJob document)."""

    __tablename__ = "capture_jobs"
    __table_args__ = (Index("capture_jobs_created", "created_at"),)

    capture_id: str = Field(primary_key=True, max_length=64)
    created_at: datetime
    finished_at: datetime | None = None
    running: bool
    success: bool
    error_behaviour: str = Field(max_length=16)
    event_count: int
    # RFC 7807 problem objects, and the Event Hash IDs captured, in document order.
    errors: list = Field(default_factory=list, sa_column=Column(JSONB, nullable=False))
    event_hashes: list = Field(default_factory=list, sa_column=Column(JSONB, nullable=False))
