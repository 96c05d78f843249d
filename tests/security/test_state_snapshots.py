"""State sync's snapshot chunks are hostile input: a wrong, truncated, forged or garbage chunk is refused
with an ABCI result (never an exception), and a restored state is accepted only if it hashes to the app
hash the light client trusts. Two real applications on real state files, in-process."""

from __future__ import annotations

import hashlib

import pytest
from google.protobuf import json_format, timestamp_pb2
from tendermint.abci import types_pb2 as abci

from shelfproof.ledger.core.app import LedgerApplication
from shelfproof.ledger.core.state import encode_snapshot_chunks, snapshot_metadata
from shelfproof.ledger.engines.abci_server import AbciSocketServer
from shelfproof.ledger.genesis import build_genesis
from shelfproof.ledger.proofs import merkle
from shelfproof.ledger.storage import StateDB

CHAIN = "snapshot-test"
OFFER = abci.ResponseOfferSnapshot.Result
APPLY = abci.ResponseApplySnapshotChunk.Result
T0 = 1_780_000_000


def _block(app: LedgerApplication) -> bytes:
    height = app.height + 1
    response = app.finalize_block(abci.RequestFinalizeBlock(height=height, time=timestamp_pb2.Timestamp(seconds=T0 + height)))
    app.commit()
    return response.app_hash


@pytest.fixture
def source(tmp_path):
    genesis = build_genesis(CHAIN, [("0614141000005", "brand", ["0614141"]), ("4012345000009", "retailer", ["4012345"])], agents_per_org=3)
    db = StateDB(tmp_path / "source" / "state.db")
    db.snapshot_chunk_bytes = 512  # several chunks from a small state
    app = LedgerApplication(db, snapshot_interval=2)
    app.init_chain(abci.RequestInitChain(chain_id=CHAIN, app_state_bytes=json_format.MessageToJson(genesis.state).encode()))
    for _ in range(4):
        _block(app)
        db.wait_for_snapshot(30)  # (a snapshot asked while the previous one is being written is skipped)
    return app


def _snapshot(app: LedgerApplication) -> tuple[abci.Snapshot, list[bytes]]:
    snapshot = app.list_snapshots(abci.RequestListSnapshots()).snapshots[0]
    chunks = [
        app.load_snapshot_chunk(abci.RequestLoadSnapshotChunk(height=snapshot.height, format=snapshot.format, chunk=i)).chunk
        for i in range(snapshot.chunks)
    ]
    return snapshot, chunks


def _trusted_app_hash(app: LedgerApplication, height: int) -> bytes:
    return app.state.versions[height].app_hash


def _restore(target: LedgerApplication, snapshot, chunks, app_hash: bytes) -> list[int]:
    assert target.offer_snapshot(abci.RequestOfferSnapshot(snapshot=snapshot, app_hash=app_hash)).result == OFFER.ACCEPT
    return [
        target.apply_snapshot_chunk(abci.RequestApplySnapshotChunk(index=i, chunk=c, sender="peer-a")).result
        for i, c in enumerate(chunks)
    ]


def test_a_new_node_restores_a_snapshot_to_the_same_app_hash_and_goes_on(source, tmp_path):
    snapshot, chunks = _snapshot(source)
    assert snapshot.height == 4 and snapshot.chunks == len(chunks) > 2
    assert [s.height for s in source.list_snapshots(abci.RequestListSnapshots()).snapshots] == [4, 2]
    target = LedgerApplication(StateDB(tmp_path / "target" / "state.db"))
    assert _restore(target, snapshot, chunks, _trusted_app_hash(source, 4)) == [APPLY.ACCEPT] * len(chunks)
    info = target.info(abci.RequestInfo())
    assert (info.last_block_height, info.last_block_app_hash) == (4, _trusted_app_hash(source, 4))
    assert target.chain_id == CHAIN and target.state.dump() == source.state.dump()
    # The next block, on both: the same app hash; and the restored node proves its state.
    assert _block(target) == _block(source)
    answer = target.query(abci.RequestQuery(path="/store/orgs/key", data=b"0614141000005", prove=True))
    merkle.verify_value_proof(list(answer.proof_ops.ops), target.app_hash, merkle.keypath_for("orgs", b"0614141000005"), answer.value)
    # After a restart too.
    reopened = LedgerApplication(StateDB(tmp_path / "target" / "state.db"))
    assert (reopened.height, reopened.app_hash) == (5, source.app_hash)


def test_a_wrong_or_truncated_chunk_is_refetched_from_another_peer_never_applied(source, tmp_path):
    snapshot, chunks = _snapshot(source)
    target = LedgerApplication(StateDB(tmp_path / "target" / "state.db"))
    assert target.offer_snapshot(abci.RequestOfferSnapshot(snapshot=snapshot, app_hash=_trusted_app_hash(source, 4))).result == OFFER.ACCEPT
    flipped = bytearray(chunks[1])
    flipped[10] ^= 1
    assert target.apply_snapshot_chunk(abci.RequestApplySnapshotChunk(index=0, chunk=chunks[0], sender="a")).result == APPLY.ACCEPT
    for bad in (bytes(flipped), chunks[1][:-7], b"", chunks[2]):
        answer = target.apply_snapshot_chunk(abci.RequestApplySnapshotChunk(index=1, chunk=bad, sender="liar"))
        assert (answer.result, list(answer.refetch_chunks), list(answer.reject_senders)) == (APPLY.RETRY, [1], ["liar"])
    for i, chunk in enumerate(chunks[1:], 1):
        assert target.apply_snapshot_chunk(abci.RequestApplySnapshotChunk(index=i, chunk=chunk, sender="b")).result == APPLY.ACCEPT
    assert target.app_hash == _trusted_app_hash(source, 4)


def test_a_snapshot_that_does_not_hash_to_the_trusted_app_hash_is_refused_and_leaves_no_state(source, tmp_path):
    snapshot, chunks = _snapshot(source)
    target = LedgerApplication(StateDB(tmp_path / "target" / "state.db"))
    # An honest snapshot under another app hash than the trusted one (a snapshot of another chain or height).
    results = _restore(target, snapshot, chunks, hashlib.sha256(b"another state").digest())
    assert results[-1] == APPLY.REJECT_SNAPSHOT and target.height == 0 and target.state.dump() == LedgerApplication().state.dump()
    # A forged snapshot: one value changed, chunk hashes and metadata rebuilt to match the forgery.
    items = [item for chunk in chunks for item in _records(chunk)]
    store, key, value = items[3]
    items[3] = (store, key, value + b"\x00")
    forged_chunks = list(encode_snapshot_chunks(items, 512))
    forged = _snapshot_of(snapshot.height, forged_chunks)
    assert _restore(target, forged, forged_chunks, _trusted_app_hash(source, 4))[-1] == APPLY.REJECT_SNAPSHOT
    # One record left out, and one record added.
    for variant in (items[:3] + items[4:], items + [("orgs", b"9999999999999", b"forged member")]):
        variant_chunks = list(encode_snapshot_chunks(variant, 512))
        results = _restore(target, _snapshot_of(snapshot.height, variant_chunks), variant_chunks, _trusted_app_hash(source, 4))
        assert results[-1] == APPLY.REJECT_SNAPSHOT and target.height == 0
    # The honest one still restores afterwards.
    assert _restore(target, snapshot, chunks, _trusted_app_hash(source, 4))[-1] == APPLY.ACCEPT
    assert target.app_hash == _trusted_app_hash(source, 4)


def _records(chunk: bytes):
    from shelfproof.ledger.core.state import decode_snapshot_chunk

    return decode_snapshot_chunk(chunk)


def _snapshot_of(height: int, chunks: list[bytes]) -> abci.Snapshot:
    metadata = snapshot_metadata(CHAIN, T0, [hashlib.sha256(c).digest() for c in chunks])
    return abci.Snapshot(height=height, format=1, chunks=len(chunks), hash=hashlib.sha256(metadata).digest(), metadata=metadata)


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # an overlong length
        b"\x05items\x04key",  # truncated record
        b"\x05items\x03key\x80\x80\x80\x80\x10",  # a value length of 4 GiB
        b"\x07unknown\x03key\x05value",  # a store that does not exist
        b"\x05items\x00\x05value",  # an empty key
        b"\x05it\xffms\x03key\x05value",  # a store name that is not ASCII
    ],
)
def test_garbage_in_a_chunk_that_matches_its_hash_rejects_the_snapshot_without_a_crash(source, tmp_path, garbage):
    target = LedgerApplication(StateDB(tmp_path / "target" / "state.db"))
    results = _restore(target, _snapshot_of(4, [garbage]), [garbage], _trusted_app_hash(source, 4))
    assert results == [APPLY.REJECT_SNAPSHOT] and target.height == 0


def test_malformed_offers_and_out_of_turn_chunks_get_an_abci_result(source, tmp_path):
    snapshot, chunks = _snapshot(source)
    trusted = _trusted_app_hash(source, 4)
    target = LedgerApplication(StateDB(tmp_path / "target" / "state.db"))

    def offer(**changes) -> int:
        s = abci.Snapshot()
        s.CopyFrom(snapshot)
        app_hash = changes.pop("app_hash", trusted)
        for name, value in changes.items():
            setattr(s, name, value)
        return target.offer_snapshot(abci.RequestOfferSnapshot(snapshot=s, app_hash=app_hash)).result

    assert offer(format=2) == OFFER.REJECT_FORMAT
    assert offer(hash=b"\x00" * 32) == OFFER.REJECT
    assert offer(chunks=0) == OFFER.REJECT
    assert offer(chunks=10**9) == OFFER.REJECT
    assert offer(chunks=snapshot.chunks + 1) == OFFER.REJECT  # metadata names a different number of chunks
    truncated = snapshot.metadata[:-5]
    assert offer(metadata=truncated, hash=hashlib.sha256(truncated).digest()) == OFFER.REJECT
    assert offer(height=0) == OFFER.REJECT
    assert offer(app_hash=b"short") == OFFER.REJECT
    # A chunk with nothing offered, or out of turn.
    fresh = LedgerApplication(StateDB(tmp_path / "fresh" / "state.db"))
    assert fresh.apply_snapshot_chunk(abci.RequestApplySnapshotChunk(index=0, chunk=chunks[0])).result == APPLY.ABORT
    assert offer() == OFFER.ACCEPT
    assert target.apply_snapshot_chunk(abci.RequestApplySnapshotChunk(index=2, chunk=chunks[2])).result == APPLY.RETRY_SNAPSHOT
    # A node that already has state takes no snapshot.
    assert source.offer_snapshot(abci.RequestOfferSnapshot(snapshot=snapshot, app_hash=trusted)).result == OFFER.ABORT
    # Unknown heights, chunks and formats load nothing.
    for height, fmt, index in ((3, 1, 0), (4, 2, 0), (4, 1, 999), (4, 1, -1)):
        assert source.load_snapshot_chunk(abci.RequestLoadSnapshotChunk(height=height, format=fmt, chunk=max(index, 0) if index >= 0 else 2**31)).chunk == b""


def test_the_socket_server_dispatches_the_four_snapshot_methods(source, tmp_path):
    server = AbciSocketServer(source, "127.0.0.1", 0)
    listed = server._answer(abci.Request(list_snapshots=abci.RequestListSnapshots())).list_snapshots.snapshots
    assert [s.height for s in listed] == [4, 2]
    chunk = server._answer(abci.Request(load_snapshot_chunk=abci.RequestLoadSnapshotChunk(height=4, format=1, chunk=0)))
    assert chunk.load_snapshot_chunk.chunk
    target = AbciSocketServer(LedgerApplication(StateDB(tmp_path / "t" / "state.db")), "127.0.0.1", 0)
    offered = target._answer(abci.Request(offer_snapshot=abci.RequestOfferSnapshot(snapshot=listed[0], app_hash=_trusted_app_hash(source, 4))))
    assert offered.offer_snapshot.result == OFFER.ACCEPT
    applied = target._answer(abci.Request(apply_snapshot_chunk=abci.RequestApplySnapshotChunk(index=0, chunk=b"junk", sender="x")))
    assert applied.apply_snapshot_chunk.result == APPLY.RETRY
