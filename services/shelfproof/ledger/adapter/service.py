"""``shelfproof.ledger.v1.LedgerService``: the one gateway to the ledger for services and retailers.

It follows the engine's committed blocks into a durable index, acknowledges submitted transactions
only once they passed CheckTx (or failed it only for a nonce gap that the account's previous
transaction, acknowledged and in flight, fills) and are on disk, and resubmits acknowledged
transactions until they are committed or provably rejected (a node's mempool is not durable: a
restart loses it, and the node a successor reaches may never have seen its predecessor). Signed
transactions travel to the engine packed in batches (``batching``); everything the adapter answers,
indexes and streams is per signed transaction, as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from google.protobuf import timestamp_pb2

from shelfproof.ledger.adapter.batching import BatchPacker, BatchSettings
from shelfproof.ledger.core.app import MAX_KEYS_PER_QUERY, application_results
from shelfproof.ledger.core.codes import ResultCode
from shelfproof.ledger.adapter.content import ContentError, ContentStore
from shelfproof.ledger.engines.engine import EngineUnavailable, LedgerEngine, TxOutcome
from shelfproof.ledger.adapter.index import IndexedTx, TxIndex
from shelfproof.ledger.core.state import STORES
from shelfproof.ledger.core.tx import MAX_TX_BYTES, application_transactions, tx_hash
from shelfproof.ledger.v1 import ledger_pb2 as pb
from shelfproof.ledger.v1 import ledger_pb2_grpc
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.runtime.errors import (
    DependencyUnavailable,
    FieldViolation,
    InvalidArgument,
    LedgerRejected,
    NotFound,
)
from shelfproof.runtime.server import ServiceBinding

log = logging.getLogger(__name__)

RESUBMIT_AFTER_S = 3.0
RESUBMIT_MAX_BACKOFF_S = 30.0
MAX_BATCH = 1_000
STREAM_BATCH = 500
# CheckTx answers that mean "the node already has it": the transaction is in flight, not rejected.
_ALREADY_KNOWN = ("already exists in cache", "already in mempool")
# Rejections that can clear up by themselves (an earlier nonce still in flight, a full mempool).
_TRANSIENT = {ResultCode.NONCE_GAP, -1}


def _signer(raw: bytes) -> str:
    return txpb.SignedTransaction.FromString(raw).signer


def _account_nonce(raw: bytes) -> tuple[str, int]:
    signed = txpb.SignedTransaction.FromString(raw)
    return signed.signer, signed.nonce


def _result(tx: IndexedTx) -> pb.TransactionResult:
    return pb.TransactionResult(
        tx_hash=tx.tx_hash,
        status=pb.TRANSACTION_STATUS_COMMITTED if tx.code == 0 else pb.TRANSACTION_STATUS_REJECTED,
        height=tx.height,
        index=tx.index,
        code=tx.code,
        log=tx.log,
        transaction=tx.raw,
        block_time=timestamp_pb2.Timestamp(seconds=tx.block_time_ms // 1000, nanos=(tx.block_time_ms % 1000) * 1_000_000),
    )


@dataclass(frozen=True)
class _NonceGap:
    """A transaction refused for a nonce gap, until it is known whether its call fills the gap."""

    tx_hash: bytes
    raw: bytes
    error: LedgerRejected


class LedgerAdapter(ledger_pb2_grpc.LedgerServiceServicer):
    def __init__(
        self, engine: LedgerEngine, home: Path, engine_reason: str = "", batching: BatchSettings | None = None
    ) -> None:
        self.engine = engine
        self.packer = BatchPacker(engine, batching)
        self.content = ContentStore(home / "content")
        self.engine_reason = engine_reason
        self.index = TxIndex(home / "adapter.db")
        self._waiters: dict[bytes, list[asyncio.Future]] = {}
        self._indexed = asyncio.Condition()
        self._headers: OrderedDict[int, tuple[bytes, bytes]] = OrderedDict()
        self._tasks: list[asyncio.Task] = []
        self._indexed_height = self.index.cursor()
        # Called with (height, header time in ms) of each block once indexed (runtime/metrics.py).
        self.block_observers: list[Callable[[int, int], None]] = []

    @property
    def indexed_height(self) -> int:
        return self._indexed_height

    def binding(self) -> ServiceBinding:
        return ServiceBinding(
            pb.DESCRIPTOR.services_by_name["LedgerService"].full_name,
            lambda server: ledger_pb2_grpc.add_LedgerServiceServicer_to_server(self, server),
        )

    async def start(self) -> None:
        self._stopping = False
        self.packer.start()
        self._tasks = [
            asyncio.create_task(self._follow_blocks(), name="ledger-follower"),
            asyncio.create_task(self._resubmit_pending(), name="ledger-resubmitter"),
        ]

    async def stop(self) -> None:
        # A flag besides the cancellation: on Python 3.11, asyncio.wait_for (inside
        # wait_for_new_block) can swallow a cancellation that lands as its wait completes.
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.packer.stop()
        self.index.close()

    # --- following commits ---------------------------------------------------------------------

    async def _follow_blocks(self) -> None:
        height = self.index.cursor()
        while not self._stopping:
            try:
                latest = await self.engine.wait_for_new_block(height, 1.0)
                while height < latest:
                    block = await self.engine.block(height + 1)
                    if block is None:
                        break
                    # One entry per signed transaction (a batch's inner ones in order): the
                    # position in the index and on the stream is the ordinal among them.
                    entries = [
                        entry
                        for raw, outcome in zip(block.txs, block.results, strict=True)
                        for entry in application_results(raw, outcome.code, outcome.log, outcome.data)
                    ]
                    await asyncio.to_thread(self.index.record_block, block.height, block.time_unix_ms, entries)
                    height = self._indexed_height = block.height
                    for observe in self.block_observers:
                        observe(block.height, block.time_unix_ms)
                    for h, code, log_text, raw in entries:
                        for waiter in self._waiters.pop(h, []):
                            if not waiter.done():
                                waiter.set_result(None)
                    async with self._indexed:
                        self._indexed.notify_all()
            except asyncio.CancelledError:
                raise
            except EngineUnavailable as err:
                log.warning("engine unavailable while following blocks: %s", err)
                await asyncio.sleep(0.5)
            except Exception:
                log.exception("following blocks failed; retrying")
                await asyncio.sleep(0.5)

    async def _resubmit_pending(self) -> None:
        # Per pending hash: (attempts, when the next may go). Backing off keeps a backlog (every
        # pending transaction is older than RESUBMIT_AFTER_S then) from resubmitting itself again
        # and again; a node that lost its mempool still gets everything back within seconds.
        attempts: dict[bytes, tuple[int, float]] = {}
        while not self._stopping:
            await asyncio.sleep(RESUBMIT_AFTER_S / 2)
            try:
                behind = self._indexed_height + 2 < await self.engine.latest_height()
            except EngineUnavailable:
                continue
            if behind:
                continue  # what is committed is not known until the index has (nearly) caught up
            now = time.monotonic()
            now_ms = int(time.time() * 1000)
            pending = self.index.pending()
            attempts = {h: attempts[h] for h, _, _ in pending if h in attempts}
            due = [
                (h, raw) for h, raw, acknowledged_ms in pending
                if now_ms - acknowledged_ms >= RESUBMIT_AFTER_S * 1000 and attempts.get(h, (0, 0.0))[1] <= now
                and not self.index.get(h)
            ]
            for h, _ in due:
                tried = attempts.get(h, (0, 0.0))[0] + 1
                attempts[h] = (tried, now + min(RESUBMIT_AFTER_S * 2**tried, RESUBMIT_MAX_BACKOFF_S))
            # All at once, in acknowledgement order: they travel in batches, nonces in order.
            outcomes = await asyncio.gather(
                *(self.packer.check(raw, _signer(raw)) for _, raw in due), return_exceptions=True
            )
            for (h, raw), outcome in zip(due, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    continue  # engine unavailable: try again next round
                if outcome.code != 0 and not self._already_known(outcome) and outcome.code not in _TRANSIENT:
                    # Provably rejected now (e.g. its nonce was used by another transaction).
                    log.warning("acknowledged transaction rejected on resubmission", extra={"tx": h.hex(), "code": outcome.code, "log": outcome.log})
                    await asyncio.to_thread(self.index.record_rejection, h, raw, outcome.code, outcome.log)
                    for waiter in self._waiters.pop(h, []):
                        if not waiter.done():
                            waiter.set_result(None)

    @staticmethod
    def _already_known(outcome: TxOutcome) -> bool:
        return outcome.code != 0 and any(text in outcome.log for text in _ALREADY_KNOWN)

    # --- RPCs ------------------------------------------------------------------------------------

    async def _admit(self, raw: bytes) -> tuple[bytes, IndexedTx | None, bool]:
        """Validate and CheckTx one transaction: (hash, its committed record if any, needs an
        acknowledgement). Raises the domain error that rejects it."""
        signer = self._validate_envelope(raw)
        h = tx_hash(raw)
        known, pending = self.index.lookup(h)
        if known is not None or pending:
            return h, known, False
        try:
            outcome = await self.packer.check(raw, signer)
        except EngineUnavailable as err:
            raise DependencyUnavailable(f"ledger engine unavailable: {err}") from err
        if outcome.code == ResultCode.NONCE_GAP and self.index.holds(signer, txpb.SignedTransaction.FromString(raw).nonce - 1):
            # The signature checked out and the gap is our own in-flight predecessor (the node it
            # reached lacks it: lost with another node's mempool): it follows its predecessor.
            return h, None, True
        if outcome.code != 0 and not self._already_known(outcome):
            raise LedgerRejected(
                f"ledger rejected the transaction: {outcome.log}",
                ledger_code=outcome.code,
                metadata={"tx_hash": h.hex(), "stage": "check_tx"},
            )
        return h, None, True

    async def SubmitTransaction(self, request: pb.SubmitTransactionRequest, context) -> pb.SubmitTransactionResponse:
        raw = request.transaction
        h, known, needs_ack = await self._admit(raw)
        if needs_ack:
            await self.index.acknowledge([(h, raw)], int(time.time() * 1000))
        if request.wait_for_commit and known is None:
            known = await self._wait_until_indexed(h, context)
        if known is None:
            return pb.SubmitTransactionResponse(
                result=pb.TransactionResult(tx_hash=h, status=pb.TRANSACTION_STATUS_PENDING, transaction=raw)
            )
        if known.code != 0:
            raise LedgerRejected(
                f"transaction rejected in block {known.height}: {known.log}",
                ledger_code=known.code,
                metadata={"tx_hash": h.hex(), "stage": "block"},
            )
        return pb.SubmitTransactionResponse(result=_result(known))

    async def SubmitTransactions(self, request: pb.SubmitTransactionsRequest, context) -> pb.SubmitTransactionsResponse:
        if not 1 <= len(request.transactions) <= MAX_BATCH:
            raise InvalidArgument(
                f"a batch holds 1 to {MAX_BATCH} transactions",
                field_violations=[FieldViolation("transactions", f"1 to {MAX_BATCH} items")],
            )

        async def admit(raw: bytes) -> pb.TransactionResult | tuple[bytes, bytes]:
            try:
                h, known, needs_ack = await self._admit(raw)
            except LedgerRejected as err:
                if err.ledger_code == ResultCode.NONCE_GAP:
                    return _NonceGap(tx_hash(raw), raw, err)
                return pb.TransactionResult(
                    tx_hash=tx_hash(raw), status=pb.TRANSACTION_STATUS_REJECTED, code=err.ledger_code, log=err.message
                )
            except InvalidArgument as err:
                return pb.TransactionResult(
                    tx_hash=tx_hash(raw), status=pb.TRANSACTION_STATUS_REJECTED, code=ResultCode.MALFORMED, log=err.message
                )
            if known is not None:
                return _result(known)
            if needs_ack:
                return h, raw
            return pb.TransactionResult(tx_hash=h, status=pb.TRANSACTION_STATUS_PENDING)

        # Started in order, so the engine sees them in order (one JSON-RPC batch for CometBFT).
        admitted = await asyncio.gather(*(admit(raw) for raw in request.transactions))
        # A nonce gap that an earlier transaction of this call fills (itself acknowledged, or gap-
        # filled in turn) is no gap: the successor is acknowledged to follow it.
        acknowledged_here: set[tuple[str, int]] = set()
        for i, item in enumerate(admitted):
            if isinstance(item, tuple):
                acknowledged_here.add(_account_nonce(item[1]))
            elif isinstance(item, _NonceGap):
                signer, nonce = _account_nonce(item.raw)
                if (signer, nonce - 1) in acknowledged_here:
                    acknowledged_here.add((signer, nonce))
                    admitted[i] = (item.tx_hash, item.raw)
                else:
                    admitted[i] = pb.TransactionResult(
                        tx_hash=item.tx_hash, status=pb.TRANSACTION_STATUS_REJECTED,
                        code=item.error.ledger_code, log=item.error.message,
                    )
        to_acknowledge = [item for item in admitted if isinstance(item, tuple)]
        if to_acknowledge:
            await self.index.acknowledge(to_acknowledge, int(time.time() * 1000))
        results = [
            pb.TransactionResult(tx_hash=item[0], status=pb.TRANSACTION_STATUS_PENDING) if isinstance(item, tuple) else item
            for item in admitted
        ]
        if request.wait_for_commit:
            waiting = [i for i, r in enumerate(results) if r.status == pb.TRANSACTION_STATUS_PENDING]
            found = await asyncio.gather(*(self._wait_until_indexed(results[i].tx_hash, context) for i in waiting))
            for i, known in zip(waiting, found):
                if known is not None:
                    results[i] = _result(known)
        for result in results:
            result.ClearField("transaction")
        return pb.SubmitTransactionsResponse(results=results)

    def _validate_envelope(self, raw: bytes) -> str:
        """Check what can be checked without state; return the signer."""
        if not raw:
            raise InvalidArgument("transaction is empty", field_violations=[FieldViolation("transaction", "required")])
        if len(raw) > MAX_TX_BYTES:
            raise InvalidArgument(
                f"transaction of {len(raw)} bytes exceeds {MAX_TX_BYTES}",
                field_violations=[FieldViolation("transaction", f"at most {MAX_TX_BYTES} bytes")],
            )
        signed = txpb.SignedTransaction()
        try:
            signed.ParseFromString(raw)
            txpb.TransactionBody.FromString(signed.body)
        except Exception:  # noqa: BLE001
            raise InvalidArgument(
                "transaction is not a serialized shelfproof.ledger.v1.SignedTransaction",
                field_violations=[FieldViolation("transaction", "not a SignedTransaction")],
            ) from None
        violations = [
            FieldViolation(f"transaction.{name}", "required")
            for name, present in (("signer", signed.signer), ("key_id", signed.key_id), ("signature", signed.signature), ("nonce", signed.nonce))
            if not present
        ]
        if violations:
            raise InvalidArgument("transaction envelope is incomplete", field_violations=violations)
        return signed.signer

    async def _wait_until_indexed(self, h: bytes, context) -> IndexedTx | None:
        remaining = context.time_remaining() if context is not None else None
        timeout = 30.0 if remaining is None else max(remaining - 0.05, 0.0)
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(h, []).append(waiter)
        try:
            known = self.index.get(h)
            if known is None:
                try:
                    await asyncio.wait_for(asyncio.shield(waiter), timeout)
                except asyncio.TimeoutError:
                    return None
                known = self.index.get(h)
            return known
        finally:
            # A wait that ends without the commit (deadline, cancelled call) takes its future with it: a
            # transaction that never commits must not keep one per call, up to 1,000 per batch call.
            waiting = self._waiters.get(h)
            if waiting is not None and waiter in waiting:
                waiting.remove(waiter)
                if not waiting:
                    del self._waiters[h]

    async def GetTransaction(self, request: pb.GetTransactionRequest, context) -> pb.GetTransactionResponse:
        if len(request.tx_hash) != 32:
            raise InvalidArgument("tx_hash must be 32 bytes", field_violations=[FieldViolation("tx_hash", "SHA-256 digest")])
        known, pending = self.index.lookup(request.tx_hash)
        if known is not None:
            return pb.GetTransactionResponse(result=_result(known))
        if pending:
            return pb.GetTransactionResponse(result=pb.TransactionResult(tx_hash=request.tx_hash, status=pb.TRANSACTION_STATUS_PENDING))
        raise NotFound(f"transaction {request.tx_hash.hex()} is unknown")

    async def GetBlock(self, request: pb.GetBlockRequest, context) -> pb.GetBlockResponse:
        if request.height < 0:
            raise InvalidArgument("height must be >= 0", field_violations=[FieldViolation("height", ">= 0")])
        height = request.height or await self._latest()
        block = await self._block(height)
        if block is None:
            raise NotFound(f"block {height} is not committed yet")
        return pb.GetBlockResponse(
            height=block.height,
            block_hash=block.block_hash,
            signed_header=block.signed_header.SerializeToString(),
            validator_set=block.validator_set.SerializeToString(),
            # The signed transactions, a batch's inner ones in its place (the header's data_hash
            # is over the engine's transactions, batches included).
            transactions=[inner for raw in block.txs for inner in application_transactions(raw)],
            time=block.signed_header.header.time,
        )

    async def _latest(self) -> int:
        try:
            return await self.engine.latest_height()
        except EngineUnavailable as err:
            raise DependencyUnavailable(f"ledger engine unavailable: {err}") from err

    async def _block(self, height: int):
        try:
            return await self.engine.block(height)
        except EngineUnavailable as err:
            raise DependencyUnavailable(f"ledger engine unavailable: {err}") from err

    async def _answer_height(self, requested: int, prove: bool) -> int:
        """The height a query reads: the one asked for, or the newest one whose proof can be checked
        (a proof for height H checks against header H + 1, so that is latest - 1)."""
        if requested < 0:
            raise InvalidArgument("height must be >= 0", field_violations=[FieldViolation("height", ">= 0")])
        latest = await self._latest()
        if not requested and latest < (2 if prove else 1):
            # A chain that just started: wait for the block that makes a height answerable.
            latest = await self.engine.wait_for_new_block(1 if prove else 0, 5.0)
        height = requested or (latest - 1 if prove else latest)
        if height < 1:
            raise DependencyUnavailable("the ledger has no provable height yet")
        if prove and height + 1 > latest:
            latest = await self.engine.wait_for_new_block(height, 5.0)
            if height + 1 > latest:
                raise DependencyUnavailable(f"header {height + 1} is not committed yet")
        return height

    async def _proving_header(self, height: int) -> tuple[bytes, bytes]:
        """Serialized SignedHeader and ValidatorSet of ``height + 1``, cached: every proof at a height
        shares them."""
        cached = self._headers.get(height)
        if cached is None:
            next_block = await self._block(height + 1)
            if next_block is None:
                raise DependencyUnavailable(f"header {height + 1} is not available")
            cached = (next_block.signed_header.SerializeToString(), next_block.validator_set.SerializeToString())
            self._headers[height] = cached
            while len(self._headers) > 16:
                self._headers.popitem(last=False)
        return cached

    @staticmethod
    def _check_store_key(store: str, key: bytes, prefix: str = "") -> None:
        if store not in STORES:
            raise InvalidArgument(
                f"unknown store {store!r}", field_violations=[FieldViolation(f"{prefix}store", f"one of {', '.join(STORES)}")]
            )
        if not key:
            raise InvalidArgument("key is required", field_violations=[FieldViolation(f"{prefix}key", "required")])

    async def Query(self, request: pb.QueryRequest, context) -> pb.QueryResponse:
        self._check_store_key(request.store, request.key)
        height = await self._answer_height(request.height, request.prove)
        try:
            answer = await self.engine.query(request.store, request.key, height, request.prove)
        except EngineUnavailable as err:
            raise DependencyUnavailable(f"ledger engine unavailable: {err}") from err
        if answer.code != 0:
            raise NotFound(answer.log) if answer.code == ResultCode.NOT_FOUND else InvalidArgument(answer.log)
        response = pb.QueryResponse(found=bool(answer.value), value=answer.value, height=answer.height)
        if request.prove:
            # Found: the value's proof; not found: the key's absence proof. Either needs the next header.
            response.proof_ops.extend(pb.ProofOp(type=op.type, key=op.key, data=op.data) for op in answer.proof_ops.ops)
            response.signed_header, response.validator_set = await self._proving_header(answer.height)
        return response

    async def QueryMany(self, request: pb.QueryManyRequest, context) -> pb.QueryManyResponse:
        if not 1 <= len(request.keys) <= MAX_KEYS_PER_QUERY:
            raise InvalidArgument(
                f"between 1 and {MAX_KEYS_PER_QUERY} keys",
                field_violations=[FieldViolation("keys", f"1 to {MAX_KEYS_PER_QUERY} keys")],
            )
        for n, wanted in enumerate(request.keys):
            self._check_store_key(wanted.store, wanted.key, f"keys[{n}].")
        height = await self._answer_height(request.height, request.prove)
        try:
            answer = await self.engine.query_many(
                pb.QueryManyRequest(keys=request.keys).SerializeToString(), height, request.prove
            )
        except EngineUnavailable as err:
            raise DependencyUnavailable(f"ledger engine unavailable: {err}") from err
        if answer.code != 0:
            raise NotFound(answer.log) if answer.code == ResultCode.NOT_FOUND else InvalidArgument(answer.log)
        response = pb.QueryManyResponse.FromString(answer.value)
        if request.prove:
            response.signed_header, response.validator_set = await self._proving_header(response.height)
        return response

    async def StreamCommittedTransactions(self, request: pb.StreamCommittedTransactionsRequest, context):
        if request.from_height < 0:
            raise InvalidArgument("from_height must be >= 0", field_violations=[FieldViolation("from_height", ">= 0")])
        position = (max(request.from_height, 1), -1)
        while True:
            indexed_height = self._indexed_height
            rows = self.index.committed_after(position[0], position[1], STREAM_BATCH, request.include_rejected)
            for row in rows:
                yield pb.StreamCommittedTransactionsResponse(result=_result(row))
                position = (row.height, row.index)
            if len(rows) < STREAM_BATCH:
                async with self._indexed:
                    try:
                        await asyncio.wait_for(
                            self._indexed.wait_for(lambda: self._indexed_height > indexed_height), 5.0
                        )
                    except asyncio.TimeoutError:
                        pass

    async def GetLedgerStatus(self, request: pb.GetLedgerStatusRequest, context) -> pb.GetLedgerStatusResponse:
        latest = await self._latest()
        block = await self._block(latest) if latest else None
        return pb.GetLedgerStatusResponse(
            chain_id=self.engine.chain_id,
            engine=self.engine.name,
            latest_height=latest,
            latest_app_hash=block.signed_header.header.app_hash if block else b"",
            validators=len(block.validator_set.validators) if block else 0,
            engine_reason=self.engine_reason,
        )

    async def PutContent(self, request: pb.PutContentRequest, context) -> pb.PutContentResponse:
        if not request.content:
            raise InvalidArgument("content is empty", field_violations=[FieldViolation("content", "required")])
        try:
            digest = await asyncio.to_thread(self.content.put, request.content)
        except ContentError as err:
            raise InvalidArgument(str(err), field_violations=[FieldViolation("content", str(err))]) from err
        return pb.PutContentResponse(sha256=digest)

    async def GetContent(self, request: pb.GetContentRequest, context) -> pb.GetContentResponse:
        if len(request.sha256) != 32:
            raise InvalidArgument("sha256 must be 32 bytes", field_violations=[FieldViolation("sha256", "SHA-256 digest")])
        content = await asyncio.to_thread(self.content.get, request.sha256)
        if content is None:
            raise NotFound(f"no content {request.sha256.hex()}")
        return pb.GetContentResponse(content=content)
