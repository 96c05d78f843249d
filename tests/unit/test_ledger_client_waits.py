"""LedgerClient.submit_many waits for a batch's commits in the one SubmitTransactions call that submits
it (``wait_for_commit``): a wait per transaction was a unary call each, resending its bytes (a third of
the registry's gRPC work when capturing a large EPCIS document), and 1,000 of them at once once got
RST_STREAM REFUSED_STREAM in CI. The real adapter path is in tests/integration/test_registry_events.py
(a document larger than one ledger batch) and tests/integration/test_ledger_service.py."""

from __future__ import annotations

import asyncio

from shelfproof.ledger.client import LedgerClient
from shelfproof.ledger.core.codes import ResultCode
from shelfproof.ledger.signer import AccountSigner
from shelfproof.ledger.v1 import ledger_pb2 as pb
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.runtime.errors import LedgerRejected


class BatchStub:
    """Answers like an adapter: the first transaction refused before a block, the second in one, the rest
    committed; counts the calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def Query(self, request, timeout=None, metadata=None):
        self.calls.append("Query")
        return pb.QueryResponse(found=True, value=st.AgentRecord(nonce=0).SerializeToString())

    async def SubmitTransactions(self, request, timeout=None, metadata=None):
        self.calls.append(f"SubmitTransactions wait={request.wait_for_commit}")
        results = []
        for i, _ in enumerate(request.transactions):
            if i == 0:
                results.append(pb.TransactionResult(status=pb.TRANSACTION_STATUS_REJECTED, code=ResultCode.PERMISSION_DENIED, log="not yours"))
            elif i == 1:
                results.append(pb.TransactionResult(status=pb.TRANSACTION_STATUS_REJECTED, code=ResultCode.ALREADY_EXISTS, log="twice", height=7))
            else:
                results.append(pb.TransactionResult(status=pb.TRANSACTION_STATUS_COMMITTED, height=7, index=i))
        return pb.SubmitTransactionsResponse(results=results)

    async def SubmitTransaction(self, request, timeout=None, metadata=None):
        raise AssertionError("a batch's commits are awaited in its own call, not one call per transaction")


def test_a_full_batch_waits_for_every_commit_in_one_call():
    stub = BatchStub()
    client = LedgerClient(stub, AccountSigner.generate("test-chain", "agent-1"))
    results = asyncio.run(client.submit_many([txpb.TransactionBody() for _ in range(1_000)]))
    assert stub.calls == ["Query", "SubmitTransactions wait=True"]
    assert len(results) == 1_000
    before, in_block = results[0], results[1]
    assert isinstance(before, LedgerRejected) and before.metadata["stage"] == "check_tx"
    assert before.ledger_code == ResultCode.PERMISSION_DENIED
    assert isinstance(in_block, LedgerRejected) and in_block.metadata["stage"] == "block"
    assert in_block.ledger_code == ResultCode.ALREADY_EXISTS and "block 7" in in_block.message
    assert all(r.status == pb.TRANSACTION_STATUS_COMMITTED and r.height == 7 for r in results[2:])
    # A refusal before a block left a nonce gap: the next call learns the nonce again.
    asyncio.run(client.submit_many([txpb.TransactionBody()]))
    assert stub.calls[2] == "Query"
