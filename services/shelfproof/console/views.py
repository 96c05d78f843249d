"""Plain data for the pages (no Streamlit here): ledger activity decoded, an item's status and
journey, stock folded from EPCIS events."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone

from shelfproof.gs1 import epcis
from shelfproof.ledger.core.rules.catalogue import cbv_word
from shelfproof.ledger.v1 import ledger_pb2 as lpb
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.product.v1 import events_pb2 as epb
from shelfproof.registry.projector import STOCK_IN, STOCK_OUT  # the same signs as the inventory positions



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
