"""Batch envelopes: the one parser, the per-inner reading of a block's results, and the adapter's
packer (flush by count, size or time; re-pack after a partial refusal) over a scripted engine and
over the real embedded engine."""

from __future__ import annotations

import asyncio

import pytest

from shelfproof.ledger.adapter.batching import BatchPacker, BatchSettings
from shelfproof.ledger.core.app import application_results
from shelfproof.ledger.core.codes import ResultCode, TxRejected
from shelfproof.ledger.core.tx import (
    BATCH_TAG, MAX_BATCH_TXS, application_transactions, batch_size, encode_batch, is_batch, parse, parse_batch, tx_hash,
)
from shelfproof.ledger.engines.embedded import EmbeddedEngine
from shelfproof.ledger.engines.engine import EngineUnavailable, TxOutcome
from shelfproof.ledger.genesis import DEMO_BRAND_PREFIX, build_genesis
from shelfproof.ledger.v1 import transaction_pb2 as txpb

CHAIN = "batch-unit"
BRAND = "0614141000005"


@pytest.fixture(scope="module")
def accounts():
    g = build_genesis(CHAIN, [(BRAND, "brand", [DEMO_BRAND_PREFIX])], agents_per_org=3)
    return g, [a.signer(CHAIN) for a in g.accounts.values()]


def _event(n: int) -> txpb.TransactionBody:
    return txpb.TransactionBody(
        created_unix_ms=1,
        record_event=txpb.RecordEvent(
            event_hash=f"ni:///sha-256;{n:064x}?ver=CBV2.0", event_type="ObjectEvent", biz_step="shipping",
            disposition="in_transit", epcs=[f"https://id.gs1.org/01/00614141123452/21/S{n}"],
        ),
    )


def test_a_batch_is_told_apart_by_its_first_byte_and_parses_back(accounts):
    _, signers = accounts
    inner = [signers[0].sign(_event(1)), signers[1].sign(_event(2))]
    raw = encode_batch(inner)
    assert raw[:1] == BATCH_TAG and is_batch(raw) and not is_batch(inner[0])
    assert inner[0][:1] == b"\x0a"
    parsed = parse_batch(raw)
    assert parsed.transactions == tuple(inner) and parsed.hash == tx_hash(raw)
    assert application_transactions(raw) == tuple(inner)
    assert application_transactions(inner[0]) == (inner[0],)
    assert application_transactions(b"\x7a\xff") == ()
    assert batch_size(sum(map(len, inner)), 2) >= len(raw)


def test_parse_refuses_a_batch_where_a_signed_transaction_is_expected(accounts):
    _, signers = accounts
    with pytest.raises(TxRejected) as refused:
        parse(encode_batch([signers[0].sign(_event(1))]))
    assert refused.value.code == ResultCode.MALFORMED and "nest" in refused.value.log


@pytest.mark.parametrize("count", [0, MAX_BATCH_TXS + 1])
def test_a_batch_holds_between_one_and_the_maximum(accounts, count):
    _, signers = accounts
    raw = signers[0].sign(_event(1))
    with pytest.raises(TxRejected) as refused:
        parse_batch(encode_batch([raw] * count))
    assert refused.value.code == ResultCode.MALFORMED
    parse_batch(encode_batch([raw] * max(1, min(count, MAX_BATCH_TXS))))


def test_application_results_reads_a_block_per_signed_transaction(accounts):
    _, signers = accounts
    single, a, b = (signers[n].sign(_event(n)) for n in range(3))
    batch = encode_batch([a, b])
    verdicts = txpb.BatchResult(results=[txpb.InnerResult(tx_hash=tx_hash(a), code=0), txpb.InnerResult(tx_hash=tx_hash(b), code=8)])
    rows = application_results(batch, 0, '["", "nonce gap"]', verdicts.SerializeToString())
    assert rows == [(tx_hash(a), 0, "", a), (tx_hash(b), 8, "nonce gap", b)]
    assert application_results(single, 6, "bad", b"") == [(tx_hash(single), 6, "bad", single)]
    # A batch refused whole executed nothing.
    assert application_results(b"\x7a\x00", ResultCode.MALFORMED, "x", b"") == []


class ScriptedEngine:
    """Records the batches it is sent; refuses the inner transactions named in ``refuse``."""

    name, chain_id = "scripted", CHAIN

    def __init__(self, lanes: int = 2, refuse: set[bytes] = frozenset(), unavailable: bool = False) -> None:
        self.lanes, self.refuse, self.unavailable = lanes, set(refuse), unavailable
        self.sent: list[tuple[int, tuple[bytes, ...]]] = []

    def lane_of(self, signer: str) -> int:
        return sum(signer.encode()) % self.lanes

    async def broadcast(self, raw: bytes, lane: int | None = None) -> TxOutcome:
        if self.unavailable:
            raise EngineUnavailable("down")
        inner = parse_batch(raw).transactions
        self.sent.append((lane, inner))
        results = [txpb.InnerResult(tx_hash=tx_hash(t), code=ResultCode.NONCE_GAP if t in self.refuse else 0) for t in inner]
        code = ResultCode.NONCE_GAP if any(r.code for r in results) else 0
        return TxOutcome(code, "", txpb.BatchResult(results=results).SerializeToString())


async def _packed(engine, settings, raws_and_signers):
    packer = BatchPacker(engine, settings)
    packer.start()
    try:
        return await asyncio.gather(*(packer.check(raw, signer) for raw, signer in raws_and_signers)), packer
    finally:
        await packer.stop()


async def test_the_packer_flushes_by_count_and_keeps_each_signer_on_its_lane_in_order(accounts):
    _, signers = accounts
    # 8 per signer: whichever lanes the 3 signers take, each lane gets a multiple of 4.
    raws = [(signers[n % 3].sign(_event(n)), signers[n % 3].agent_id) for n in range(24)]
    engine = ScriptedEngine(lanes=2)
    started = asyncio.get_running_loop().time()
    outcomes, packer = await _packed(engine, BatchSettings(max_txs=4, linger_s=10.0), raws)
    assert all(o.code == 0 for o in outcomes)
    # Linger 10 s, yet all answered at once: every batch went full, by count.
    assert asyncio.get_running_loop().time() - started < 5
    assert [len(inner) for _, inner in engine.sent] == [4] * 6
    by_lane: dict[int, list[bytes]] = {}
    for lane, inner in engine.sent:
        by_lane.setdefault(lane, []).extend(inner)
    for raw, signer in raws:
        assert raw in by_lane[engine.lane_of(signer)]
    for lane, sent in by_lane.items():
        assert sent == [raw for raw, signer in raws if engine.lane_of(signer) == lane]  # arrival order


async def test_the_packer_flushes_by_size_and_by_time(accounts):
    _, signers = accounts
    raws = [(signers[0].sign(_event(n)), signers[0].agent_id) for n in range(6)]
    engine = ScriptedEngine(lanes=1)
    one = len(raws[0][0])
    await _packed(engine, BatchSettings(max_txs=100, max_bytes=2 * one + 8, linger_s=10.0), raws)
    assert [len(inner) for _, inner in engine.sent] == [2, 2, 2]
    engine = ScriptedEngine(lanes=1)
    started = asyncio.get_running_loop().time()
    await _packed(engine, BatchSettings(max_txs=100, linger_s=0.05), raws[:3])
    assert [len(inner) for _, inner in engine.sent] == [3]
    assert asyncio.get_running_loop().time() - started >= 0.045


async def test_the_packer_re_packs_what_passed_and_answers_the_refused_alone(accounts):
    _, signers = accounts
    raws = [(signers[0].sign(_event(n)), signers[0].agent_id) for n in range(5)]
    engine = ScriptedEngine(lanes=1, refuse={raws[2][0]})
    outcomes, _ = await _packed(engine, BatchSettings(max_txs=5, linger_s=1.0), raws)
    assert [o.code for o in outcomes] == [0, 0, ResultCode.NONCE_GAP, 0, 0]
    assert [inner for _, inner in engine.sent] == [
        tuple(r for r, _ in raws), tuple(r for n, (r, _) in enumerate(raws) if n != 2),
    ]


async def test_the_same_transaction_twice_shares_one_verdict_and_one_slot(accounts):
    _, signers = accounts
    raw = signers[0].sign(_event(1))
    engine = ScriptedEngine(lanes=1)
    outcomes, _ = await _packed(engine, BatchSettings(linger_s=0.01), [(raw, signers[0].agent_id)] * 3)
    assert [o.code for o in outcomes] == [0, 0, 0]
    assert [inner for _, inner in engine.sent] == [(raw,)]


async def test_an_unavailable_engine_fails_the_callers_and_the_lane_lives_on(accounts):
    _, signers = accounts
    engine = ScriptedEngine(lanes=1, unavailable=True)
    packer = BatchPacker(engine, BatchSettings(linger_s=0.0))
    packer.start()
    try:
        with pytest.raises(EngineUnavailable):
            await packer.check(signers[0].sign(_event(1)), signers[0].agent_id)
        engine.unavailable = False
        assert (await packer.check(signers[0].sign(_event(2)), signers[0].agent_id)).code == 0
    finally:
        await packer.stop()


def test_batch_settings_stay_within_the_envelope_bounds():
    with pytest.raises(ValueError):
        BatchSettings(max_txs=MAX_BATCH_TXS + 1)
    with pytest.raises(ValueError):
        BatchSettings(max_bytes=10**9)


async def test_the_packer_over_the_real_embedded_engine_commits_each_inner_transaction(tmp_path, accounts):
    """The real thing beside the scripted one: batches through CheckTx, blocks and the results."""
    g, _ = accounts
    signers = [a.signer(CHAIN) for a in g.accounts.values()]  # fresh nonces: the others' never committed
    engine = EmbeddedEngine(tmp_path / "engine", CHAIN, g.state, block_interval_s=0.02)
    await engine.start()
    try:
        raws = [(signers[n % 3].sign(_event(100 + n)), signers[n % 3].agent_id) for n in range(60)]
        bad = signers[0].sign(_event(999), nonce=500)  # a nonce gap in the middle
        raws.insert(30, (bad, signers[0].agent_id))
        outcomes, packer = await _packed(engine, BatchSettings(max_txs=16, linger_s=0.02), raws)
        assert [o.code for o in outcomes] == [0] * 30 + [ResultCode.NONCE_GAP] + [0] * 30
        assert packer.batches_sent < len(raws) // 4
        committed: dict[bytes, int] = {}
        deadline = asyncio.get_running_loop().time() + 20
        while len(committed) < 60 and asyncio.get_running_loop().time() < deadline:
            await engine.wait_for_new_block(await engine.latest_height(), 1.0)
            committed = {}
            for height in range(1, await engine.latest_height() + 1):
                block = await engine.block(height)
                for raw, outcome in zip(block.txs, block.results, strict=True):
                    for h, code, _, _ in application_results(raw, outcome.code, outcome.log, outcome.data):
                        assert code == 0
                        committed[h] = committed.get(h, 0) + 1
        assert committed == {tx_hash(raw): 1 for raw, _ in raws if raw != bad}
    finally:
        await engine.close()
