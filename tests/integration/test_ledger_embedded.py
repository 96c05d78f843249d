"""The ledger adapter over the embedded engine, through a real gRPC server on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from tendermint.types import types_pb2, validator_pb2

from shelfproof.ledger.proofs import light, merkle

from shelfproof.ledger.core import rules
from shelfproof.ledger.adapter.service import LedgerAdapter
from shelfproof.ledger.client import LedgerClient, ledger_error
from shelfproof.ledger.core.codes import ResultCode
from shelfproof.ledger.engines.embedded import EmbeddedEngine
from shelfproof.ledger.genesis import DEMO_BRAND_PREFIX, build_genesis
from shelfproof.ledger.v1 import ledger_pb2 as pb
from shelfproof.ledger.v1 import ledger_pb2_grpc
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.runtime import errors
from shelfproof.runtime.client import insecure_channel
from shelfproof.runtime.server import GrpcServer
from shelfproof.runtime.settings import GrpcServerSettings

CHAIN = "embedded-test"
BRAND = "0614141000005"


class LedgerUnderTest:
    def __init__(self, home: Path, genesis, block_interval_s: float = 0.02) -> None:
        self.home, self.genesis, self.block_interval_s = home, genesis, block_interval_s

    async def __aenter__(self):
        self.engine = EmbeddedEngine(self.home / "engine", CHAIN, self.genesis.state, block_interval_s=self.block_interval_s)
        await self.engine.start()
        self.adapter = LedgerAdapter(self.engine, self.home / "adapter")
        await self.adapter.start()
        self.server = GrpcServer(GrpcServerSettings(port=0, shutdown_grace_s=0.5), [self.adapter.binding()])
        port = await self.server.start()
        self.channel = insecure_channel(f"127.0.0.1:{port}")
        self.stub = ledger_pb2_grpc.LedgerServiceStub(self.channel)
        return self

    async def __aexit__(self, *exc):
        await self.channel.close()
        await self.server.stop()
        await self.adapter.stop()
        await self.engine.close()


@pytest.fixture
def genesis():
    return build_genesis(CHAIN, [(BRAND, "brand", [DEMO_BRAND_PREFIX])], agents_per_org=2)


def _product(gtin: str) -> txpb.TransactionBody:
    return txpb.TransactionBody(register_product=txpb.RegisterProduct(gtin=gtin, name=f"product {gtin}"))


GTINS = ["00614141123452", "00614141123469", "00614141123476", "00614141123483"]


async def test_submit_commit_idempotency_block_proof_and_stream(tmp_path, genesis):
    signer = genesis.accounts[f"{BRAND}/admin-0"].signer(CHAIN)
    async with LedgerUnderTest(tmp_path, genesis) as ledger:
        stub = ledger.stub
        raw = signer.sign(_product(GTINS[0]))
        first = (await stub.SubmitTransaction(pb.SubmitTransactionRequest(transaction=raw, wait_for_commit=True), timeout=10)).result
        assert first.status == pb.TRANSACTION_STATUS_COMMITTED and first.height >= 1 and first.code == 0
        again = (await stub.SubmitTransaction(pb.SubmitTransactionRequest(transaction=raw, wait_for_commit=True), timeout=10)).result
        assert (again.height, again.index, again.tx_hash) == (first.height, first.index, first.tx_hash)
        fetched = (await stub.GetTransaction(pb.GetTransactionRequest(tx_hash=first.tx_hash), timeout=5)).result
        assert fetched.transaction == raw and fetched.status == pb.TRANSACTION_STATUS_COMMITTED

        block = await stub.GetBlock(pb.GetBlockRequest(height=first.height), timeout=5)
        assert raw in block.transactions
        signed_header = types_pb2.SignedHeader.FromString(block.signed_header)
        validator_set = validator_pb2.ValidatorSet.FromString(block.validator_set)
        check = light.verify_commit(CHAIN, signed_header, validator_set)
        assert check.height == first.height and block.block_hash == light.header_hash(signed_header.header)

        answer = await stub.Query(pb.QueryRequest(store="products", key=GTINS[0].encode(), prove=True), timeout=10)
        assert answer.found and answer.height >= first.height
        next_header = types_pb2.SignedHeader.FromString(answer.signed_header)
        assert next_header.header.height == answer.height + 1
        light.verify_query(
            CHAIN, list(answer.proof_ops), merkle.keypath_for("products", GTINS[0].encode()), answer.value,
            next_header, validator_pb2.ValidatorSet.FromString(answer.validator_set),
        )
        with pytest.raises(Exception):
            light.verify_query(
                CHAIN, list(answer.proof_ops), merkle.keypath_for("products", GTINS[0].encode()), answer.value[:-1] + b"!",
                next_header, validator_pb2.ValidatorSet.FromString(answer.validator_set),
            )

        # More transactions, then the stream from height 1 lists them in commit order and resumes.
        for gtin in GTINS[1:]:
            await stub.SubmitTransaction(pb.SubmitTransactionRequest(transaction=signer.sign(_product(gtin)), wait_for_commit=True), timeout=10)
        seen = []
        call = stub.StreamCommittedTransactions(pb.StreamCommittedTransactionsRequest(from_height=1), timeout=10)
        async for item in call:
            seen.append(item.result)
            if len(seen) == len(GTINS):
                call.cancel()
                break
        assert [txpb.TransactionBody.FromString(txpb.SignedTransaction.FromString(r.transaction).body).register_product.gtin for r in seen] == GTINS
        assert [(r.height, r.index) for r in seen] == sorted((r.height, r.index) for r in seen)
        resumed = stub.StreamCommittedTransactions(pb.StreamCommittedTransactionsRequest(from_height=seen[2].height), timeout=10)
        first_resumed = await resumed.read()
        resumed.cancel()
        assert first_resumed.result.height == seen[2].height


async def test_bad_input_and_ledger_rejections_map_to_status_codes(tmp_path, genesis):
    signer = genesis.accounts[f"{BRAND}/admin-0"].signer(CHAIN)
    async with LedgerUnderTest(tmp_path, genesis) as ledger:
        stub = ledger.stub
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SubmitTransaction(pb.SubmitTransactionRequest(transaction=b"\xff\x00junk"), timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert errors.error_from_rpc(caught.value).field_violations[0].field == "transaction"

        forged = txpb.SignedTransaction.FromString(signer.sign(_product(GTINS[0])))
        forged.signature = bytes(64)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SubmitTransaction(pb.SubmitTransactionRequest(transaction=forged.SerializeToString()), timeout=5)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        rejected = errors.error_from_rpc(caught.value)
        assert isinstance(rejected, errors.LedgerRejected) and rejected.ledger_code == ResultCode.BAD_SIGNATURE

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Query(pb.QueryRequest(store="nope", key=b"k"), timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetTransaction(pb.GetTransactionRequest(tx_hash=bytes(32)), timeout=5)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetBlock(pb.GetBlockRequest(height=10_000), timeout=5)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_ledger_internal_error_reaches_the_writer_as_internal(tmp_path, genesis, monkeypatch):
    """A transaction that reaches a bug in the rules is answered INTERNAL_ERROR by the real ledger;
    the one writer maps it to Internal (gRPC INTERNAL), not to a verdict on the request."""

    def broken(state, ctx, action):
        raise ValueError("a bug a transaction reaches")

    monkeypatch.setitem(rules.HANDLERS, "register_product", broken)
    client = LedgerClient(None, genesis.accounts[f"{BRAND}/admin-0"].signer(CHAIN))
    async with LedgerUnderTest(tmp_path, genesis) as ledger:
        client.stub = ledger.stub
        with pytest.raises(errors.LedgerRejected) as caught:
            await client.submit(_product(GTINS[0]), deadline_s=10)
        assert caught.value.ledger_code == ResultCode.INTERNAL_ERROR
        mapped = ledger_error(caught.value)
        assert isinstance(mapped, errors.Internal) and mapped.code == grpc.StatusCode.INTERNAL
        assert "Traceback" not in mapped.message and "a bug" not in mapped.message
        # The rules fixed, the writer goes on (the refused transaction's nonce was not used).
        monkeypatch.undo()
        result = await client.submit(_product(GTINS[0]), deadline_s=10)
        assert result.status == pb.TRANSACTION_STATUS_COMMITTED


async def test_acknowledged_transaction_survives_a_lost_mempool(tmp_path, genesis):
    signer = genesis.accounts[f"{BRAND}/admin-0"].signer(CHAIN)
    raw = signer.sign(_product(GTINS[0]))
    # Blocks every 60 s: the transaction is acknowledged but still in the mempool when we stop.
    async with LedgerUnderTest(tmp_path, genesis, block_interval_s=60) as ledger:
        reply = await ledger.stub.SubmitTransaction(pb.SubmitTransactionRequest(transaction=raw), timeout=5)
        assert reply.result.status == pb.TRANSACTION_STATUS_PENDING
    # The engine restarts with an empty mempool; the adapter resubmits what it acknowledged.
    async with LedgerUnderTest(tmp_path, genesis) as ledger:
        deadline = asyncio.get_running_loop().time() + 15
        while True:
            result = (await ledger.stub.GetTransaction(pb.GetTransactionRequest(tx_hash=reply.result.tx_hash), timeout=5)).result
            if result.status == pb.TRANSACTION_STATUS_COMMITTED:
                break
            assert asyncio.get_running_loop().time() < deadline, "acknowledged transaction never committed"
            await asyncio.sleep(0.2)
        status = await ledger.stub.GetLedgerStatus(pb.GetLedgerStatusRequest(), timeout=5)
        assert status.engine == "embedded" and status.chain_id == CHAIN and status.validators == 1


async def test_a_successor_follows_its_acknowledged_predecessor_that_the_node_lost(tmp_path, genesis):
    """The node lost nonce 1 (a restart emptied its mempool) before nonce 2 reached it: nonce 2 is a
    gap to the node but not to the adapter, which holds nonce 1 and resubmits it first. A gap that no
    held transaction of the same account fills is still refused."""
    signer = genesis.accounts[f"{BRAND}/admin-0"].signer(CHAIN)
    other = genesis.accounts[f"{BRAND}/admin-1"].signer(CHAIN)
    first = signer.sign(_product(GTINS[0]), nonce=1)
    async with LedgerUnderTest(tmp_path, genesis, block_interval_s=60) as ledger:
        reply = await ledger.stub.SubmitTransaction(pb.SubmitTransactionRequest(transaction=first), timeout=5)
        assert reply.result.status == pb.TRANSACTION_STATUS_PENDING
    followers = [signer.sign(_product(GTINS[n]), nonce=n + 1) for n in (1, 2, 3)]
    async with LedgerUnderTest(tmp_path, genesis, block_interval_s=60) as ledger:
        stub = ledger.stub
        # (the resubmitter waits RESUBMIT_AFTER_S: the node has not seen nonce 1 again yet)
        second = (await stub.SubmitTransaction(pb.SubmitTransactionRequest(transaction=followers[0]), timeout=5)).result
        assert second.status == pb.TRANSACTION_STATUS_PENDING
        # Abuse: a gap below which nothing is held, and another account's gap, stay refused.
        for raw in (signer.sign(_product(GTINS[0]), nonce=9), other.sign(_product(GTINS[1]), nonce=2)):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.SubmitTransaction(pb.SubmitTransactionRequest(transaction=raw), timeout=5)
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert errors.error_from_rpc(refused.value).ledger_code == ResultCode.NONCE_GAP
        # Abuse: a forgery claiming the held transaction's next nonce is refused for its signature, not held.
        forged = txpb.SignedTransaction.FromString(signer.sign(_product(GTINS[2]), nonce=3))
        forged.signature = bytes(64)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SubmitTransaction(pb.SubmitTransactionRequest(transaction=forged.SerializeToString()), timeout=5)
        assert errors.error_from_rpc(refused.value).ledger_code == ResultCode.BAD_SIGNATURE
        assert not ledger.adapter.index.holds(signer.agent_id, 3)
        # In one call: nonce 3 follows the held 2, nonce 4 follows 3 of the same call.
        replies = await stub.SubmitTransactions(pb.SubmitTransactionsRequest(transactions=followers[1:]), timeout=5)
        assert [r.status for r in replies.results] == [pb.TRANSACTION_STATUS_PENDING] * 2
        gapped = await stub.SubmitTransactions(
            pb.SubmitTransactionsRequest(transactions=[other.sign(_product(GTINS[2]), nonce=3)]), timeout=5
        )
        assert gapped.results[0].status == pb.TRANSACTION_STATUS_REJECTED and gapped.results[0].code == ResultCode.NONCE_GAP
    # Blocks again: every acknowledged transaction commits, in nonce order.
    async with LedgerUnderTest(tmp_path, genesis) as ledger:
        committed = [
            (await ledger.stub.SubmitTransaction(pb.SubmitTransactionRequest(transaction=raw, wait_for_commit=True), timeout=30)).result
            for raw in [first, *followers]
        ]
        assert all(r.status == pb.TRANSACTION_STATUS_COMMITTED and r.code == 0 for r in committed)
        positions = [(r.height, r.index) for r in committed]
        assert positions == sorted(positions)


async def test_content_store_round_trip_and_validation(tmp_path, genesis):
    async with LedgerUnderTest(tmp_path, genesis) as ledger:
        serials = "\n".join(f"S{i:012d}" for i in range(10_000)).encode()
        digest = (await ledger.stub.PutContent(pb.PutContentRequest(content=serials), timeout=10)).sha256
        assert digest == __import__("hashlib").sha256(serials).digest()
        again = (await ledger.stub.PutContent(pb.PutContentRequest(content=serials), timeout=10)).sha256
        assert again == digest
        assert (await ledger.stub.GetContent(pb.GetContentRequest(sha256=digest), timeout=10)).content == serials
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ledger.stub.GetContent(pb.GetContentRequest(sha256=bytes(32)), timeout=5)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ledger.stub.GetContent(pb.GetContentRequest(sha256=b"short"), timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # A corrupted file is refused rather than served.
        stored = next(p for p in (tmp_path / "adapter" / "content").rglob("*") if p.is_file())
        stored.write_bytes(b"tampered")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ledger.stub.GetContent(pb.GetContentRequest(sha256=digest), timeout=5)
        assert caught.value.code() == grpc.StatusCode.INTERNAL


def _event(n: int) -> txpb.TransactionBody:
    return txpb.TransactionBody(
        created_unix_ms=1,
        record_event=txpb.RecordEvent(
            event_hash=f"ni:///sha-256;{n:064x}?ver=CBV2.0", event_type="ObjectEvent", biz_step="shipping",
            disposition="in_transit", epcs=[f"https://id.gs1.org/01/00614141123452/21/S{n}"],
        ),
    )


async def test_batched_submissions_are_answered_indexed_and_streamed_per_transaction(tmp_path, genesis):
    """Two accounts' transactions submitted at once travel in a few batches; one with a nonce gap
    is refused alone; each other one commits once, at its own (height, index), on the stream once."""
    accounts = [genesis.accounts[f"{BRAND}/admin-{n}"].signer(CHAIN) for n in range(2)]
    raws = [accounts[n % 2].sign(_event(n)) for n in range(120)]
    gap = accounts[0].sign(_event(999), nonce=1_000)
    raws.insert(61, gap)
    async with LedgerUnderTest(tmp_path, genesis) as ledger:
        stub = ledger.stub
        # One call after the other: two concurrent calls may reach the adapter in either order, and the
        # second call's transactions would then skip nonces (NONCE_GAP), as they should.
        replies = [
            await stub.SubmitTransactions(pb.SubmitTransactionsRequest(transactions=raws[:61]), timeout=20),
            await stub.SubmitTransactions(pb.SubmitTransactionsRequest(transactions=raws[61:]), timeout=20),
        ]
        results = [r for reply in replies for r in reply.results]
        assert [r.status for r in results] == [pb.TRANSACTION_STATUS_PENDING] * 61 + [pb.TRANSACTION_STATUS_REJECTED] + [
            pb.TRANSACTION_STATUS_PENDING] * 59
        assert results[61].code == ResultCode.NONCE_GAP
        assert ledger.adapter.packer.batches_sent <= 30, "not batched"
        good = [raw for raw in raws if raw != gap]
        committed = []
        for raw in good:
            committed.append((await stub.SubmitTransaction(
                pb.SubmitTransactionRequest(transaction=raw, wait_for_commit=True), timeout=20)).result)
        assert all(r.status == pb.TRANSACTION_STATUS_COMMITTED for r in committed)
        positions = [(r.height, r.index) for r in committed]
        assert len(set(positions)) == len(good)
        # Per account, commit order is nonce order.
        for account in accounts:
            mine = [(r.height, r.index) for r, raw in zip(committed, good) if txpb.SignedTransaction.FromString(raw).signer == account.agent_id]
            assert mine == sorted(mine)
        # GetBlock lists the signed transactions themselves, a batch's in its place.
        heights = sorted({r.height for r in committed})
        listed = [tx for h in heights for tx in (await stub.GetBlock(pb.GetBlockRequest(height=h), timeout=5)).transactions]
        assert sorted(listed) == sorted(good)
        # The stream: each once, in (height, index) order.
        seen = []
        call = stub.StreamCommittedTransactions(pb.StreamCommittedTransactionsRequest(from_height=1), timeout=10)
        async for item in call:
            seen.append(item.result)
            if len(seen) == len(good):
                call.cancel()
                break
        assert sorted(r.transaction for r in seen) == sorted(good)
        assert [(r.height, r.index) for r in seen] == sorted(positions)
        # The gap was never acknowledged, so never resubmitted: unknown to the adapter.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetTransaction(pb.GetTransactionRequest(tx_hash=__import__("hashlib").sha256(gap).digest()), timeout=5)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_client_cannot_submit_a_batch_envelope(tmp_path, genesis):
    from shelfproof.ledger.core.tx import encode_batch

    signer = genesis.accounts[f"{BRAND}/admin-0"].signer(CHAIN)
    async with LedgerUnderTest(tmp_path, genesis) as ledger:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ledger.stub.SubmitTransaction(
                pb.SubmitTransactionRequest(transaction=encode_batch([signer.sign(_product(GTINS[0]))])), timeout=5
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_batch_can_wait_for_its_commits_in_the_call_that_submits_it(tmp_path, genesis):
    """``wait_for_commit`` on SubmitTransactions: every acknowledged transaction is answered COMMITTED
    with its own height and index, a refused one keeps height 0 (refused before any block), no result
    echoes the transaction's bytes, and submitting the same batch again answers the same commits."""
    account = genesis.accounts[f"{BRAND}/admin-0"].signer(CHAIN)
    raws = [account.sign(_event(n)) for n in range(40)]
    gap = account.sign(_event(999), nonce=1_000)
    async with LedgerUnderTest(tmp_path, genesis) as ledger:
        request = pb.SubmitTransactionsRequest(transactions=[*raws, gap], wait_for_commit=True)
        reply = await ledger.stub.SubmitTransactions(request, timeout=30)
        committed, refused = reply.results[:40], reply.results[40]
        assert all(r.status == pb.TRANSACTION_STATUS_COMMITTED and r.code == 0 and r.height > 0 for r in committed)
        assert [(r.height, r.index) for r in committed] == sorted((r.height, r.index) for r in committed)
        assert refused.status == pb.TRANSACTION_STATUS_REJECTED and refused.code == ResultCode.NONCE_GAP and refused.height == 0
        assert not any(r.transaction for r in reply.results)
        again = await ledger.stub.SubmitTransactions(pb.SubmitTransactionsRequest(transactions=raws, wait_for_commit=True), timeout=30)
        assert [(r.height, r.index, r.status) for r in again.results] == [(r.height, r.index, r.status) for r in committed]
        client = LedgerClient(ledger.stub, account)
        outcomes = await client.submit_many([_event(n) for n in range(100, 110)])
        assert all(not isinstance(o, Exception) and o.status == pb.TRANSACTION_STATUS_COMMITTED for o in outcomes)


async def test_a_batch_wait_that_runs_out_leaves_no_waiter_behind(tmp_path, genesis):
    """A member who asks to wait for transactions that never commit (deadline first) must not leave a
    future per transaction in the adapter: up to 1,000 per call, as often as it likes."""
    account = genesis.accounts[f"{BRAND}/admin-0"].signer(CHAIN)
    async with LedgerUnderTest(tmp_path, genesis, block_interval_s=60.0) as ledger:  # no block comes in time
        raws = [account.sign(_event(n)) for n in range(50)]
        reply = await ledger.stub.SubmitTransactions(pb.SubmitTransactionsRequest(transactions=raws, wait_for_commit=True), timeout=1.0)
        assert [r.status for r in reply.results] == [pb.TRANSACTION_STATUS_PENDING] * 50
        assert ledger.adapter._waiters == {}
