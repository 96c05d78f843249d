from datetime import datetime, timezone

import altair as alt
import pandas as pd
import streamlit as st

from shelfproof.console import session
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.verify import geo

api = session.clients()
st.title("Authenticity")
st.caption("Consumer scans recorded on the ledger by the verify page (a 4-character area, never an address). "
           "Drawn on plain axes: no map tiles leave this machine.")
with session.explained("read the scans"):
    status = api.status()
    scans = []
    for result in api.transactions_since(max(1, status.latest_height - 5000), limit=20_000, wait_s=1.5):
        body = txpb.TransactionBody.FromString(txpb.SignedTransaction.FromString(result.transaction).body)
        if body.WhichOneof("action") == "record_scans":
            for scan in body.record_scans.scans:
                lat, lon = geo.center(scan.cell) if scan.cell else (None, None)
                scans.append({"gtin": scan.gtin, "serial": scan.serial, "cell": scan.cell or "—", "lat": lat, "lon": lon,
                              "time": datetime.fromtimestamp(scan.scan_unix_s, timezone.utc)})
    cols = st.columns(3)
    cols[0].metric("Scans", len(scans), border=True)
    cols[1].metric("Items scanned", len({(s["gtin"], s["serial"]) for s in scans}), border=True)
    cols[2].metric("Areas", len({s["cell"] for s in scans if s["cell"] != "—"}), border=True)
    if scans:
        frame = pd.DataFrame(scans)
        placed = frame.dropna(subset=["lat"])
        if not placed.empty:
            st.altair_chart(alt.Chart(placed).mark_circle(size=120).encode(
                x=alt.X("lon:Q", title="longitude"), y=alt.Y("lat:Q", title="latitude"), color="serial:N", tooltip=["gtin", "serial", "cell", "time"]),
                use_container_width=True)
        st.altair_chart(alt.Chart(frame).mark_bar().encode(x=alt.X("yearmonthdatehours(time):T", title="time"), y="count():Q"), use_container_width=True)
        st.dataframe(frame.sort_values("time", ascending=False).head(100), hide_index=True, key="scans")
    else:
        st.info("No consumer scans are on the ledger yet.")
    st.subheader("Alert queue")
    st.info("Clone alerts (too many scans, impossible travel) are shown on the verify page per item; an alert queue with "
            "states is not available yet because the verify service does not expose its alerts over gRPC.")
