import os
from datetime import datetime, timezone
from pathlib import Path

import streamlit as st

from shelfproof.console import session
from shelfproof.console.views import activity_row
from shelfproof.planner.v1 import planner_pb2 as ppb

api = session.clients()
st.title("Ledger")


def trusted_hashes() -> set[bytes] | None:
    """Validator sets this machine's ledger files name (the same trust root as `shelfproof verify`)."""
    from shelfproof.verify.trust import TrustError, local_trusted_hashes

    home = Path(os.environ.get("SHELFPROOF_LEDGER_HOME", session.state_dir() / "ledger"))
    try:
        return local_trusted_hashes(home)
    except TrustError:
        return None


with session.explained("read the ledger"):
    status = api.status()
    cols = st.columns(4)
    cols[0].metric("Height", status.latest_height)
    cols[1].metric("Engine", status.engine)
    cols[2].metric("Validators", status.validators)
    cols[3].metric("Chain", status.chain_id)
    st.caption(f"App hash {status.latest_app_hash.hex()}")
    blocks = []
    for height in range(status.latest_height, max(0, status.latest_height - 10), -1):
        block = api.block(height)
        blocks.append({"height": block.height, "time": datetime.fromtimestamp(block.time.seconds, timezone.utc), "transactions": len(block.transactions),
                       "block hash": block.block_hash.hex()[:24]})
    st.subheader("Latest blocks")
    st.dataframe(blocks, hide_index=True, key="blocks")
    st.subheader("Latest transactions")
    newest = api.transactions_since(max(1, status.latest_height - 1000), limit=5000, wait_s=0.5)[-20:]
    st.dataframe(list(reversed([activity_row(r) for r in newest])),
                 hide_index=True, key="transactions")

st.subheader("Prove a record")
st.caption("Reads the record with its Merkle proof and checks it here: the header's commit signatures, then the value's path to the app hash.")
with session.explained("list drafts"):
    sample = next(iter(api.drafts()), None)
store = st.selectbox("Store", ["drafts", "items", "products", "batches", "recalls", "prices", "agents"], key="proof_store")
key = st.text_input("Key", value=sample.draft_id if sample and store == "drafts" else "", key="proof_key")
if st.button("Verify proof", key="verify_proof") and key:
    with session.explained("verify the proof"):
        trust = trusted_hashes()
        proof = api.prove(store, key.strip(), trust)
        st.success(f"Proven: {store}/{key} at height {proof.height} is in app hash {proof.app_hash.hex()[:16]}…, "
                   f"signed by {proof.signed_power} of {proof.total_power} voting power.")
        st.write(f"Validator set {proof.validators_hash.hex()[:16]}… " + ("is one this machine's ledger files name (trusted)." if trust
                 else "was not compared with a trust root: no local validator files were found."))
