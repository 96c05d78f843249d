"""LedgerClient.submit_many waits for each transaction's commit, but never with more streams at once
than a server's per-connection limit leaves room for (a 1,000-transaction batch once opened 1,000 and
CI saw RST_STREAM REFUSED_STREAM). The real adapter path is in tests/integration/test_registry_events.py
(a document larger than one ledger batch)."""

from __future__ import annotations

import asyncio

from shelfproof.ledger import client as ledger_client
from shelfproof.ledger.client import LedgerClient
from shelfproof.ledger.signer import AccountSigner
from shelfproof.ledger.v1 import ledger_pb2 as pb
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb


class CountingStub:
    """Answers like an adapter whose block commits after a short while; counts waits in flight."""

    def __init__(self) -> None:
        self.in_flight = self.most_in_flight = self.waits = 0

    async def Query(self, request, timeout=None, metadata=None):
        return pb.QueryResponse(found=True, value=st.AgentRecord(nonce=0).SerializeToString())

    async def SubmitTransactions(self, request, timeout=None, metadata=None):
        return pb.SubmitTransactionsResponse(results=[
            pb.TransactionResult(status=pb.TRANSACTION_STATUS_PENDING) for _ in request.transactions
        ])

    async def SubmitTransaction(self, request, timeout=None, metadata=None):
        self.in_flight += 1
        self.waits += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.002)
            return pb.SubmitTransactionResponse(result=pb.TransactionResult(status=pb.TRANSACTION_STATUS_COMMITTED))
        finally:
            self.in_flight -= 1


def test_a_full_batch_waits_for_every_commit_with_bounded_streams():
    stub = CountingStub()
    client = LedgerClient(stub, AccountSigner.generate("test-chain", "agent-1"))
    bodies = [txpb.TransactionBody() for _ in range(1_000)]
    results = asyncio.run(client.submit_many(bodies))
    assert len(results) == 1_000 and all(r.status == pb.TRANSACTION_STATUS_COMMITTED for r in results)
    assert stub.waits == 1_000
    assert 1 < stub.most_in_flight <= ledger_client.MAX_COMMIT_WAITS
