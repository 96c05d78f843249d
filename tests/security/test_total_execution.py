"""Finding 3: execution is total. An overflowing integer is refused at the boundary, a handler that
raises becomes an in-band INTERNAL_ERROR with its writes discarded, the ABCI server answers a failed
request and keeps serving, and only a FinalizeBlock for the wrong height stops a node."""

from __future__ import annotations

import asyncio

import pytest
from google.protobuf import timestamp_pb2
from tendermint.abci import types_pb2 as abci

from shelfproof.ledger.core import rules
from shelfproof.ledger.engines.abci_server import MAX_MESSAGE_BYTES, AbciSocketServer
from shelfproof.ledger.core.codes import ResultCode
from shelfproof.ledger.proofs.merkle import uvarint

from tests.security.ledger_nodes import (
    BRAND, OTHER_GTIN, RETAILER, T0, block, check, draft, genesis, node, policy, product, replenishment, signers,
)


def test_overflowing_draft_ttl_is_refused_in_band_and_both_nodes_go_on_alike():
    g = genesis()
    checked, unchecked = node(g), node(g)
    accounts = signers(g)
    brand, retailer, planner = (accounts[f"{o}/admin-{n}"] for o, n in ((BRAND, 0), (RETAILER, 0), (RETAILER, 1)))
    setup = [brand.sign(product()), retailer.sign(replenishment())]
    assert block(checked, setup) == block(unchecked, setup) == [0, 0]
    hostile_policy = retailer.sign(policy(draft_ttl_s=2**63 - 1))
    submit = planner.sign(draft("d-overflow"))
    assert check(checked, hostile_policy) == ResultCode.INVALID_ARGUMENT
    assert check(checked, submit) == ResultCode.FAILED_PRECONDITION  # no policy took effect
    txs = [hostile_policy, submit]
    assert block(checked, txs) == block(unchecked, txs) == [ResultCode.INVALID_ARGUMENT, ResultCode.FAILED_PRECONDITION]
    assert checked.app_hash == unchecked.app_hash
    # Both keep executing: a sane policy under the refused one's unused nonce, then the draft.
    retailer.next_nonce -= 1
    txs = [retailer.sign(policy(draft_ttl_s=3_600)), planner.sign(draft("d-ok"))]
    assert block(checked, txs) == block(unchecked, txs) == [0, 0]
    assert checked.app_hash == unchecked.app_hash


def test_a_handler_raising_is_an_in_band_internal_error_and_the_block_continues(monkeypatch):
    g = genesis()
    first, second = node(g), node(g)
    accounts = signers(g)
    brand, retailer = accounts[f"{BRAND}/admin-0"], accounts[f"{RETAILER}/admin-0"]

    def broken(state, ctx, action):
        state.set("products", b"half-written", b"x")  # a write before the failure, to be discarded
        raise ValueError("a bug a transaction reaches")

    monkeypatch.setitem(rules.HANDLERS, "register_product", broken)
    poisoned = brand.sign(product())
    assert check(first, poisoned) == ResultCode.INTERNAL_ERROR
    txs = [poisoned, retailer.sign(replenishment())]
    assert block(first, txs) == block(second, txs) == [ResultCode.INTERNAL_ERROR, 0]
    assert first.app_hash == second.app_hash
    assert first.state.latest.get("products", b"half-written") is None
    # Its writes, the nonce included, were discarded: the agent's next transaction reuses the nonce.
    monkeypatch.undo()
    brand.next_nonce -= 1
    txs = [brand.sign(product(OTHER_GTIN))]
    assert block(first, txs) == block(second, txs) == [0]
    assert first.app_hash == second.app_hash


def test_finalize_block_asserts_the_next_height():
    app = node(genesis())
    request = lambda height: abci.RequestFinalizeBlock(height=height, time=timestamp_pb2.Timestamp(seconds=T0 + height))  # noqa: E731
    with pytest.raises(RuntimeError, match="next height is 1"):
        app.finalize_block(request(2))
    app.finalize_block(request(1))
    app.finalize_block(request(1))  # the same height again before Commit: CometBFT restarted
    app.commit()
    with pytest.raises(RuntimeError, match="next height is 2"):
        app.finalize_block(request(1))


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, frame: bytes) -> abci.Response:
    writer.write(uvarint(len(frame)) + frame + uvarint(2) + abci.Request(flush=abci.RequestFlush()).SerializeToString())
    await writer.drain()
    answers = await _read_answers(reader, 2)
    assert answers[1].WhichOneof("value") == "flush"
    return answers[0]


async def test_the_abci_server_answers_a_failed_request_with_an_exception_and_keeps_serving():
    server = AbciSocketServer(node(genesis()), "127.0.0.1", 0)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        wrong_height = abci.Request(finalize_block=abci.RequestFinalizeBlock(height=5)).SerializeToString()
        answer = await _exchange(reader, writer, wrong_height)
        assert answer.WhichOneof("value") == "exception" and "next height is 1" in answer.exception.error
        answer = await _exchange(reader, writer, b"\xff\xff\xff")  # not a Request at all
        assert answer.WhichOneof("value") == "exception"
        garbage_tx = abci.Request(check_tx=abci.RequestCheckTx(tx=b"\x0a\x05junk")).SerializeToString()
        answer = await _exchange(reader, writer, garbage_tx)
        assert answer.check_tx.code == ResultCode.MALFORMED
        answer = await _exchange(reader, writer, abci.Request(echo=abci.RequestEcho(message="alive")).SerializeToString())
        assert answer.echo.message == "alive"
        writer.close()
    finally:
        await server.stop()


async def _read_answers(reader: asyncio.StreamReader, count: int) -> list[abci.Response]:
    answers = []
    for _ in range(count):
        shift = length = 0
        while True:
            byte = (await reader.readexactly(1))[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        answers.append(abci.Response.FromString(await reader.readexactly(length)))
    return answers


async def test_frames_cut_anywhere_or_packed_together_are_answered_in_order():
    server = AbciSocketServer(node(genesis()), "127.0.0.1", 0)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        requests = [
            abci.Request(echo=abci.RequestEcho(message="first")),
            abci.Request(check_tx=abci.RequestCheckTx(tx=b"\x0a\x05junk")),
            abci.Request(echo=abci.RequestEcho(message="x" * 300)),  # a two-byte length prefix
            abci.Request(flush=abci.RequestFlush()),
        ]
        stream = b"".join(uvarint(len(f)) + f for f in (r.SerializeToString() for r in requests))
        for i in range(len(stream)):  # one byte per write: every frame and prefix arrives cut
            writer.write(stream[i : i + 1])
            await writer.drain()
            await asyncio.sleep(0)
        first = await _read_answers(reader, 4)
        writer.write(stream * 3)  # twelve frames in one write
        await writer.drain()
        packed = await _read_answers(reader, 12)
        for answers in (first, packed[:4], packed[4:8], packed[8:]):
            assert [a.WhichOneof("value") for a in answers] == ["echo", "check_tx", "echo", "flush"]
            assert answers[0].echo.message == "first" and answers[2].echo.message == "x" * 300
            assert answers[1].check_tx.code == ResultCode.MALFORMED
        writer.close()
    finally:
        await server.stop()


async def test_a_length_past_the_limit_closes_only_that_connection():
    server = AbciSocketServer(node(genesis()), "127.0.0.1", 0)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(uvarint(MAX_MESSAGE_BYTES + 1))
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, nothing answered
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        echo = abci.Request(echo=abci.RequestEcho(message="still here")).SerializeToString()
        assert (await _exchange(reader, writer, echo)).echo.message == "still here"
        writer.close()
    finally:
        await server.stop()
