"""Batched envelopes under attack: every trick a member or a proposer can play with a batch gets a
per-inner answer (or, for a bad envelope, the whole batch refused before any execution), the
neighbours of a bad inner transaction execute, and every node reaches the same app hash."""

from __future__ import annotations

import os

import pytest
from google.protobuf import timestamp_pb2
from nacl.signing import VerifyKey
from tendermint.abci import types_pb2 as abci

from shelfproof.ledger.core import rules
from shelfproof.ledger.core.app import application_results
from shelfproof.ledger.core.codes import ResultCode
from shelfproof.ledger.core.tx import MAX_BATCH_BYTES, MAX_BATCH_TXS, MAX_TX_BYTES, encode_batch
from shelfproof.ledger.v1 import transaction_pb2 as txpb

from tests.security.ledger_nodes import (
    BRAND, OTHER_GTIN, RETAILER, T0, body, genesis, node, product, relayer_copies, replenishment, signers,
)

ACCEPT, REJECT = abci.ResponseProcessProposal.ACCEPT, abci.ResponseProcessProposal.REJECT
OK = ResultCode.OK


def _finalize(app, txs: list[bytes]) -> abci.ResponseFinalizeBlock:
    height = app.height + 1
    response = app.finalize_block(
        abci.RequestFinalizeBlock(txs=txs, height=height, time=timestamp_pb2.Timestamp(seconds=T0 + height))
    )
    assert len(response.tx_results) == len(txs)
    app.commit()
    assert app.app_hash == response.app_hash
    return response


def _inner_codes(response: abci.ResponseFinalizeBlock, txs: list[bytes]) -> list[int]:
    """Per signed transaction, as the adapter reads the block."""
    return [
        code
        for raw, result in zip(txs, response.tx_results, strict=True)
        for _, code, _, _ in application_results(raw, result.code, result.log, result.data)
    ]


def _check(app, raw: bytes, recheck: bool = False) -> abci.ResponseCheckTx:
    return app.check_tx(abci.RequestCheckTx(tx=raw, type=abci.RECHECK if recheck else abci.NEW))


def _verdicts(response: abci.ResponseCheckTx) -> list[tuple[int, bool]]:
    return [(r.code, r.already_known) for r in txpb.BatchResult.FromString(response.data).results]


def _same_everywhere(g, blocks: list[list[bytes]], checked_first: bool = True) -> list[list[int]]:
    """Run the blocks on a node that saw every batch in CheckTx first and on a fresh one: the same
    per-inner codes, the same results (data hashed into the next header) and app hashes."""
    seen, fresh = node(g), node(g)
    codes = []
    for txs in blocks:
        if checked_first:
            for raw in txs:
                _check(seen, raw)
        a, b = _finalize(seen, txs), _finalize(fresh, txs)
        assert [r.SerializeToString() for r in a.tx_results] == [r.SerializeToString() for r in b.tx_results]
        assert seen.app_hash == fresh.app_hash
        codes.append(_inner_codes(a, txs))
    return codes


def test_a_duplicated_inner_transaction_executes_once_and_its_neighbours_execute():
    g = genesis()
    brand, retailer = signers(g)[f"{BRAND}/admin-0"], signers(g)[f"{RETAILER}/admin-0"]
    a, b = brand.sign(product()), retailer.sign(replenishment())
    batch = encode_batch([a, a, b])
    assert _same_everywhere(g, [[batch]]) == [[OK, ResultCode.NONCE_REPLAYED, OK]]
    # CheckTx does not let the copy into the mempool: the second one is "already known".
    app = node(g)
    answer = _check(app, batch)
    assert answer.code != 0 and _verdicts(answer) == [(OK, False), (ResultCode.NONCE_REPLAYED, True), (OK, False)]


def test_an_inner_transaction_replayed_from_another_batch_is_refused_in_band():
    g = genesis()
    brand, retailer = signers(g)[f"{BRAND}/admin-0"], signers(g)[f"{RETAILER}/admin-0"]
    a, b, c = brand.sign(product()), retailer.sign(replenishment()), brand.sign(product(OTHER_GTIN))
    first, replay = encode_batch([a, b]), encode_batch([c, a])
    assert _same_everywhere(g, [[first], [replay]]) == [[OK, OK], [OK, ResultCode.NONCE_REPLAYED]]
    # A node that committed `a` answers it "already known" in CheckTx (a resubmission, not a
    # rejection), and does not admit the replaying batch; `c` alone passes.
    app = node(g)
    _finalize(app, [first])
    answer = _check(app, replay)
    assert answer.code != 0 and _verdicts(answer) == [(OK, False), (ResultCode.NONCE_REPLAYED, True)]
    assert _check(app, encode_batch([c])).code == 0


def test_a_batch_mixing_signers_with_nonce_gaps_answers_each_on_its_own():
    g = genesis()
    accounts = signers(g)
    brand, retailer, other = accounts[f"{BRAND}/admin-0"], accounts[f"{RETAILER}/admin-0"], accounts[f"{BRAND}/admin-1"]
    inner = [
        brand.sign(product()),                      # nonce 1
        retailer.sign(replenishment(), nonce=3),    # gap: the retailer's next is 1
        brand.sign(product(OTHER_GTIN)),            # nonce 2 of the brand, after its 1 in this batch
        other.sign(product("00614141123476")),
        retailer.sign(replenishment(), nonce=1),    # now in order
    ]
    batch = encode_batch(inner)
    expected = [OK, ResultCode.NONCE_GAP, OK, OK, OK]
    assert _same_everywhere(g, [[batch]], checked_first=False) == [expected]
    app = node(g)
    answer = _check(app, batch)
    assert answer.code == ResultCode.NONCE_GAP
    assert [code for code, _ in _verdicts(answer)] == expected
    # Refused as a whole, nothing of it entered the check state: the rest, re-packed, passes.
    assert _check(app, encode_batch([raw for raw, code in zip(inner, expected) if code == OK])).code == 0


def test_an_oversize_or_overfull_batch_is_refused_before_any_execution():
    g = genesis()
    brand = signers(g)[f"{BRAND}/admin-0"]
    good = brand.sign(product())
    padding = signers(g)[f"{RETAILER}/admin-0"].sign(body(register_product=txpb.RegisterProduct(gtin=OTHER_GTIN, name="x" * 4000)))
    oversize = encode_batch([good] + [padding] * (MAX_BATCH_BYTES // len(padding) + 1))
    overfull = encode_batch([good] * (MAX_BATCH_TXS + 1))
    empty = b""  # zero transactions would be an empty batch: not even a batch
    for batch, code in ((oversize, ResultCode.TX_TOO_LARGE), (overfull, ResultCode.MALFORMED)):
        app = node(g)
        assert _check(app, batch).code == code
        assert app.process_proposal(abci.RequestProcessProposal(txs=[batch], height=1)).status == REJECT
        prepared = app.prepare_proposal(abci.RequestPrepareProposal(txs=[batch, good], max_tx_bytes=4 * MAX_BATCH_BYTES, height=1))
        assert list(prepared.txs) == [good]
        # Replayed without ProcessProposal, it is still refused whole, in-band: `good` inside it never ran.
        response = _finalize(app, [batch])
        assert response.tx_results[0].code == code and _inner_codes(response, [batch]) == []
        assert _check(app, good).code == 0
    assert node(g).process_proposal(abci.RequestProcessProposal(txs=[empty], height=1)).status == REJECT


def test_an_oversize_inner_transaction_is_refused_alone():
    g = genesis()
    brand, retailer = signers(g)[f"{BRAND}/admin-0"], signers(g)[f"{RETAILER}/admin-0"]
    huge = b"\x0a" * (MAX_TX_BYTES + 1)
    batch = encode_batch([brand.sign(product()), huge, retailer.sign(replenishment())])
    assert node(g).process_proposal(abci.RequestProcessProposal(txs=[batch], height=1)).status == ACCEPT
    assert _same_everywhere(g, [[batch]]) == [[OK, ResultCode.TX_TOO_LARGE, OK]]


def test_a_nested_batch_is_a_malformed_inner_transaction():
    g = genesis()
    brand, retailer = signers(g)[f"{BRAND}/admin-0"], signers(g)[f"{RETAILER}/admin-0"]
    nested = encode_batch([brand.sign(product())])
    batch = encode_batch([nested, retailer.sign(replenishment())])
    assert _same_everywhere(g, [[batch]]) == [[ResultCode.MALFORMED, OK]]
    # The transaction inside the nested batch never ran: the brand's nonce 1 is still free.
    app = node(g)
    _finalize(app, [batch])
    brand.next_nonce = 1
    assert _check(app, brand.sign(product())).code == 0


@pytest.mark.parametrize("kind", ["garbage", "unknown field", "non-minimal nonce varint", "reordered fields", "bad signature"])
def test_malformed_inner_bytes_are_refused_alone(kind):
    g = genesis()
    brand, retailer = signers(g)[f"{BRAND}/admin-0"], signers(g)[f"{RETAILER}/admin-0"]
    victim = brand.sign(product())
    if kind == "garbage":
        bad, code = b"\xff\x00garbage", ResultCode.MALFORMED
    elif kind == "bad signature":
        forged = txpb.SignedTransaction.FromString(victim)
        forged.signature = bytes(64)
        bad, code = forged.SerializeToString(), ResultCode.BAD_SIGNATURE
    else:
        bad, code = relayer_copies(victim)[kind], ResultCode.MALFORMED
    batch = encode_batch([bad, victim, retailer.sign(replenishment())])
    assert _same_everywhere(g, [[batch]]) == [[code, OK, OK]]


@pytest.mark.parametrize("kind", ["unknown field", "non-minimal length", "reordered", "not a batch"])
def test_a_re_encoded_batch_envelope_is_refused_by_every_validator(kind):
    """A relayer (or proposer) re-encoding a batch under a new hash gets nothing executed."""
    g = genesis()
    inner = [signers(g)[f"{BRAND}/admin-0"].sign(product()), signers(g)[f"{RETAILER}/admin-0"].sign(replenishment())]
    fields = [encode_batch([raw]) for raw in inner]
    batch = b"".join(fields)
    assert batch == encode_batch(inner)
    copies = {
        "unknown field": batch + b"\x08\x01",
        "non-minimal length": b"\x7a" + bytes([(len(inner[0]) & 0x7F) | 0x80, (len(inner[0]) >> 7) | 0x80, 0x00]) + inner[0] + fields[1],
        "reordered": fields[1] + fields[0][:0] + b"\x0a\x00" + fields[0],
        "not a batch": b"\x7a\xff\xff\xff\xff\x0f",
    }
    app = node(g)
    assert app.process_proposal(abci.RequestProcessProposal(txs=[copies[kind]], height=1)).status == REJECT
    assert _check(app, copies[kind]).code == ResultCode.MALFORMED


def test_a_proposer_stuffing_invalid_batches_gets_the_block_refused_or_answered_in_band_alike():
    """Four validators: two saw the batches in CheckTx, two did not. A block with a bad envelope is
    refused by all; a block of well-formed batches full of forgeries and replays is executed alike."""
    g = genesis()
    accounts = signers(g)
    brand, retailer = accounts[f"{BRAND}/admin-0"], accounts[f"{RETAILER}/admin-0"]
    honest = [brand.sign(product()), retailer.sign(replenishment())]
    forged = []
    for n in range(40):
        tx = txpb.SignedTransaction.FromString(accounts[f"{BRAND}/admin-1"].sign(product(), nonce=n + 1))
        tx.signature = os.urandom(64)
        forged.append(tx.SerializeToString())
    stuffed = [encode_batch(forged[:20] + honest[:1]), encode_batch(forged[20:] + [honest[0], honest[1], b"\x7a\x00"])]
    nodes = [node(g) for _ in range(4)]
    for app in nodes[:2]:
        for raw in stuffed:
            _check(app, raw)
    bad_envelope = stuffed + [encode_batch(honest) + b"\x00"]
    assert {app.process_proposal(abci.RequestProcessProposal(txs=bad_envelope, height=1)).status for app in nodes} == {REJECT}
    assert {app.process_proposal(abci.RequestProcessProposal(txs=stuffed, height=1)).status for app in nodes} == {ACCEPT}
    responses = [_finalize(app, stuffed) for app in nodes]
    assert len({app.app_hash for app in nodes}) == 1
    assert len({tuple(r.SerializeToString() for r in response.tx_results) for response in responses}) == 1
    codes = _inner_codes(responses[0], stuffed)
    assert codes == [ResultCode.BAD_SIGNATURE] * 20 + [OK] + [ResultCode.BAD_SIGNATURE] * 20 + [
        ResultCode.NONCE_REPLAYED, OK, ResultCode.MALFORMED,
    ]


def test_nothing_raises_out_of_a_block_of_hostile_batches(monkeypatch):
    g = genesis()
    brand, retailer = signers(g)[f"{BRAND}/admin-0"], signers(g)[f"{RETAILER}/admin-0"]

    def broken(state, ctx, action):
        state.set("products", b"half-written", b"x")
        raise ValueError("a bug a transaction reaches")

    monkeypatch.setitem(rules.HANDLERS, "register_product", broken)
    rng = __import__("random").Random(17)
    hostile = [b"\x7a" + rng.randbytes(rng.randrange(0, 300)) for _ in range(50)]
    poisoned = encode_batch([brand.sign(product()), retailer.sign(replenishment())])
    a, b = node(g), node(g)
    for app in (a, b):
        assert _check(app, poisoned).code == ResultCode.INTERNAL_ERROR
        for raw in hostile:
            _check(app, raw)
    txs = hostile + [poisoned]
    ra, rb = _finalize(a, txs), _finalize(b, txs)
    assert a.app_hash == b.app_hash
    assert [r.SerializeToString() for r in ra.tx_results] == [r.SerializeToString() for r in rb.tx_results]
    assert _inner_codes(ra, txs)[-2:] == [ResultCode.INTERNAL_ERROR, OK]
    assert a.state.latest.get("products", b"half-written") is None


def test_each_inner_signature_is_verified_once_per_node(monkeypatch):
    """CheckTx verifies; FinalizeBlock of the same batch on that node reuses the verdict through the
    cache keyed on (key, document, signature); a node that never saw CheckTx verifies in the block."""
    g = genesis()
    accounts = signers(g)
    inner = [accounts[f"{o}/admin-{n}"].sign(product(gtin) if o == BRAND else replenishment())
             for o, n, gtin in ((BRAND, 0, "00614141123452"), (BRAND, 1, OTHER_GTIN), (RETAILER, 0, ""))]
    batch = encode_batch(inner)
    calls = []
    real_verify = VerifyKey.verify
    monkeypatch.setattr(VerifyKey, "verify", lambda self, *a, **k: (calls.append(1), real_verify(self, *a, **k))[1])
    seen, fresh = node(g), node(g)
    assert _check(seen, batch).code == 0
    assert len(calls) == 3
    _finalize(seen, [batch])
    assert len(calls) == 3  # no second verification on the node that checked it
    _finalize(fresh, [batch])
    assert len(calls) == 6  # the other node verifies each one itself
    assert seen.app_hash == fresh.app_hash


def test_recheck_keeps_a_batch_while_an_inner_transaction_still_passes():
    g = genesis()
    brand, retailer = signers(g)[f"{BRAND}/admin-0"], signers(g)[f"{RETAILER}/admin-0"]
    a, b = brand.sign(product()), retailer.sign(replenishment())
    app = node(g)
    batch = encode_batch([a, b])
    assert _check(app, batch).code == 0
    _finalize(app, [encode_batch([a])])  # `a` committed through another batch
    assert _check(app, batch, recheck=True).code == 0
    assert _check(app, encode_batch([b])).code != 0  # `b` is in the check state again: already known
    response = _finalize(app, [batch])
    assert _inner_codes(response, [batch]) == [ResultCode.NONCE_REPLAYED, OK]
    # A batch none of whose inner transactions is still valid leaves the mempool.
    assert _check(app, batch, recheck=True).code == ResultCode.NONCE_REPLAYED
    # The same verdicts without the admitted batch's plan (e.g. after a restart): parsed again.
    other = node(g)
    _finalize(other, [encode_batch([a])])
    assert _check(other, batch, recheck=True).code == 0
    assert _check(node(g), encode_batch([a, a]), recheck=True).code == 0


def test_recheck_from_the_plan_agrees_with_parsing_again():
    """Randomised: batches admitted by one node (RECHECK reads their plan) and rechecked by one that
    never saw them (RECHECK parses), after a block that consumed some of their nonces in another
    order: the same verdicts and the same check state."""
    import random

    g = genesis(agents_per_org=3)
    retailers = [s for name, s in signers(g).items() if name.startswith(f"{RETAILER}/admin-")]
    rng = random.Random(5)
    for _ in range(5):
        planned, parsing = node(g), node(g)
        for s in retailers:
            s.next_nonce = 1
        txs = [s.sign(replenishment(rng.randrange(1, 600))) for _ in range(4) for s in retailers]
        batches = [encode_batch(txs[i:i + 3]) for i in range(0, len(txs), 3)]
        assert all(_check(planned, raw).code == 0 for raw in batches)
        for s in retailers:  # the same nonces again, other bodies: conflicting transactions
            s.next_nonce = 1
        rivals = [s.sign(replenishment(rng.randrange(600, 700))) for s in retailers for _ in range(rng.randrange(0, 3))]
        block_txs = [encode_batch(rivals)] if rivals else []
        _finalize(planned, block_txs)
        _finalize(parsing, block_txs)
        assert [_check(planned, raw, recheck=True).code for raw in batches] == [
            _check(parsing, raw, recheck=True).code for raw in batches
        ]
        for s in retailers:
            key = s.agent_id.encode()
            assert planned._check_state.get("agents", key) == parsing._check_state.get("agents", key)
