"""Plain data for the pages (no Streamlit here): ledger activity decoded, an item's status and
journey, stock folded from EPCIS events, money, purchase orders, price events and counterfeit alerts."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone

from shelfproof.gs1 import epcis
from shelfproof.ledger.core import cells
from shelfproof.ledger.core.rules.catalogue import cbv_word
from shelfproof.ledger.core.rules.price_computation import CURRENCY_MINOR_UNITS
from shelfproof.ledger.v1 import ledger_pb2 as lpb
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.planner.v1 import planner_pb2 as ppb
from shelfproof.pricing.v1 import pricing_pb2 as pricepb
from shelfproof.product.v1 import alerts_pb2 as alpb
from shelfproof.product.v1 import events_pb2 as epb
from shelfproof.registry.projector import STOCK_IN, STOCK_OUT  # the same signs as the inventory positions


def money(minor: int, currency: str) -> str:
    """An amount in integer minor units as people read it (EUR 12.50, JPY 1,200)."""
    digits = CURRENCY_MINOR_UNITS.get(currency, 2)
    return f"{currency} {minor / 10 ** digits:,.{digits}f}"


def enum_word(value: int, enum, prefix: str) -> str:
    """``PURCHASE_ORDER_STATE_ACCEPTED_WITH_CHANGES`` -> ``accepted with changes``."""
    try:
        name = enum.Name(value)
    except ValueError:
        return str(value)
    return name.removeprefix(prefix).replace("_", " ").lower()


def activity_row(result: lpb.TransactionResult) -> dict:
    signed = txpb.SignedTransaction.FromString(result.transaction)
    action = txpb.TransactionBody.FromString(signed.body).WhichOneof("action") or "?"
    when = datetime.fromtimestamp(result.block_time.seconds, timezone.utc) if result.HasField("block_time") else None
    return {"height": result.height, "time": when, "action": action.replace("_", " "), "signer": signed.signer, "tx": result.tx_hash.hex()[:16]}


@dataclass
class ItemStatus:
    gtin: str
    serial: str
    verdict: str
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    lot: str | None = None
    location_gln: str = ""
    disposition: str = ""
    journey: list[dict] = field(default_factory=list)


def lot_of(events: list[epb.Event]) -> str | None:
    """The lot an item's commissioning event names in its ILMD."""
    for event in events:
        if lot := json.loads(event.event_json).get("ilmd", {}).get("cbvmda:lotNumber"):
            return lot
    return None


def journey_of(events: list[epb.Event]) -> list[dict]:
    """An item's custody steps as its EPCIS events tell them (event time, not commit time)."""
    rows = []
    for event in sorted(events, key=lambda e: (e.event_time.seconds, e.event_time.nanos)):
        doc = json.loads(event.event_json)
        rows.append({"time": event.event_time.ToDatetime(tzinfo=timezone.utc), "step": cbv_word(event.biz_step).replace("_", " "),
                     "disposition": cbv_word(event.disposition).replace("_", " "),
                     "location": event.biz_location_gln or doc.get("readPoint", {}).get("id", "")[-13:], "block": event.ledger_ref.height})
    return rows


def item_status(gtin: str, serial: str, label_uri: str | None, record: bytes | None, recall: bytes | None, status: bytes | None,
                lot: str | None = None) -> ItemStatus:
    """The registry's and ledger's view of an item (the verify page adds signature and clone checks)."""
    item = ItemStatus(gtin, serial, "GENUINE", lot=lot)
    if label_uri is None:
        item.verdict, item.reasons = "UNKNOWN CODE", ["no commissioned batch of this product has this serial"]
    if status is not None:
        record_status = st.StatusRecord.FromString(status)
        item.verdict = "COUNTERFEIT"
        item.reasons.append(f"the brand {record_status.status} this label: {record_status.reason}")
    elif recall is not None:
        item.verdict = "RECALLED"
        item.reasons.append(f"lot {lot} is recalled: {st.StatusRecord.FromString(recall).reason}")
    if record is not None:
        rec = st.ItemRecord.FromString(record)
        item.location_gln, item.disposition = rec.biz_location_gln, rec.disposition
        if rec.disposition == "retail_sold":
            item.warnings.append("already sold")
        if rec.disposition == "stolen":
            item.warnings.append("reported stolen")
        item.journey = [
            {"height": s.height, "time": datetime.fromtimestamp(s.block_unix_s, timezone.utc), "step": s.biz_step.replace("_", " "),
             "disposition": s.disposition.replace("_", " "), "location": s.biz_location_gln}
            for s in rec.custody
        ]
    return item


def _epc_items(event: epb.Event) -> list[tuple[str, str]]:
    doc = json.loads(event.event_json)
    return [i for i in (epcis.item_of(e) for e in doc.get("epcList", [])) if i]


def daily_flows(events: list[epb.Event], location_gln: str) -> list[dict]:
    """Per day at a location: units sold, units in, units out, and stock at the end of the day."""
    days: dict = defaultdict(Counter)
    for event in events:
        step = cbv_word(event.biz_step)
        units = len(_epc_items(event))
        day = event.event_time.ToDatetime().date()
        doc = json.loads(event.event_json)
        here = event.biz_location_gln == location_gln or doc.get("readPoint", {}).get("id", "").endswith(location_gln)
        if not here:
            continue
        if step in STOCK_IN:
            days[day]["in"] += units
        elif step in STOCK_OUT:
            days[day]["out"] += units
            if step == "retail_selling":
                days[day]["sold"] += units
    rows, stock = [], 0
    for day in sorted(days):
        stock += days[day]["in"] - days[day]["out"]
        rows.append({"day": day, "sold": days[day]["sold"], "stock": stock})
    return rows


def serials_at(events: list[epb.Event], gtin: str, location_gln: str) -> list[dict]:
    """Serials of one product whose latest event leaves them at ``location_gln`` (not sold), with lots."""
    lots: dict[str, str] = {}
    last: dict[str, tuple[str, str]] = {}
    for event in sorted(events, key=lambda e: (e.event_time.seconds, e.event_time.nanos)):
        doc = json.loads(event.event_json)
        step = cbv_word(event.biz_step)
        place = event.biz_location_gln or doc.get("readPoint", {}).get("id", "")[-13:]
        for item_gtin, serial in _epc_items(event):
            if item_gtin != gtin:
                continue
            if lot := doc.get("ilmd", {}).get("cbvmda:lotNumber"):
                lots[serial] = lot
            last[serial] = (step, place)
    return sorted(
        ({"lot": lots.get(s, "?"), "serial": s} for s, (step, place) in last.items() if place == location_gln and step in STOCK_IN),
        key=lambda r: (r["lot"], r["serial"]),
    )


# --- purchase orders ---------------------------------------------------------------------------------


def order_waits_for_answer(order: ppb.PurchaseOrder) -> bool:
    return order.state == ppb.PURCHASE_ORDER_STATE_ISSUED


def order_is_late(order: ppb.PurchaseOrder) -> bool:
    """A line received after its delivery date, or still open past it."""
    return any(line.late or line.overdue for line in order.lines)


def order_row(order: ppb.PurchaseOrder, names: dict[str, str]) -> dict:
    received = sum(line.received_quantity for line in order.lines)
    confirmed = sum(line.confirmed_quantity for line in order.lines)
    return {
        "order": order.order_id, "state": enum_word(order.state, ppb.PurchaseOrderState, "PURCHASE_ORDER_STATE_"),
        "buyer": names.get(order.buyer_gln, order.buyer_gln), "supplier": names.get(order.supplier_gln, order.supplier_gln), "ship to": names.get(order.ship_to_gln, order.ship_to_gln),
        "due": order.requested_delivery_date, "lines": len(order.lines), "received": f"{received} of {confirmed}",
        "total": money(order.total.amount_minor, order.total.currency_code), "late": order_is_late(order),
        "acknowledged by": order.acknowledged_by or "—", "block": order.ledger_ref.height,
    }


def order_line_rows(order: ppb.PurchaseOrder, products: dict[str, str]) -> list[dict]:
    """Each line's acknowledgement (confirmed quantity and date) and deliveries (shipped, received)."""
    return [{
        "product": products.get(line.gtin, line.gtin), "gtin": line.gtin, "ordered": line.ordered_quantity,
        "confirmed": line.confirmed_quantity, "delivery date": line.delivery_date, "shipped": line.shipped_quantity,
        "received": line.received_quantity, "open": line.open_quantity, "short": line.short_quantity, "over": line.over_quantity,
        "state": enum_word(line.state, ppb.PurchaseOrderLineState, "PURCHASE_ORDER_LINE_STATE_"),
        "late": "late" if line.late else "overdue" if line.overdue else "",
        "unit cost": money(line.unit_cost.amount_minor, line.unit_cost.currency_code),
    } for line in order.lines]


# --- prices ------------------------------------------------------------------------------------------


def _when(stamp) -> datetime | None:
    return datetime.fromtimestamp(stamp.seconds, timezone.utc) if stamp.seconds else None


def price_event_row(event: pricepb.PriceEvent, names: dict[str, str], products: dict[str, str]) -> dict:
    """One committed price event; ``outcome`` is the guardrail answer when it fell due."""
    old = money(event.old_price.amount_minor, event.old_price.currency_code) if event.old_price.currency_code else ""
    new = money(event.new_price.amount_minor, event.new_price.currency_code) if event.new_price.currency_code else ""
    return {
        "block": event.height, "event": enum_word(event.kind, pricepb.PriceEventKind, "PRICE_EVENT_KIND_"),
        "product": products.get(event.gtin, event.gtin), "location": names.get(event.location_gln, event.location_gln),
        "old": old, "new": new, "effective": _when(event.effective_time),
        "outcome": "applied" if event.applied else f"refused: {event.reason}",
        "promotion": event.promotion_id, "change": event.change_id, "draft": event.draft_id,
    }


def pending_scheduled_changes(events: list[pricepb.PriceEvent], now_unix_s: float) -> list[pricepb.PriceEvent]:
    """Scheduled changes not yet carried out (no later event names their change id) and still due."""
    done = {e.change_id for e in events if e.change_id and e.kind != pricepb.PRICE_EVENT_KIND_PRICE_SCHEDULED}
    return [e for e in events if e.kind == pricepb.PRICE_EVENT_KIND_PRICE_SCHEDULED and e.change_id not in done
            and e.effective_time.seconds > now_unix_s - 120]


def promotion_row(record: st.PromotionRecord, names: dict[str, str]) -> dict:
    p = record.promotion
    kind = p.kind or txpb.PROMOTION_KIND_PERCENTAGE
    terms = {
        txpb.PROMOTION_KIND_PERCENTAGE: f"{p.discount_bps / 100:g} % off",
        txpb.PROMOTION_KIND_AMOUNT_OFF: f"{money(p.amount_off_minor, p.currency_code or 'EUR')} off",
        txpb.PROMOTION_KIND_FIXED_PRICE: f"for {money(p.fixed_price_minor, p.currency_code or 'EUR')}",
        txpb.PROMOTION_KIND_MULTI_BUY: f"{p.buy_quantity} for {p.pay_quantity}",
    }.get(kind, "?")
    status = record.status or st.PROMOTION_STATUS_SCHEDULED
    return {
        "promotion": p.promotion_id, "terms": terms, "products": len(p.gtins) + len(p.categories),
        "where": ", ".join(names.get(g, g) for g in (p.location_gln, *p.location_glns)),
        "from": datetime.fromtimestamp(p.start_unix_s, timezone.utc), "to": datetime.fromtimestamp(p.end_unix_s, timezone.utc),
        "status": enum_word(status, st.PromotionStatus, "PROMOTION_STATUS_"),
        "guardrails": f"refused: {record.end_reason}" if status == st.PROMOTION_STATUS_REFUSED else "passed (checked by every validator)",
        "copy": p.customer_copy, "draft": p.draft_id or "—",
    }


# --- counterfeit alerts ------------------------------------------------------------------------------


def cell_center(cell: str) -> tuple[float | None, float | None]:
    """The centre of a coarse cell in degrees (None for no or a malformed cell)."""
    if not cell or not cells.is_cell(cell):
        return None, None
    lat, lon = cells.center_microdegrees(cell)
    return lat / 1e6, lon / 1e6


CLONE_KINDS = (st.ALERT_KIND_CLONE_SUSPECTED, st.ALERT_KIND_BURST)


def alert_row(alert: alpb.Alert, products: dict[str, str]) -> dict:
    r = alert.record
    return {
        "time": _when(alert.alert_time), "alert": enum_word(r.kind, st.AlertKind, "ALERT_KIND_"),
        "product": products.get(r.gtin, r.gtin), "gtin": r.gtin, "serial": r.serial or "—", "lot": r.lot or "—",
        "area": r.cell or "—", "detail": r.detail, "block": alert.ledger_ref.height,
    }


def compromised_codes(alerts: list[alpb.Alert]) -> list[tuple[str, str]]:
    """Codes a clone alert named, oldest first, once each (whether still compromised is the ledger's
    ``scans`` record)."""
    seen: dict[tuple[str, str], None] = {}
    for alert in alerts:
        if alert.record.kind == st.ALERT_KIND_CLONE_SUSPECTED and alert.record.serial:
            seen.setdefault((alert.record.gtin, alert.record.serial), None)
    return list(seen)


def scans_by_place(scans: list[dict]) -> list[dict]:
    """Consumer scans counted per coarse cell, placed at the cell's centre."""
    counted: Counter = Counter(s["cell"] for s in scans if s.get("cell") and s["cell"] != "—")
    rows = []
    for cell, count in sorted(counted.items()):
        lat, lon = cell_center(cell)
        if lat is not None:
            items = {(s["gtin"], s["serial"]) for s in scans if s["cell"] == cell}
            rows.append({"area": cell, "lat": lat, "lon": lon, "scans": count, "items": len(items)})
    return rows
