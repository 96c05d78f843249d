"""The adapter's transaction index answers "committed, pending or unknown" from one snapshot: a block
indexed between two separate reads once made an acknowledged transaction read as unknown (NOT_FOUND
from GetTransaction in the CometBFT fault test, under load)."""

from __future__ import annotations

import asyncio

from shelfproof.ledger.adapter.index import TxIndex
from shelfproof.ledger.signer import AccountSigner
from shelfproof.ledger.v1 import transaction_pb2 as txpb


def test_a_transaction_committed_between_the_two_reads_is_never_unknown(tmp_path):
    index = TxIndex(tmp_path / "index.sqlite")
    raw = AccountSigner.generate("test-chain", "agent-1").sign(txpb.TransactionBody())
    h = b"\x01" * 32
    asyncio.run(index.acknowledge([(h, raw)], 0))
    read_committed = index.get

    def get_then_commit(tx_hash):
        found = read_committed(tx_hash)
        index.record_block(5, 0, [(h, 0, "", raw)])  # the block lands right after the first read
        return found

    index.get = get_then_commit
    known, pending = index.lookup(h)
    assert known is not None or pending, "an acknowledged transaction read as unknown"
    index.get = read_committed
    known, pending = index.lookup(h)
    assert known is not None and known.height == 5 and not pending
    index.close()
