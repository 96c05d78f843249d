import uuid

import streamlit as st

from shelfproof.console import session
from shelfproof.product.v1 import product_pb2 as prpb

STAGES = {prpb.CommissionProgress.STAGE_SERIALS_GENERATED: (0.25, "serials generated"),
          prpb.CommissionProgress.STAGE_CONTENT_STORED: (0.5, "serial list stored"),
          prpb.CommissionProgress.STAGE_COMMITTED: (0.75, "committed on the ledger"),
          prpb.CommissionProgress.STAGE_QUERYABLE: (1.0, "queryable")}

api = session.clients()
st.title("Products and labels")
with session.explained("list the products"):
    products = api.products_list()
    st.dataframe([{"gtin": p.gtin, "name": p.name, "brand": p.brand, "category": p.category, "block": p.ledger_ref.height} for p in products],
                 hide_index=True, key="products")
register, commission, labels = st.tabs(["Register", "Commission", "Labels, voids and recalls"])
with register, st.form("register"):
    gtin = st.text_input("GTIN", key="new_gtin")
    name = st.text_input("Name", key="new_name")
    category = st.text_input("Category", key="new_category")
    if st.form_submit_button("Register product"):
        with session.explained("register the product"):
            made = api.create_product(prpb.Product(gtin=gtin.strip(), name=name.strip(), category=category.strip()), request_id=uuid.uuid4().hex)
            st.success(f"{made.name} ({made.gtin}) is registered in block {made.ledger_ref.height}.")
with commission, st.form("commission"):
    gtin = st.selectbox("Product", [p.gtin for p in products], format_func=lambda g: next(p.name for p in products if p.gtin == g) + f" ({g})",
                        key="commission_gtin")
    lot = st.text_input("Lot", key="commission_lot")
    expiry = st.text_input("Expiry (YYYY-MM-DD, optional)", key="commission_expiry")
    count = st.number_input("Items", min_value=1, max_value=100_000, value=100, key="commission_count")
    if st.form_submit_button("Commission"):
        bar = st.progress(0.0, text="starting")
        with session.explained("commission the batch"):
            for reply in api.commission(gtin, lot.strip(), expiry.strip(), int(count), request_id=uuid.uuid4().hex):
                if reply.HasField("progress"):
                    fraction, text = STAGES.get(reply.progress.stage, (0.1, "working"))
                    bar.progress(fraction, text=f"{reply.progress.items} items: {text}")
                else:
                    st.session_state["last_batch"] = st.session_state["label_batch"] = reply.batch.batch_id
                    st.success(f"Batch {reply.batch.batch_id}: {reply.batch.count} items of lot {reply.batch.lot}, block {reply.batch.ledger_ref.height}.")
with labels:
    batch_id = st.text_input("Batch id", key="label_batch")
    if batch_id:
        with session.explained("print the label sheet"):
            sheet = api.label_sheet(batch_id.strip())
            st.download_button(f"Download label PDF (page 1 of {sheet.page_count})", sheet.pdf, file_name=f"labels-{batch_id}.pdf",
                               mime="application/pdf", key="label_pdf")
    with st.form("void"):
        void_gtin = st.text_input("GTIN", key="void_gtin")
        serials = st.text_area("Serials to void (one a line)", key="void_serials")
        void_reason = st.text_input("Reason", key="void_reason")
        if st.form_submit_button("Void labels"):
            with session.explained("void the labels"):
                reply = api.void(void_gtin.strip(), [s.strip() for s in serials.splitlines() if s.strip()], void_reason, uuid.uuid4().hex)
                st.success(f"{reply.voided} label(s) voided in block {reply.ledger_ref.height}.")
    with st.form("recall"):
        recall_gtin = st.text_input("GTIN", key="recall_gtin")
        recall_lot = st.text_input("Lot", key="recall_lot")
        recall_reason = st.text_input("Reason", key="recall_reason")
        if st.form_submit_button("Recall lot"):
            with session.explained("recall the lot"):
                recall = api.recall(recall_gtin.strip(), recall_lot.strip(), recall_reason, uuid.uuid4().hex)
                st.success(f"Lot {recall.lot} of {recall.gtin} is recalled (block {recall.ledger_ref.height}).")
