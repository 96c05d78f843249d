"""The on-disk state: versions, proofs at retained heights, pruning, restart, and the same roots from
the SQLite store and the in-memory one (which unit tests use)."""

from __future__ import annotations

import hashlib

import pytest

from shelfproof.ledger.core.state import STORES, LedgerState, MemoryStateStore, Overlay
from shelfproof.ledger.proofs import merkle
from shelfproof.ledger.storage import StateDB


def _block(state: LedgerState, writes: dict[tuple[str, bytes], bytes | None]) -> None:
    overlay = Overlay(state.latest)
    for (store, key), value in writes.items():
        overlay.changes.setdefault(store, {})[key] = value
    state.commit(state.next_version(state.latest.height + 1, overlay), overlay)


def _history(state: LedgerState) -> list[bytes]:
    """Six blocks: inserts into two stores, updates, one deletion; the app hash after each."""
    hashes = []
    _block(state, {("items", f"i{i}".encode()): f"v{i}".encode() for i in range(200)} | {("orgs", b"o1"): b"brand"})
    hashes.append(state.latest.app_hash)
    for h in range(2, 7):
        writes = {("items", f"i{(h * 37 + j) % 200}".encode()): f"h{h}-{j}".encode() for j in range(20)}
        writes[("items", f"new{h}".encode())] = b"fresh"
        if h == 4:
            writes[("items", b"i3")] = None
        _block(state, writes)
        hashes.append(state.latest.app_hash)
    return hashes


def _model(state: LedgerState) -> bytes:
    """The app hash of the latest state recomputed from plain mappings (merkle's layout helper)."""
    return merkle.store_root_and_proofs({n: state.dump()[n] for n in STORES}, "items", b"i1")[0]


@pytest.fixture(params=["sqlite", "memory"])
def store(request, tmp_path):
    return StateDB(tmp_path / "state.db") if request.param == "sqlite" else MemoryStateStore()


def test_both_stores_give_the_same_roots_and_the_layout_model_agrees(tmp_path):
    hashes = [_history(LedgerState(db, retain=3)) for db in (StateDB(tmp_path / "a.db"), MemoryStateStore())]
    assert hashes[0] == hashes[1] and len(set(hashes[0])) == 6
    state = LedgerState(StateDB(tmp_path / "b.db"))
    _history(state)
    assert _model(state) == state.latest.app_hash


def test_proofs_answer_at_every_retained_height_and_old_ones_are_pruned(store):
    state = LedgerState(store, retain=3)
    _history(state)
    assert sorted(state.versions) == [4, 5, 6]
    for height in (4, 5, 6):
        version = state.versions[height]
        for key in (b"i1", b"i3", b"new5", b"absent"):
            value = version.get("items", key)
            ops = version.proof_ops("items", key, value is not None)
            merkle.verify_store_proof(ops, version.app_hash, merkle.keypath_for("items", key), value)
    # i3 deleted at height 4, new5 written at 5: as of 4 one is gone and the other not there yet.
    assert state.versions[4].get("items", b"i3") is None and state.versions[4].get("items", b"new5") is None
    assert state.versions[5].get("items", b"new5") == b"fresh"
    # Rows superseded before the oldest retained height are gone from disk.
    if isinstance(store, StateDB):
        (superseded,) = store.conn.execute("SELECT COUNT(*) FROM kv WHERE until IS NOT NULL AND until <= 4").fetchone()
        assert superseded == 0
        (live,) = store.conn.execute("SELECT COUNT(*) FROM kv WHERE until IS NULL AND value IS NOT NULL").fetchone()
        assert live == len(state.dump()["items"]) + 1


def test_a_restart_reloads_the_same_app_hash_and_serves_proofs(tmp_path):
    state = LedgerState(StateDB(tmp_path / "state.db"))
    _history(state)
    reopened = LedgerState(StateDB(tmp_path / "state.db"))
    assert (reopened.latest.height, reopened.latest.app_hash) == (6, state.latest.app_hash)
    ops = reopened.latest.proof_ops("items", b"i9", True)
    merkle.verify_value_proof(ops, reopened.latest.app_hash, merkle.keypath_for("items", b"i9"), reopened.latest.get("items", b"i9"))
    # And the next block reaches the same hash from the reopened state as from the running one.
    writes = {("items", b"i9"): b"again", ("orgs", b"o2"): b"retailer"}
    _block(state, writes)
    _block(reopened, writes)
    assert reopened.latest.app_hash == state.latest.app_hash


def test_a_tampered_state_file_is_refused_at_open(tmp_path):
    state = LedgerState(StateDB(tmp_path / "state.db"))
    _history(state)
    db = StateDB(tmp_path / "state.db")
    store, bucket = db.conn.execute("SELECT store, bucket FROM buckets LIMIT 1").fetchone()
    db.conn.execute("UPDATE buckets SET root = ? WHERE store = ? AND bucket = ?", (hashlib.sha256(b"x").digest(), store, bucket))
    with pytest.raises(RuntimeError, match="corrupt"):
        LedgerState(db)


def test_memory_is_bounded_by_the_bucket_count_not_the_state():
    state = LedgerState(MemoryStateStore())
    for block in range(3):
        _block(state, {("items", f"k{block}-{i}".encode()): b"v" for i in range(3000)})
    nodes = len(state.trees["items"])
    # At most every node of the perfect tree; far fewer here (9,000 keys in 2^18 buckets).
    assert nodes <= 2 * merkle.BUCKETS
    assert nodes <= 9000 * (merkle.BUCKET_BITS + 1)
    assert all(not tree for name, tree in state.trees.items() if name != "items")
    assert len(state.undo) <= state.retain


def test_a_pre_bucket_state_file_is_refused_with_a_clear_error(tmp_path):
    import sqlite3

    conn = sqlite3.connect(tmp_path / "old.db")
    conn.execute("CREATE TABLE kv (store TEXT, key BLOB, value BLOB, PRIMARY KEY (store, key)) WITHOUT ROWID")
    conn.close()
    with pytest.raises(RuntimeError, match="pre-bucket layout"):
        StateDB(tmp_path / "old.db")
