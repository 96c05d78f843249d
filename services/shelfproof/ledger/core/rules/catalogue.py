"""Products, batches, EPCIS events, recalls and voided labels."""

from __future__ import annotations

from shelfproof.gs1.epcis import item_of
from shelfproof.gs1.keys import CSET82_VALUE
from shelfproof.ledger.core.codes import ResultCode, TxRejected
from shelfproof.ledger.core.rules.common import (
    _DATE,
    _EVENT_HASH,
    MAX_CUSTODY_STEPS,
    MAX_EPCS_PER_EVENT,
    MAX_SERIALS_PER_VOID,
    TxContext,
    _denied,
    _gln,
    _gtin,
    _identifier,
    _invalid,
    _owned_product,
    _text,
    gln_owner,
    gtin_owner,
    read,
    write,
)
from shelfproof.ledger.core.rules.orders import fill_purchase_orders
from shelfproof.ledger.core.state import Overlay
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb

# --- products, batches, events, recalls ---------------------------------------------------------


def _validate_product(a: txpb.RegisterProduct) -> None:
    _gtin(a.gtin)
    _text(a.name, "name")
    _text(a.brand, "brand", required=False)
    _text(a.category, "category", required=False)
    _text(a.net_content, "net_content", 64, required=False)
    keys = [attr.key for attr in a.attributes]
    if keys != sorted(set(keys)):
        raise _invalid("attributes must be sorted by key without duplicates")
    if len(keys) > 64:
        raise _invalid("at most 64 attributes")


def register_product(state: Overlay, ctx: TxContext, a: txpb.RegisterProduct) -> None:
    _validate_product(a)
    if gtin_owner(state, a.gtin) != ctx.signer.organization_gln:
        raise _denied(f"GTIN {a.gtin} does not carry a company prefix of {ctx.signer.organization_gln}")
    if read(state, "products", a.gtin, st.ProductRecord) is not None:
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"product {a.gtin} is already registered")
    write(
        state,
        "products",
        a.gtin,
        st.ProductRecord(product=a, brand_owner_gln=ctx.signer.organization_gln, registered_height=ctx.height),
    )


UPDATABLE_PRODUCT_FIELDS = {"name", "brand", "category", "net_content", "attributes"}


def update_product(state: Overlay, ctx: TxContext, a: txpb.UpdateProduct) -> None:
    record = _owned_product(state, ctx, a.product.gtin)
    unknown = set(a.update_paths) - UPDATABLE_PRODUCT_FIELDS
    if unknown or not a.update_paths:
        raise _invalid(f"update_paths must name some of {sorted(UPDATABLE_PRODUCT_FIELDS)}")
    for path in a.update_paths:
        if path == "attributes":
            del record.product.attributes[:]
            record.product.attributes.extend(a.product.attributes)
        else:
            setattr(record.product, path, getattr(a.product, path))
    _validate_product(record.product)
    write(state, "products", a.product.gtin, record)


def commission_batch(state: Overlay, ctx: TxContext, a: txpb.CommissionBatch) -> None:
    product = _owned_product(state, ctx, a.gtin)
    _identifier(a.batch_id, "batch_id")
    if not CSET82_VALUE.fullmatch(a.lot):
        raise _invalid("lot must be 1-20 GS1 CSET 82 characters")
    if a.expiry and not _DATE.fullmatch(a.expiry):
        raise _invalid("expiry must be YYYY-MM-DD")
    if not 1 <= a.count <= 10_000_000:
        raise _invalid("count must be between 1 and 10,000,000")
    if len(a.serials_merkle_root) != 32 or len(a.serials_content_hash) != 32:
        raise _invalid("serials_merkle_root and serials_content_hash must be SHA-256 digests")
    if read(state, "batches", a.batch_id, st.BatchRecord) is not None:
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"batch {a.batch_id} exists")
    write(state, "batches", a.batch_id, st.BatchRecord(batch=a, brand_owner_gln=product.brand_owner_gln, height=ctx.height))
    product.batches_commissioned += 1
    write(state, "products", product.product.gtin, product)


def record_event(state: Overlay, ctx: TxContext, a: txpb.RecordEvent) -> None:
    if not _EVENT_HASH.fullmatch(a.event_hash):
        raise _invalid("event_hash must be a CBV 2.0 event hash id (ni:///sha-256;<hex>?ver=CBV2.0)")
    if a.event_type not in {"ObjectEvent", "AggregationEvent", "TransactionEvent", "TransformationEvent", "AssociationEvent"}:
        raise _invalid(f"unknown EPCIS event type {a.event_type!r}")
    if len(a.epcs) > MAX_EPCS_PER_EVENT:
        raise _invalid(f"at most {MAX_EPCS_PER_EVENT} EPCs per event")
    places = [_gln(gln) for gln in (a.biz_location_gln, a.read_point_gln) if gln]
    items = sorted({item for epc in a.epcs if (item := item_of(epc)) is not None})
    _may_record_event(state, ctx, places, items)
    if read(state, "events", a.event_hash, st.EventRecord) is not None:
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"event {a.event_hash} is already recorded")
    write(
        state,
        "events",
        a.event_hash,
        st.EventRecord(
            event_hash=a.event_hash,
            event_type=a.event_type,
            biz_step=a.biz_step,
            disposition=a.disposition,
            biz_location_gln=a.biz_location_gln,
            recorded_by=ctx.signer.agent_id,
            height=ctx.height,
            tx_hash=ctx.tx_hash,
        ),
    )
    step = st.CustodyStep(
        event_hash=a.event_hash, biz_step=cbv_word(a.biz_step), disposition=cbv_word(a.disposition),
        biz_location_gln=a.biz_location_gln, height=ctx.height, block_unix_s=ctx.time_unix_s,
    )
    for item in items:
        _record_custody(state, item, step)
    fill_purchase_orders(state, ctx, a, items, step.biz_step)


def _may_record_event(state: Overlay, ctx: TxContext, places: list[str], items: list[tuple[str, str]]) -> None:
    """A brand records events about its own items anywhere; anyone else only at its own GLN (the
    bizLocation or readPoint) and only about items in its custody there or in transit to it."""
    org = ctx.signer.organization_gln
    at_own_place = any(gln_owner(state, gln) == org for gln in places)
    owners: dict[str, str | None] = {}  # an event's items mostly share a few GTINs
    for gtin, serial in items:
        if gtin not in owners:
            owners[gtin] = gtin_owner(state, gtin)
        if owners[gtin] == org:
            continue
        if not at_own_place:
            raise _denied(f"{gtin}/{serial} is not {org}'s item and the event names none of {org}'s locations")
        record = read(state, "items", f"{gtin}/{serial}", st.ItemRecord)
        in_custody = record is not None and (
            record.disposition == "in_transit"
            or (record.biz_location_gln and gln_owner(state, record.biz_location_gln) == org)
        )
        if not in_custody:
            raise _denied(f"{gtin}/{serial} is neither in {org}'s custody nor in transit")
    if not items and not at_own_place:
        raise _denied(f"an event without serialized items must name one of {org}'s locations")


def cbv_word(value: str) -> str:
    """A CBV value's short name: "https://ref.gs1.org/cbv/BizStep-shipping" and "shipping" -> "shipping"."""
    tail = value.rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return tail.split("-", 1)[1] if tail.startswith(("BizStep-", "Disp-")) else tail


def _record_custody(state: Overlay, item: tuple[str, str], step: st.CustodyStep) -> None:
    """The item's provable status: its latest disposition and location and its newest custody steps."""
    gtin, serial = item
    key = f"{gtin}/{serial}"
    record = read(state, "items", key, st.ItemRecord) or st.ItemRecord(gtin=gtin, serial=serial)
    if step.disposition:
        record.disposition = step.disposition
        if step.disposition == "retail_sold":
            record.sold_unix_s = step.block_unix_s
    if step.biz_location_gln:
        record.biz_location_gln = step.biz_location_gln
    record.custody.append(step)
    if len(record.custody) > MAX_CUSTODY_STEPS:
        del record.custody[: len(record.custody) - MAX_CUSTODY_STEPS]
    write(state, "items", key, record)


def recall_lot(state: Overlay, ctx: TxContext, a: txpb.RecallLot) -> None:
    _owned_product(state, ctx, a.gtin)
    _text(a.lot, "lot", 20)
    _text(a.reason, "reason", 512)
    key = f"{a.gtin}/{a.lot}"
    if read(state, "recalls", key, st.StatusRecord) is not None:
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"lot {a.lot} of {a.gtin} is already recalled")
    write(state, "recalls", key, st.StatusRecord(status="recalled", reason=a.reason, recorded_by=ctx.signer.agent_id, height=ctx.height))


def void_labels(state: Overlay, ctx: TxContext, a: txpb.VoidLabels) -> None:
    _owned_product(state, ctx, a.gtin)
    if not 1 <= len(a.serials) <= MAX_SERIALS_PER_VOID:
        raise _invalid(f"between 1 and {MAX_SERIALS_PER_VOID} serials per transaction")
    for serial in a.serials:
        if not CSET82_VALUE.fullmatch(serial):
            raise _invalid(f"serial {serial!r} is not 1-20 GS1 CSET 82 characters")
        write(state, "status", f"{a.gtin}/{serial}", st.StatusRecord(status="voided", reason=a.reason, recorded_by=ctx.signer.agent_id, height=ctx.height))
