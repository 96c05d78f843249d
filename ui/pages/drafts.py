import hashlib

import streamlit as st

from shelfproof.console import session
from shelfproof.console.errors import problem_of
from shelfproof.console.people import ACTIONS_BY_ROLE, AUDITOR
from shelfproof.console.views import money, order_line_rows, order_row, order_waits_for_answer, order_is_late
from shelfproof.ledger.v1 import state_pb2 as stpb
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.planner.v1 import planner_pb2 as ppb

me = session.person()
api = session.clients()
may_approve = "approve" in ACTIONS_BY_ROLE[me.role]
# the buyer's people decide drafts and an auditor reads them; a supplier sees the orders it is asked to fill
sees_drafts = may_approve or me.role == AUDITOR
st.title("Drafts and orders")


with session.explained("read the drafts"):
    names = session.gln_names()
    if not sees_drafts:
        drafts = []
        st.caption("AI drafts are decided by the buyer's people; below are the purchase orders your organisation is asked to fill.")
    else:
        drafts = api.drafts(approver_agent_id=me.agent_id) if may_approve else api.drafts(state=ppb.DRAFT_STATE_PENDING_APPROVAL)
        st.caption("AI drafts waiting for " + ("you" if may_approve else "approval") + ". Approving signs a transaction with your own key.")
        if not drafts:
            st.info("No drafts are waiting for you.")
    chosen = []
    for draft in drafts:
        kind = "Restock" if draft.kind == ppb.DRAFT_KIND_RESTOCK_ORDER else "Promotion"
        summary = (money(draft.total.amount_minor, draft.total.currency_code) if draft.kind == ppb.DRAFT_KIND_RESTOCK_ORDER
                   else f"{draft.promotion.discount_bps / 100:.0f} % off {len(draft.promotion.gtins)} product(s)")
        label = f"{kind} for {names.get(draft.location_gln, draft.location_gln)} · {summary} · {draft.draft_id}"
        if may_approve and st.checkbox(label, key=f"pick_{draft.draft_id}"):
            chosen.append(draft.draft_id)
        with st.expander(f"Details of {draft.draft_id}" if may_approve else label):
            st.write(f"Needs {draft.approvals_required} approval(s); has {len(draft.approvers)}. Submitted by `{draft.submitted_by}`; "
                     f"expires {draft.expire_time.ToDatetime():%Y-%m-%d %H:%M} UTC.")
            st.markdown("**Rationale**")
            st.text(draft.rationale)
            record_bytes = api.query("drafts", draft.draft_id)
            record = stpb.DraftRecord.FromString(record_bytes) if record_bytes else None
            if draft.kind == ppb.DRAFT_KIND_RESTOCK_ORDER:
                bounds_bytes = api.query("replenishment", f"{record.draft.organization_gln if record else me.organization_gln}/{draft.location_gln}")
                bounds = {b.gtin: b for b in txpb.ReplenishmentPolicy.FromString(bounds_bytes).items} if bounds_bytes else {}
                st.dataframe([
                    {"gtin": line.gtin, "quantity": line.quantity, "unit cost": money(line.unit_cost.amount_minor, line.unit_cost.currency_code),
                     "min": bounds[line.gtin].min_order_quantity if line.gtin in bounds else None,
                     "max": bounds[line.gtin].max_order_quantity if line.gtin in bounds else None,
                     "case pack": bounds[line.gtin].case_pack if line.gtin in bounds else None}
                    for line in draft.order_lines
                ], hide_index=True)
            else:
                p = draft.promotion
                st.write(f"{p.discount_bps / 100:.1f} % off {', '.join(p.gtins)} from {p.start_time.ToDatetime():%Y-%m-%d} to {p.end_time.ToDatetime():%Y-%m-%d}: “{p.customer_copy}”")
            if draft.adjustments:
                st.warning("Bounds applied: " + "; ".join(draft.adjustments))
            st.markdown(f"**Decision record** `sha256:{draft.decision_record_hash}`")
            if record is not None:
                dr = record.draft.decision_record
                assert hashlib.sha256(dr.SerializeToString(deterministic=True)).hexdigest() == draft.decision_record_hash
                st.dataframe([{"field": k, "value": v} for k, v in (
                    ("model", dr.model), ("engine", f"{dr.engine} {dr.engine_version}"), ("dtype", dr.dtype), ("weights", dr.weights_digest),
                    ("prompt template", dr.prompt_template_sha256), ("JSON schema", dr.json_schema_sha256), ("prompts", dr.prompt_sha256),
                    ("input snapshot", dr.input_snapshot_sha256), ("output", dr.output_sha256), ("sampling", dr.sampling_params_json), ("seed", str(dr.seed)),
                )], hide_index=True)
    if may_approve and drafts:
        reason = st.text_input("Reason (for a rejection)", key="reject_reason")
        approve, reject = st.columns(2)
        decided = None
        if approve.button(f"Approve selected ({len(chosen)})", type="primary", disabled=not chosen, key="approve"):
            decided = api.decide(me.agent_id, st.session_state[session.KEY], chosen, approve=True)
        if reject.button(f"Reject selected ({len(chosen)})", disabled=not chosen, key="reject"):
            decided = api.decide(me.agent_id, st.session_state[session.KEY], chosen, approve=False, reason=reason)
        for draft_id, outcome in zip(chosen, decided or []):
            if isinstance(outcome, Exception):
                st.error(f"{draft_id}: {problem_of(outcome).sentence()}")
            else:
                state = ppb.DraftState.Name(outcome.state).removeprefix("DRAFT_STATE_").replace("_", " ").lower()
                st.success(f"{draft_id}: signed by you; the draft is now {state}.")
st.subheader("Purchase orders")
st.caption("Issued by the ledger when a restock draft is approved; the supplier's people acknowledge them, and shipping and "
           "receiving events that name the order fill its lines.")
with session.explained("read the purchase orders"):
    names = session.gln_names()
    if me.role == AUDITOR:
        orders = api.purchase_orders()
    else:  # the orders my organisation placed, and those it supplies
        mine = {o.order_id: o for o in api.purchase_orders(buyer_gln=me.organization_gln)}
        mine.update({o.order_id: o for o in api.purchase_orders(supplier_gln=me.organization_gln)})
        orders = sorted(mine.values(), key=lambda o: (o.ledger_ref.height, o.order_id), reverse=True)
    names = {**names, **api.organization_names({o.supplier_gln for o in orders} | {o.buyer_gln for o in orders})}
    if not orders:
        st.info("No purchase orders yet: approving a restock draft issues one.")
    else:
        cards = st.columns(3)
        cards[0].metric("Waiting for acknowledgement", sum(order_waits_for_answer(o) for o in orders), border=True)
        cards[1].metric("Late deliveries", sum(order_is_late(o) for o in orders), border=True)
        cards[2].metric("Open orders", sum(o.state in (ppb.PURCHASE_ORDER_STATE_ISSUED, ppb.PURCHASE_ORDER_STATE_ACCEPTED,
                                                       ppb.PURCHASE_ORDER_STATE_ACCEPTED_WITH_CHANGES) for o in orders), border=True)
        st.dataframe([order_row(o, names) for o in orders], hide_index=True, key="orders")
        chosen_order = st.selectbox("Open an order", [o.order_id for o in orders], key="order_id")
        order = api.purchase_order(chosen_order)
        products = {p.gtin: p.name for p in api.products_list()}
        answer = (f"acknowledged by `{order.acknowledged_by}`" + (f" ({order.response_reason})" if order.response_reason else "")
                  if order.acknowledged_by else "not acknowledged yet")
        st.write(f"From draft `{order.draft_id}` (decision record `sha256:{order.decision_record_hash}`), issued in block "
                 f"{order.ledger_ref.height}; {answer}. EPCIS events name it as `{order.biz_transaction}`.")
        st.dataframe(order_line_rows(order, products), hide_index=True, key="order_lines")
        if "acknowledge" in ACTIONS_BY_ROLE[me.role] and order.supplier_gln == me.organization_gln and order_waits_for_answer(order):
            st.markdown("**Answer this order** (signed with your own key)")
            answer_reason = st.text_input("Reason (optional)", key="order_reason")
            accept, refuse = st.columns(2)
            answered = None
            if accept.button("Accept the order", type="primary", key="order_accept"):
                answered = api.acknowledge(me.agent_id, st.session_state[session.KEY], order.order_id, accept=True, reason=answer_reason.strip())
            if refuse.button("Reject the order", key="order_reject"):
                answered = api.acknowledge(me.agent_id, st.session_state[session.KEY], order.order_id, accept=False, reason=answer_reason.strip())
            if answered is not None:
                st.success(f"{answered.order_id}: signed by you; the order is now "
                           f"{order_row(answered, names)['state']}.")
