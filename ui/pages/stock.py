import altair as alt
import pandas as pd
import streamlit as st

from shelfproof.console import session
from shelfproof.console.views import daily_flows, serials_at

me = session.person()
api = session.clients()
st.title("Stock")
with session.explained("read the stock"):
    locations = api.locations()
    names = {loc.gln: loc.name for loc in locations}
    # the person's own organisation's sites first, stores before other sites
    order = [loc.gln for loc in sorted(locations, key=lambda loc: (loc.organization_gln != me.organization_gln, "Store" not in loc.name, loc.name))]
    products = {p.gtin: p.name for p in api.products_list()}
    if not names:
        st.info("No locations are registered yet.")
        st.stop()
    where = st.selectbox("Location", order, format_func=names.get, key="stock_location")
    positions = [p for p in api.positions(location_gln=where) if p.quantity]
    st.dataframe([{"product": products.get(p.gtin, p.gtin), "gtin": p.gtin, "on hand": p.quantity, "as of block": p.as_of_height} for p in positions],
                 hide_index=True, key="positions")
    flows = daily_flows(api.events_list(location_gln=where), where)
    if flows:
        frame = pd.DataFrame(flows)
        frame["day"] = pd.to_datetime(frame["day"])
        left, right = st.columns(2)
        left.caption("Stock at the end of each day")
        left.altair_chart(alt.Chart(frame).mark_line().encode(x="day:T", y=alt.Y("stock:Q", title="units")), use_container_width=True)
        right.caption("Units sold per day")
        right.altair_chart(alt.Chart(frame).mark_bar().encode(x="day:T", y=alt.Y("sold:Q", title="units")), use_container_width=True)
    if positions:
        gtin = st.selectbox("Drill down to lots and serials", [p.gtin for p in positions], format_func=lambda g: f"{products.get(g, g)} ({g})",
                            key="stock_product")
        rows = serials_at(api.events_list(gtin=gtin), gtin, where)
        lots = sorted({r["lot"] for r in rows})
        st.write(f"{len(rows)} serials in {len(lots)} lot(s) here: " + ", ".join(f"{lot} ({sum(r['lot'] == lot for r in rows)})" for lot in lots))
        st.dataframe(rows, hide_index=True, key="serials")
