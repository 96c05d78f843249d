"""Submitting signed transactions for one account through the ledger adapter.

Keeps the account's nonce: learned from the ledger's state when first needed, advanced per
transaction, re-learned after a nonce rejection (another process may share the account).
"""

from __future__ import annotations

import asyncio

from shelfproof.ledger.core.codes import ResultCode
from shelfproof.ledger.signer import AccountSigner
from shelfproof.ledger.v1 import ledger_pb2 as pb
from shelfproof.ledger.v1 import ledger_pb2_grpc
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.runtime.client import call
from shelfproof.runtime.errors import AlreadyExists, Internal, InvalidArgument, LedgerRejected, NotFound, PermissionDenied

def ledger_error(err: LedgerRejected) -> Exception:
    """Map the ledger's verdict on a write to the status a caller acts on."""
    if err.ledger_code == ResultCode.ALREADY_EXISTS:
        return AlreadyExists(err.message, metadata=err.metadata)
    if err.ledger_code == ResultCode.NOT_FOUND:
        return NotFound(err.message, metadata=err.metadata)
    if err.ledger_code == ResultCode.INVALID_ARGUMENT:
        return InvalidArgument(err.message, metadata=err.metadata)
    if err.ledger_code == ResultCode.PERMISSION_DENIED:
        return PermissionDenied(err.message, metadata=err.metadata)
    if err.ledger_code == ResultCode.INTERNAL_ERROR:
        # The transaction reached a bug in the ledger: not a verdict on the request.
        return Internal(err.message, metadata=err.metadata)
    return err


class LedgerClient:
    def __init__(self, stub: ledger_pb2_grpc.LedgerServiceStub, signer: AccountSigner) -> None:
        self.stub = stub
        self.signer = signer
        self._lock = asyncio.Lock()
        self._synced = False

    async def _sync_nonce(self) -> None:
        answer = await call(
            self.stub.Query, pb.QueryRequest(store="agents", key=self.signer.agent_id.encode()), idempotent=True
        )
        if not answer.found:
            raise NotFound(f"agent {self.signer.agent_id} is not on the ledger")
        self.signer.next_nonce = st.AgentRecord.FromString(answer.value).nonce + 1
        self._synced = True

    async def submit(self, body: txpb.TransactionBody, *, deadline_s: float = 20.0) -> pb.TransactionResult:
        """Sign with the next nonce, submit, and wait for the commit (raises LedgerRejected)."""
        async with self._lock:
            if not self._synced:
                await self._sync_nonce()
            raw = self.signer.sign(body)
            try:
                reply = await call(
                    self.stub.SubmitTransaction,
                    pb.SubmitTransactionRequest(transaction=raw, wait_for_commit=True),
                    idempotent=True,  # same bytes, same hash: the adapter deduplicates
                    deadline_s=deadline_s,
                )
            except LedgerRejected as err:
                if err.ledger_code in (ResultCode.NONCE_GAP, ResultCode.NONCE_REPLAYED, ResultCode.BAD_SIGNATURE):
                    self._synced = False
                elif err.metadata.get("stage") == "check_tx":
                    self.signer.next_nonce -= 1  # refused before a block: the nonce was not used
                raise
        return reply.result

    async def submit_many(self, bodies: list[txpb.TransactionBody], *, deadline_s: float = 60.0) -> list[pb.TransactionResult | LedgerRejected]:
        """Sign consecutive nonces, submit them as one ordered batch, and wait for every commit (in the
        same call: ``wait_for_commit``).

        Returns, per body, its committed result (PENDING if the deadline came first) or the
        LedgerRejected that refused it (``stage`` check_tx before a block, block in one).
        """
        async with self._lock:
            if not self._synced:
                await self._sync_nonce()
            raws = [self.signer.sign(body) for body in bodies]
            reply = await call(
                self.stub.SubmitTransactions, pb.SubmitTransactionsRequest(transactions=raws, wait_for_commit=True),
                idempotent=True, deadline_s=deadline_s,
            )
            if any(r.status == pb.TRANSACTION_STATUS_REJECTED and not r.height for r in reply.results):
                self._synced = False  # a refused nonce leaves a gap: learn the nonce again next time

        def outcome(result: pb.TransactionResult) -> pb.TransactionResult | LedgerRejected:
            if result.status != pb.TRANSACTION_STATUS_REJECTED:
                return result
            if not result.height:
                return LedgerRejected(result.log, ledger_code=result.code, metadata={"stage": "check_tx"})
            return LedgerRejected(
                f"transaction rejected in block {result.height}: {result.log}", ledger_code=result.code,
                metadata={"tx_hash": result.tx_hash.hex(), "stage": "block"},
            )

        return [outcome(r) for r in reply.results]

    async def put_content(self, content: bytes) -> bytes:
        reply = await call(self.stub.PutContent, pb.PutContentRequest(content=content), idempotent=True, deadline_s=60)
        return reply.sha256
