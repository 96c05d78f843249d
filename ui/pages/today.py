import streamlit as st

from shelfproof.console import session
from shelfproof.console.people import AUDITOR, BRAND_ADMIN, STORE_MANAGER
from shelfproof.console.views import activity_row, order_is_late, order_waits_for_answer
from shelfproof.planner.v1 import planner_pb2 as ppb

me = session.person()
api = session.clients()
st.title("Today")
with session.explained("read today's work"):
    mine = api.drafts(approver_agent_id=me.agent_id) if me.role == STORE_MANAGER else []
    pending = api.drafts(state=ppb.DRAFT_STATE_PENDING_APPROVAL)
    positions = api.positions()
    names = session.gln_names()
    low = [p for p in positions if p.quantity <= 5 and "Store" in names.get(p.location_gln, "")]
    cards = st.columns(4)
    cards[0].metric("Drafts waiting for you", len(mine), border=True)
    cards[1].metric("Drafts pending in total", len(pending), border=True)
    cards[2].metric("Low-stock lines in stores", len(low), border=True)
    cards[3].metric("Locations", len(names), border=True)
    # the orders my organisation placed or supplies (an auditor: every order)
    if me.role == AUDITOR:
        orders = api.purchase_orders()
    else:
        orders = list({o.order_id: o for o in api.purchase_orders(buyer_gln=me.organization_gln)
                       + api.purchase_orders(supplier_gln=me.organization_gln)}.values())
    status = api.status()
    alerts = api.alerts_since(max(1, status.latest_height - 5000), brand_owner_gln=me.organization_gln if me.role == BRAND_ADMIN else "")
    work = st.columns(4)
    work[0].metric("Orders unacknowledged", sum(order_waits_for_answer(o) for o in orders), border=True,
                   help="Purchase orders waiting for the supplier's acknowledgement")
    work[1].metric("Late deliveries", sum(order_is_late(o) for o in orders), border=True,
                   help="Orders with a line received after its delivery date, or still open past it")
    work[2].metric("Receipts due", sum(any(line.open_quantity for line in o.lines) for o in orders
                                       if o.state != ppb.PURCHASE_ORDER_STATE_ISSUED), border=True)
    work[3].metric("Counterfeit alerts", len(alerts), border=True)
    st.caption("Orders are on the Drafts and orders page, alerts on the Authenticity page.")
    if low:
        st.subheader("Low stock")
        products = {p.gtin: p.name for p in api.products_list()}
        st.dataframe([{"location": names.get(p.location_gln, p.location_gln), "product": products.get(p.gtin, ""), "gtin": p.gtin,
                       "on hand": p.quantity} for p in low],
                     hide_index=True)


@st.fragment(run_every=5)
def recent_activity() -> None:
    st.subheader("Recent ledger activity")
    with session.explained("read the ledger"):
        status = api.status()
        # the newest transactions of the last 1,000 blocks (CometBFT makes empty blocks too)
        rows = [activity_row(r) for r in api.transactions_since(max(1, status.latest_height - 1000), limit=5000, wait_s=0.5)[-15:]]
        st.caption(f"Height {status.latest_height} · {status.engine} · {status.validators} validator(s) · refreshed every 5 s")
        st.dataframe(list(reversed(rows))[:15], hide_index=True, key="activity")


recent_activity()
