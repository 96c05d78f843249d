import json
import uuid
from datetime import datetime, timezone

import grpc
import streamlit as st

from shelfproof.console import session
from shelfproof.console.people import ACTIONS_BY_ROLE
from shelfproof.console.scan import InvalidScan, parse_scan
from shelfproof.console.views import item_status, journey_of, lot_of
from shelfproof.gs1 import epcis
from shelfproof.gs1.digital_link import canonical_item_uri, parse_digital_link
from shelfproof.product.v1 import product_pb2 as prpb

# action -> (bizStep, disposition)
EVENTS = {
    "receive": ("receiving", "sellable_accessible"), "ship": ("shipping", "in_transit"), "sell": ("retail_selling", "retail_sold"),
    "report stolen": ("removing", "stolen"), "destroy": ("destroying", "destroyed"),
}
VERDICT_STYLE = {"GENUINE": st.success, "RECALLED": st.warning, "UNKNOWN CODE": st.error, "COUNTERFEIT": st.error}

me = session.person()
api = session.clients()
st.title("Scan")
raw = st.text_input("Scan or type a code", key="scan_input", placeholder="GS1 element string, Digital Link URL, or GTIN and serial",
                    help="A scanner's group separator (FNC1) may arrive as the GS character or be typed as <GS>.")
if raw:
    try:
        code = parse_scan(raw)
    except InvalidScan as err:
        st.error(f"That is not a code this console reads: {err}. Scan again, or type the GTIN and serial separated by a space.")
        st.stop()
    if not code.serial:
        st.info(f"GTIN {code.gtin} without a serial: scan the item's 2D code for its status.")
        st.stop()
    with session.explained("look the item up"):
        product = None
        try:
            product = api.products.GetProduct(prpb.GetProductRequest(gtin=code.gtin), timeout=10).product
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise
        try:
            label_uri = api.item_label(code.gtin, code.serial).uri
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise
            label_uri = None
        events = api.events_list(gtin=code.gtin, serial=code.serial, max_pages=2)
        lot = code.lot or lot_of(events) or (parse_digital_link(label_uri).lot if label_uri else None)
        record, recall, status = api.query_many([("items", f"{code.gtin}/{code.serial}"), ("recalls", f"{code.gtin}/{lot or ''}"), ("status", f"{code.gtin}/{code.serial}")])
        item = item_status(code.gtin, code.serial, label_uri, record, recall if lot else None, status, lot)
        names = session.gln_names()
        VERDICT_STYLE.get(item.verdict, st.info)(f"**{item.verdict}** — {product.name if product else 'unknown product'} · GTIN {code.gtin} · serial {code.serial}"
                                                 + (f" · lot {item.lot}" if item.lot else ""))
        for reason in item.reasons:
            st.write(f"- {reason}")
        for warning in item.warnings:
            st.warning(warning)
        cols = st.columns(2)
        cols[0].metric("Where it is", names.get(item.location_gln, item.location_gln or "—"))
        cols[1].metric("Status", item.disposition.replace("_", " ") or "—")
        st.subheader("Journey")
        journey = journey_of(events) or item.journey
        st.dataframe([{**s, "location": names.get(s["location"], s["location"])} for s in journey], hide_index=True, key="journey")
        allowed = [a for a in ACTIONS_BY_ROLE[me.role] if a in EVENTS]
        if allowed and label_uri:
            st.subheader("Record what happens")
            mine = {loc.gln for loc in api.locations() if loc.organization_gln == me.organization_gln}
            places = sorted(names, key=lambda g: (g not in mine, g != item.location_gln, names[g]))  # here first, then my sites
            where = st.selectbox("At", places, format_func=lambda g: names[g], key="scan_place")
            for action, column in zip(allowed, st.columns(len(allowed))):
                if column.button(action.capitalize(), key=f"act_{action}"):
                    step, disposition = EVENTS[action]
                    event = epcis.object_event(event_time=datetime.now(timezone.utc), epcs=[canonical_item_uri(code.gtin, code.serial)],
                                               action="OBSERVE", biz_step=step, disposition=disposition, read_point_gln=where,
                                               biz_location_gln=where)
                    document = epcis.epcis_document([event], creation_date=datetime.now(timezone.utc))
                    reply = api.capture(json.dumps(document).encode(), request_id=uuid.uuid4().hex)
                    st.success(f"Recorded '{action}' at {names[where]}, block {reply.events[0].ledger_ref.height}.")
