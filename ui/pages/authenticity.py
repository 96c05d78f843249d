from datetime import datetime, timezone

import altair as alt
import pandas as pd
import streamlit as st

from shelfproof.console import session
from shelfproof.console.people import ACTIONS_BY_ROLE, BRAND_ADMIN
from shelfproof.console.views import alert_row, cell_center, compromised_codes, scans_by_place
from shelfproof.ledger.core.clones import compromise_text
from shelfproof.ledger.v1 import state_pb2 as stpb
from shelfproof.ledger.v1 import transaction_pb2 as txpb

me = session.person()
api = session.clients()
st.title("Authenticity")
st.caption("Consumer scans recorded on the ledger by the verify page (a 4-character area, never an address), and the alerts "
           "every validator derives from them. Drawn on plain axes: no map tiles leave this machine.")
WINDOW = 5_000  # blocks read back (the ledger has no list of alerts: they are streamed from a height)
# a brand admin sees the alerts on the brand's own products; other roles see every alert
brand = me.organization_gln if me.role == BRAND_ADMIN else ""
with session.explained("read the scans and alerts"):
    status = api.status()
    since = max(1, status.latest_height - WINDOW)
    st.caption(f"Scans and alerts since block {since:,} (the latest {WINDOW:,} blocks).")
    products = {p.gtin: p.name for p in api.products_list()}
    scans = []
    for result in api.transactions_since(since, limit=20_000, wait_s=1.5):
        body = txpb.TransactionBody.FromString(txpb.SignedTransaction.FromString(result.transaction).body)
        if body.WhichOneof("action") == "record_scans":
            for scan in body.record_scans.scans:
                lat, lon = cell_center(scan.cell)
                scans.append({"gtin": scan.gtin, "serial": scan.serial, "cell": scan.cell or "—", "lat": lat, "lon": lon,
                              "time": datetime.fromtimestamp(scan.scan_unix_s, timezone.utc)})
    alerts = api.alerts_since(since, brand_owner_gln=brand)
    codes = compromised_codes(alerts)
    records = api.query_many([("scans", f"{gtin}/{serial}") for gtin, serial in codes])
    still = [(code, stpb.ScanRecord.FromString(r)) for code, r in zip(codes, records) if r]
    compromised = [(code, record) for code, record in still if record.HasField("compromise")]

    cols = st.columns(4)
    cols[0].metric("Scans", len(scans), border=True)
    cols[1].metric("Areas", len({s["cell"] for s in scans if s["cell"] != "—"}), border=True)
    cols[2].metric("Counterfeit alerts", len(alerts), border=True)
    cols[3].metric("Compromised codes", len(compromised), border=True)

    st.subheader("Scans by place")
    places = scans_by_place(scans)
    if places:
        flagged = {serial for (_, serial), _ in compromised}
        frame = pd.DataFrame(places)
        frame["copied code seen"] = [any(s["serial"] in flagged for s in scans if s["cell"] == cell) for cell in frame["area"]]
        # the places' extent with a margin, so that two cities a country apart do not sit on one dot
        lon = [max(-180.0, frame["lon"].min() - 5), min(180.0, frame["lon"].max() + 5)]
        lat = [max(-90.0, frame["lat"].min() - 3), min(90.0, frame["lat"].max() + 3)]
        points = alt.Chart(frame).mark_circle(opacity=0.8).encode(
            x=alt.X("lon:Q", title="longitude", scale=alt.Scale(domain=lon)),
            y=alt.Y("lat:Q", title="latitude", scale=alt.Scale(domain=lat)),
            size=alt.Size("scans:Q", scale=alt.Scale(range=[120, 900]), legend=alt.Legend(format="d", tickMinStep=1)),
            color=alt.Color("copied code seen:N", scale=alt.Scale(domain=[False, True], range=["#2e7d32", "#c62828"])),
            tooltip=["area", "scans", "items", "lat", "lon"])
        labels = alt.Chart(frame).mark_text(dy=-14).encode(x="lon:Q", y="lat:Q", text="area:N")
        st.altair_chart(points + labels, use_container_width=True)
        timeline = pd.DataFrame(scans)
        st.altair_chart(alt.Chart(timeline).mark_bar().encode(x=alt.X("yearmonthdatehours(time):T", title="time"), y="count():Q",
                                                              color=alt.Color("cell:N", title="area")), use_container_width=True)
    else:
        st.info("No consumer scans are on the ledger yet.")

    st.subheader("Compromised codes")
    if compromised:
        st.dataframe([{"product": products.get(gtin, gtin), "gtin": gtin, "serial": serial, "why": compromise_text(record.compromise),
                       "first seen": record.compromise.first.cell, "then": record.compromise.second.cell,
                       "scans since": record.suspicious_scans, "block": record.compromise.height}
                      for (gtin, serial), record in compromised], hide_index=True, key="compromised")
    else:
        st.info("No code is recorded as compromised.")
    if compromised and "clear" in ACTIONS_BY_ROLE[me.role]:
        with st.form("clear_compromise"):
            code = st.selectbox("A false alarm on one of your codes", [c for c, _ in compromised], format_func=lambda c: f"{products.get(c[0], c[0])} · {c[1]}",
                                key="clear_code")
            why = st.text_input("Why it is a false alarm (kept on the ledger)", key="clear_reason")
            if st.form_submit_button("Clear the alarm"):
                with session.explained("clear the alarm"):
                    height = api.clear_compromise(code[0], code[1], why.strip())
                    st.success(f"{code[1]} is no longer held compromised (block {height}); later scans are judged afresh.")
    cleared = [(code, record) for code, record in still if not record.HasField("compromise") and record.HasField("cleared")]
    if cleared:
        st.caption("Cleared by the brand as false alarms: " + "; ".join(f"{s} ({r.cleared.reason})" for (_, s), r in cleared))

    st.subheader("Alert queue")
    if alerts:
        st.dataframe([alert_row(a, products) for a in reversed(alerts)], hide_index=True, key="alerts")
    else:
        st.info("No counterfeit alerts: no scan has raised one.")
