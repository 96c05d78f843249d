"""ProcessProposal rejects a block carrying a stateless-invalid transaction (only a faulty proposer
makes one); PrepareProposal leaves such transactions out. Stateful failures stay in-band."""

from __future__ import annotations

import pytest
from tendermint.abci import types_pb2 as abci

from shelfproof.ledger.core.tx import MAX_TX_BYTES
from shelfproof.ledger.v1 import transaction_pb2 as txpb

from tests.security.ledger_nodes import BRAND, RETAILER, body, genesis, node, policy, product, relayer_copies, signers

ACCEPT, REJECT = abci.ResponseProcessProposal.ACCEPT, abci.ResponseProcessProposal.REJECT


def _stateless_invalid(g) -> dict[str, bytes]:
    retailer = signers(g)[f"{RETAILER}/admin-1"]
    valid = signers(g)[f"{BRAND}/admin-1"].sign(product())
    return {
        "too large": b"\x0a" * (MAX_TX_BYTES + 1),
        "garbage": b"\xff\x00garbage",
        "no action": retailer.sign(txpb.TransactionBody(created_unix_ms=1)),
        "non-canonical": relayer_copies(valid)["non-minimal nonce varint"],
        "out of bounds": retailer.sign(policy(draft_ttl_s=2**63 - 1)),
    }


@pytest.mark.parametrize("kind", ["too large", "garbage", "no action", "non-canonical", "out of bounds"])
def test_process_proposal_rejects_a_block_with_a_stateless_invalid_transaction(kind):
    g = genesis()
    app = node(g)
    good = signers(g)[f"{BRAND}/admin-0"].sign(product())
    bad = _stateless_invalid(g)[kind]
    assert app.process_proposal(abci.RequestProcessProposal(txs=[good, bad], height=1)).status == REJECT


def test_process_proposal_accepts_stateful_failures_and_prepare_proposal_drops_stateless_ones():
    g = genesis()
    app = node(g)
    brand = signers(g)[f"{BRAND}/admin-0"]
    first, replayed_nonce, gap = brand.sign(product()), brand.sign(product(), nonce=1), brand.sign(product(), nonce=9)
    forged = txpb.SignedTransaction.FromString(brand.sign(body(approve_draft=txpb.ApproveDraft(draft_id="d"))))
    forged.signature = bytes(64)
    stateful = [first, replayed_nonce, gap, forged.SerializeToString()]
    assert app.process_proposal(abci.RequestProcessProposal(txs=stateful, height=1)).status == ACCEPT
    invalid = list(_stateless_invalid(g).values())
    mempool = [invalid[0], first, invalid[1], replayed_nonce, *invalid[2:], gap]
    prepared = app.prepare_proposal(abci.RequestPrepareProposal(txs=mempool, max_tx_bytes=10 * MAX_TX_BYTES, height=1))
    assert list(prepared.txs) == [first, replayed_nonce, gap]
    assert app.process_proposal(abci.RequestProcessProposal(txs=prepared.txs, height=1)).status == ACCEPT
