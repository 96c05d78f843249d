import streamlit as st

from shelfproof.console import session
from shelfproof.ledger.v1 import state_pb2 as stpb
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.planner.v1 import planner_pb2 as ppb

me = session.person()
api = session.clients()
st.title("Prices and promotions")
st.caption("What the ledger holds today. Scheduled price changes, the price-change stream and 30-day reference prices "
           "are not available yet: the pricing service has not landed.")
with session.explained("read prices from the ledger"):
    policy_bytes = api.query("policies", me.organization_gln)
    if policy_bytes:
        policy = txpb.GuardrailPolicy.FromString(policy_bytes)
        cols = st.columns(4)
        cols[0].metric("Margin floor", f"{policy.margin_floor_bps / 100:.1f} %")
        cols[1].metric("Largest discount", f"{policy.max_discount_bps / 100:.1f} %")
        cols[2].metric("Largest change a day", f"{policy.max_price_change_bps_per_day / 100:.1f} %")
        cols[3].metric("Budget a period", f"{policy.currency_code} {policy.budget_minor / 100:,.0f}")
    else:
        st.info("Your organisation has no guardrail policy on the ledger.")
    names = session.gln_names()
    stores = [g for g, n in names.items() if "Store" in n]
    products = api.products_list()
    keys = [("prices", f"{p.gtin}/{s}") for p in products for s in stores]
    rows = []
    for (_, key), value in zip(keys, api.query_many(keys)):
        if value:
            record = stpb.PriceRecord.FromString(value)
            gtin, store = key.split("/")
            margin = 1 - record.unit_cost.amount_minor / record.price.amount_minor if record.price.amount_minor else 0
            rows.append({"store": names[store], "gtin": gtin, "price": record.price.amount_minor / 100, "unit cost": record.unit_cost.amount_minor / 100,
                         "margin %": round(100 * margin, 1), "currency": record.price.currency_code})
    st.subheader("Price book")
    st.dataframe(rows, hide_index=True, key="price_book") if rows else st.info("No prices are on the ledger yet.")
    st.subheader("Promotions")
    promos = [d for d in api.drafts(state=ppb.DRAFT_STATE_APPROVED) if d.kind == ppb.DRAFT_KIND_PROMOTION]
    active = [(d, api.query("promotions", d.draft_id)) for d in promos]
    shown = [{"promotion": d.draft_id, "discount %": d.promotion.discount_bps / 100, "products": len(d.promotion.gtins),
              "from": d.promotion.start_time.ToDatetime(), "to": d.promotion.end_time.ToDatetime(), "on the ledger": v is not None,
              "guardrails": "passed (checked by every validator)" if v is not None else "—"} for d, v in active]
    st.dataframe(shown, hide_index=True, key="promotions") if shown else st.info("No approved promotions yet; promotion drafts wait on the Drafts page.")
