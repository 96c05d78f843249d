import time
import uuid
from datetime import datetime, timedelta, timezone

import streamlit as st

from shelfproof.console import session
from shelfproof.console.people import ACTIONS_BY_ROLE
from shelfproof.console.views import money, pending_scheduled_changes, price_event_row, promotion_row
from shelfproof.ledger.v1 import state_pb2 as stpb
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.pricing.v1 import pricing_pb2 as pricepb

me = session.person()
api = session.clients()
may_change = "approve" in ACTIONS_BY_ROLE[me.role]  # store managers set their stores' prices
st.title("Prices and promotions")
st.caption("The price book as the pricing service reads it from the ledger. Every change is checked against the guardrails "
           "by every validator, not by this page.")

names = session.gln_names()
with session.explained("read the guardrail policy"):
    policy_bytes = api.query("policies", me.organization_gln)
    if policy_bytes:
        policy = txpb.GuardrailPolicy.FromString(policy_bytes)
        cols = st.columns(4)
        cols[0].metric("Margin floor", f"{policy.margin_floor_bps / 100:.1f} %")
        cols[1].metric("Largest discount", f"{policy.max_discount_bps / 100:.1f} %")
        cols[2].metric("Largest change a day", f"{policy.max_price_change_bps_per_day / 100:.1f} %")
        cols[3].metric("Budget a period", f"{policy.currency_code} {policy.budget_minor / 100:,.0f}")

prices: list[pricepb.Price] = []
products: dict[str, str] = {}
with session.explained("read the price book"):
    products = {p.gtin: p.name for p in api.products_list()}
    prices = api.prices()
    st.subheader("Price book")
    if prices:
        st.dataframe([{"location": names.get(p.location_gln, p.location_gln), "product": products.get(p.gtin, p.gtin), "gtin": p.gtin,
                       "price": money(p.amount.amount_minor, p.amount.currency_code),
                       "since": datetime.fromtimestamp(p.effective_time.seconds, timezone.utc),
                       "until": datetime.fromtimestamp(p.valid_until.seconds, timezone.utc) if p.valid_until.seconds else None,
                       "reason": p.reason, "block": p.ledger_ref.height} for p in prices],
                     hide_index=True, key="price_book")
    else:
        st.info("No prices are in the price book yet.")

locations = sorted({p.location_gln for p in prices}, key=lambda g: names.get(g, g))
with session.explained("read the scheduled changes and promotions"):
    events = api.price_events(locations) if locations else []
    scheduled = pending_scheduled_changes(events, time.time())
    st.subheader("Scheduled changes")
    if scheduled:
        st.dataframe([price_event_row(e, names, products) for e in scheduled], hide_index=True, key="scheduled")
    else:
        st.info("No price changes are scheduled.")
    st.subheader("Promotions")
    promotion_ids = list(dict.fromkeys(e.promotion_id for e in events if e.promotion_id))
    records = api.query_many([("promotions", pid) for pid in promotion_ids])
    promotions = [promotion_row(stpb.PromotionRecord.FromString(r), names) for r in records if r]
    if promotions:
        st.dataframe(promotions, hide_index=True, key="promotions")
    else:
        st.info("No promotions are on the ledger yet; promotion drafts wait on the Drafts page.")
    refused = [e for e in events if not e.applied]
    if refused:
        st.warning(f"{len(refused)} price event(s) were refused by a guardrail when they fell due: "
                   + "; ".join(f"{e.promotion_id or e.change_id}: {e.reason}" for e in refused[-5:]))

if prices:
    st.subheader("A price and its breakdown")
    left, right = st.columns(2)
    gtin = left.selectbox("Product", sorted({p.gtin for p in prices}), format_func=lambda g: f"{products.get(g, g)} ({g})", key="price_gtin")
    where = right.selectbox("Location", [p.location_gln for p in prices if p.gtin == gtin], format_func=lambda g: names.get(g, g), key="price_location")
    quantity = st.number_input("Quantity", min_value=1, max_value=100, value=1, key="price_quantity")
    with session.explained("price the product"):
        line = api.price(gtin, where, int(quantity))
        currency = line.line_total.currency_code
        b = line.breakdown
        cols = st.columns(3)
        cols[0].metric("Customer pays", money(line.line_total.amount_minor, currency), border=True)
        cols[1].metric("Base", money(b.base_line_minor, currency), border=True)
        cols[2].metric("Lowest price of the 30 days before", money(line.reference_price.amount_minor, currency) if line.HasField("reference_price") else "—",
                       border=True)
        steps = [{"step": f"base {b.quantity} × {money(b.unit_base_minor, currency)}", "amount": money(b.base_line_minor, currency)}]
        steps += [{"step": f"promotion {a.promotion_id} ({a.kind.replace('_', ' ')})", "amount": f"−{money(a.off_minor, currency)}"} for a in b.adjustments]
        if b.clamp_rule:
            steps.append({"step": f"held up by the guardrail {b.clamp_rule.replace('_', ' ')}", "amount": f"+{money(b.clamp_minor, currency)}"})
        steps.append({"step": f"line total (unit {money(b.unit_minor, currency)}, rounded {b.rounding or 'half up'})", "amount": money(b.line_minor, currency)})
        st.dataframe(steps, hide_index=True, key="breakdown")
        history = api.price_history(gtin, where)
        st.caption("Price history, newest first")
        st.dataframe([price_event_row(e, names, products) for e in history], hide_index=True, key="price_history")

    if may_change:
        st.subheader("Propose a price change")
        with st.form("propose_price"):
            record_bytes = api.query("prices", f"{gtin}/{where}")
            record = stpb.PriceRecord.FromString(record_bytes) if record_bytes else None
            current = record.price.amount_minor if record else 0
            amount = st.number_input("New price (minor units, e.g. cents)", min_value=1, value=max(current, 1), key="propose_amount")
            cost = st.number_input("Unit cost (minor units)", min_value=0, value=record.unit_cost.amount_minor if record else 0, key="propose_cost")
            reason = st.text_input("Reason", key="propose_reason")
            later = st.number_input("Take effect in days (0: now)", min_value=0, max_value=30, value=0, key="propose_days")
            if st.form_submit_button("Propose the change"):
                with session.explained("change the price"):
                    currency = record.price.currency_code if record else "EUR"
                    change = pricepb.PriceChange(gtin=gtin, location_gln=where, reason=reason.strip())
                    change.amount.currency_code, change.amount.amount_minor = currency, int(amount)
                    change.unit_cost.currency_code, change.unit_cost.amount_minor = currency, int(cost)
                    when = int((datetime.now(timezone.utc) + timedelta(days=int(later))).timestamp()) if later else 0
                    st.success(f"{products.get(gtin, gtin)} at {names.get(where, where)}: {api.propose_price(change, uuid.uuid4().hex, when)}.")
