"""The ledger's state: named key-value stores, Merkle-committed, versioned by height, kept on disk.

Layout (merkle.py's docstring; what CometBFT's light client verifies): a key lives in the bucket that
SHA-256 of the key picks among its store's ``BUCKETS``; a bucket is a sorted RFC 6962 tree over its
pairs, a store the perfect tree over its bucket leaves, the app hash the tree over the stores. A
presence proof is three ``simple:v`` ops (key, bucket, store); an absence proof the missing key's
neighbours in its bucket (``shelfproof:absent``) and the same two ops above it.

Cost bound to the change: a block reads and rehashes only the buckets its keys fall in (about
keys / BUCKETS pairs each) and one path of ``BUCKET_BITS`` hashes per bucket. Memory bounded
independently of state size: values live in the ``StateStore`` (SQLite, ``ledger.storage``); what is
held here is each store's bucket tree (its non-empty nodes, at most 2 · BUCKETS per store), the
newest ``retain`` versions' undo logs (the nodes each block replaced, for proofs at those heights), and
a bounded cache of latest values. Versions older than ``retain`` are pruned from the store.

Execution writes to an ``Overlay``; ``LedgerState.next_version`` turns a block's overlay into a pending
``AppVersion`` (its app hash computed, nothing written) and ``commit`` persists it in one store
transaction (values, bucket roots, height, app hash, pruning), then applies its tree nodes here.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Callable, Iterable, Iterator, Mapping, Protocol

from shelfproof.ledger.proofs.merkle import (
    BUCKETS,
    EMPTY_STORE_ROOT,
    MerkleTree,
    Proof,
    absence_op,
    bucket_leaf,
    bucket_of,
    bucket_path,
    bucket_tree_changes,
    empty_node,
    kv_leaf_hash,
    uvarint,
    value_op,
)
from shelfproof.ledger.v1.ledger_pb2 import ProofOp

STORES: tuple[str, ...] = tuple(
    sorted(
        (
            "agents",
            "batches",
            "budgets",
            "consortium",
            "drafts",
            "events",
            "items",
            "keys",
            "locations",
            "orders",
            "orgs",
            "policies",
            "price_log",
            "price_schedule",
            "prices",
            "products",
            "promotions",
            "recalls",
            "replenishment",
            "roles",
            "scans",
            "status",
            # clones: derived alerts, declared markets, per-lot compromise windows
            "alerts",
            "markets",
            "lot_compromises",
        )
    )
)
STORE_INDEX = {name: i for i, name in enumerate(STORES)}

# Heights whose state stays provable (the newest provable height is latest - 1): older versions are
# pruned from disk and their undo logs dropped. A node setting (SHELFPROOF_ABCI_RETAIN_VERSIONS).
RETAINED_VERSIONS = 8
# Latest values cached in memory (execution reads the same agents, keys and roles again and again).
VALUE_CACHE_SIZE = 100_000

# (store, key, value or None for a deletion, its kv leaf hash or None)


class StateStore(Protocol):
    """Where committed state persists (``shelfproof.ledger.storage.StateDB``, a SQLite file, or
    ``MemoryStateStore`` below): versioned rows, so reads name a height (None: the latest), with rows
    superseded at or before ``prune_through`` dropped at save. A change is (store, bucket, key, value or
    None for a deletion, leaf hash, whether the key has a current value it supersedes). The core only
    calls it."""

    def load_meta(self) -> dict[str, bytes]: ...

    def get(self, store: str, bucket: int, key: bytes, height: int | None) -> bytes | None: ...

    def bucket_entries(self, store: str, bucket: int, height: int | None) -> list[tuple[bytes, bytes]]:
        """(key, leaf hash) of the bucket's pairs at ``height``, sorted by key."""
        ...

    def latest_bucket_entries(self, store: str, buckets: Iterable[int]) -> dict[int, list[tuple[bytes, bytes]]]:
        """``bucket_entries(store, b, None)`` for every bucket b (empty ones may be left out)."""
        ...

    def bucket_roots(self) -> Iterable[tuple[str, int, bytes]]:
        """(store, bucket, root) of every non-empty bucket of the latest state."""
        ...

    def save(
        self,
        height: int,
        changes: Iterable[tuple[str, int, bytes, bytes | None, bytes | None, bool]],
        bucket_roots: Iterable[tuple[str, int, bytes]],
        meta: Mapping[str, bytes],
        prune_through: int,
    ) -> None: ...

    def live_items(self) -> Iterator[tuple[str, bytes, bytes]]:
        """(store, key, value) of the latest state in (store, key) order."""
        ...

    def replace_all(
        self,
        height: int,
        items: Iterable[tuple[str, bytes, bytes]],
        meta: Mapping[str, bytes],
        accept: Callable[[list[tuple[str, int, bytes]]], bool],
    ) -> bool:
        """Snapshot restore, all or nothing: hold exactly ``items`` as the state at ``height`` if
        ``accept`` approves the bucket roots they give, else keep what was there; True if replaced."""
        ...


    def take_snapshot(self, height: int, chain_id: str, last_block_time: int, keep: int) -> None:
        """Write a snapshot of the state just committed at ``height`` (``encode_snapshot_chunks``; maybe
        in the background), keeping the newest ``keep``."""
        ...

    def list_snapshots(self) -> list[tuple[int, int, bytes]]:
        """(height, chunks, metadata) of every finished snapshot, newest first."""
        ...

    def load_snapshot_chunk(self, height: int, index: int) -> bytes | None: ...


class MemoryStateStore:
    """The StateStore in dicts, for unit tests and tools; ``ledger.storage.StateDB`` is the real one
    (tests/unit/test_state_store.py runs both through the same checks)."""

    def __init__(self) -> None:
        # (store, bucket) -> key -> [(height, value or None, leaf or None, superseded at or None)]
        self.rows: dict[tuple[str, int], dict[bytes, list[list]]] = {}
        self.roots: dict[tuple[str, int], bytes] = {}
        self.meta: dict[str, bytes] = {}
        self.snapshots: dict[int, tuple[list[bytes], bytes]] = {}

    def load_meta(self) -> dict[str, bytes]:
        return dict(self.meta)

    @staticmethod
    def _alive(row: list, height: int | None) -> bool:
        if height is None:
            return row[3] is None
        return row[0] <= height and (row[3] is None or row[3] > height)

    def get(self, store: str, bucket: int, key: bytes, height: int | None) -> bytes | None:
        for row in self.rows.get((store, bucket), {}).get(key, ()):
            if self._alive(row, height):
                return row[1]
        return None

    def bucket_entries(self, store: str, bucket: int, height: int | None) -> list[tuple[bytes, bytes]]:
        out = []
        for key, rows in self.rows.get((store, bucket), {}).items():
            for row in rows:
                if self._alive(row, height) and row[1] is not None:
                    out.append((key, row[2]))
        out.sort()
        return out

    def latest_bucket_entries(self, store: str, buckets: Iterable[int]) -> dict[int, list[tuple[bytes, bytes]]]:
        return {b: self.bucket_entries(store, b, None) for b in buckets}

    def bucket_roots(self) -> Iterable[tuple[str, int, bytes]]:
        return [(s, b, r) for (s, b), r in self.roots.items()]

    def save(self, height, changes, bucket_roots, meta, prune_through) -> None:
        for store, bucket, key, value, leaf, _ in changes:
            rows = self.rows.setdefault((store, bucket), {}).setdefault(key, [])
            for row in rows:
                if row[3] is None:
                    row[3] = height
            rows.append([height, value, leaf, None])
        for store, bucket, root in bucket_roots:
            self.roots[(store, bucket)] = root
        self.roots = {k: r for k, r in self.roots.items() if r != _EMPTY_BUCKET_ROOT}
        self.meta.update(meta)
        for keys in self.rows.values():
            for key in list(keys):
                kept = [
                    r for r in keys[key]
                    if not (r[3] is not None and r[3] <= prune_through) and not (r[1] is None and r[3] is None and r[0] <= prune_through)
                ]
                if kept:
                    keys[key] = kept
                else:
                    del keys[key]

    def live_items(self) -> Iterator[tuple[str, bytes, bytes]]:
        items = [
            (store, key, row[1])
            for (store, _), keys in self.rows.items()
            for key, rows in keys.items()
            for row in rows
            if row[3] is None and row[1] is not None
        ]
        return iter(sorted(items))

    def replace_all(self, height, items, meta, accept) -> bool:
        before = (self.rows, self.roots, self.meta)
        self.rows, self.roots, self.meta = {}, {}, {}
        changes = [(s, bucket_of(k), k, v, kv_leaf_hash(k, v), False) for s, k, v in items]
        self.save(height, changes, [], {}, 0)
        for store, bucket in self.rows:
            entries = self.bucket_entries(store, bucket, None)
            self.roots[(store, bucket)] = MerkleTree.from_leaf_hashes([leaf for _, leaf in entries]).root
        if not accept(sorted((s, b, r) for (s, b), r in self.roots.items())):
            self.rows, self.roots, self.meta = before
            return False
        self.meta = dict(meta)
        return True


    def take_snapshot(self, height, chain_id, last_block_time, keep) -> None:
        chunks = list(encode_snapshot_chunks(self.live_items()))
        metadata = snapshot_metadata(chain_id, last_block_time, [hashlib.sha256(c).digest() for c in chunks])
        self.snapshots = dict(sorted(self.snapshots.items())[-(keep - 1) :]) if keep > 1 else {}
        self.snapshots[height] = (chunks, metadata)

    def list_snapshots(self) -> list[tuple[int, int, bytes]]:
        return [(h, len(c), m) for h, (c, m) in sorted(self.snapshots.items(), reverse=True)]

    def load_snapshot_chunk(self, height, index) -> bytes | None:
        chunks = self.snapshots.get(height, ([], b""))[0]
        return chunks[index] if 0 <= index < len(chunks) else None


_EMPTY_BUCKET_ROOT = MerkleTree.from_leaf_hashes([]).root


class AppVersion:
    """The whole state after a height, with its app hash (which header height + 1 carries).

    A pending version (FinalizeBlock's, or InitChain's until the first Commit) carries its unsaved
    writes and tree nodes; a committed one reads values from the store as of its height and tree nodes
    through the undo logs of the blocks after it."""

    __slots__ = ("height", "state", "store_roots", "root_tree", "pending", "pending_nodes", "pending_roots", "pending_existing")

    def __init__(
        self,
        height: int,
        state: "LedgerState",
        store_roots: dict[str, bytes],
        pending: dict[str, dict[bytes, bytes | None]] | None = None,
        pending_nodes: dict[str, dict[int, bytes]] | None = None,
        pending_roots: dict[str, dict[int, bytes]] | None = None,
        pending_existing: set[tuple[str, bytes]] | None = None,
    ) -> None:
        self.height = height
        self.state = state
        self.store_roots = store_roots
        self.root_tree = MerkleTree.from_leaf_hashes([kv_leaf_hash(n.encode(), store_roots[n]) for n in STORES])
        self.pending = pending
        self.pending_nodes = pending_nodes
        self.pending_roots = pending_roots
        # Changed keys that have a committed value (their current row is superseded at commit).
        self.pending_existing = pending_existing

    @property
    def app_hash(self) -> bytes:
        return self.root_tree.root

    def _as_of(self) -> int | None:
        return None if self.height >= self.state.committed_height else self.height

    def get(self, store: str, key: bytes) -> bytes | None:
        if self.pending is not None:
            changed = self.pending.get(store)
            if changed is not None and key in changed:
                return changed[key]
            return self.state.get_latest(store, key)
        as_of = self._as_of()
        if as_of is None:
            return self.state.get_latest(store, key)
        return self.state.db.get(store, bucket_of(key), key, as_of)

    def node(self, store: str, node: int) -> bytes:
        if self.pending_nodes is not None:
            changed = self.pending_nodes.get(store)
            if changed is not None and node in changed:
                return changed[node]
            return self.state.node_at(store, node, None)
        return self.state.node_at(store, node, self._as_of())

    def bucket_entries(self, store: str, bucket: int) -> list[tuple[bytes, bytes]]:
        if self.pending is None:
            return self.state.db.bucket_entries(store, bucket, self._as_of())
        entries = dict(self.state.db.bucket_entries(store, bucket, None))
        for key, value in (self.pending.get(store) or {}).items():
            if bucket_of(key) == bucket:
                if value is None:
                    entries.pop(key, None)
                else:
                    entries[key] = kv_leaf_hash(key, value)
        return sorted(entries.items())

    def store_proof(self, store: str) -> Proof:
        return self.root_tree.proof(STORE_INDEX[store])

    def proof_ops(self, store: str, key: bytes, present: bool) -> list[ProofOp]:
        """Key (presence, or absence in its bucket), bucket and store ops proving it under the app hash."""
        bucket = bucket_of(key)
        entries = self.bucket_entries(store, bucket)
        keys = [k for k, _ in entries]
        tree = MerkleTree.from_leaf_hashes([leaf for _, leaf in entries])
        if present:
            key_op = value_op(key, tree.proof(keys.index(key)))
        else:
            key_op = absence_op(key, keys, tree, lambda k: hashlib.sha256(self.get(store, k) or b"").digest())
        bucket_op = value_op(b"", bucket_path(bucket, lambda n: self.node(store, n)))
        return [key_op, bucket_op, value_op(store.encode(), self.store_proof(store))]


class Overlay:
    """Writes on top of a base (a committed version or another overlay); nothing reaches the base
    until ``merge_into`` (per transaction) or ``LedgerState.next_version`` (per block)."""

    __slots__ = ("base", "changes")

    def __init__(self, base: "AppVersion | Overlay") -> None:
        self.base = base
        self.changes: dict[str, dict[bytes, bytes | None]] = {}

    def get(self, store: str, key: bytes) -> bytes | None:
        changed = self.changes.get(store)
        if changed is not None and key in changed:
            return changed[key]
        return self.base.get(store, key)

    def set(self, store: str, key: bytes, value: bytes) -> None:
        if store not in STORE_INDEX:
            raise KeyError(f"unknown store {store}")
        if not value:
            raise ValueError("empty values cannot be proven; store a record with content")
        self.changes.setdefault(store, {})[key] = value

    def delete(self, store: str, key: bytes) -> None:
        if store not in STORE_INDEX:
            raise KeyError(f"unknown store {store}")
        self.changes.setdefault(store, {})[key] = None

    def merge_into(self, parent: "Overlay") -> None:
        for store, changed in self.changes.items():
            parent.changes.setdefault(store, {}).update(changed)


class LedgerState:
    """Committed versions (the newest ``retain`` provable) and the bridge to persistence."""

    def __init__(self, db: StateStore | None, retain: int = RETAINED_VERSIONS) -> None:
        if retain < 2:
            raise ValueError("retain at least 2 versions (a proof of height H needs header H + 1)")
        self.db: StateStore = db if db is not None else MemoryStateStore()
        self.retain = retain
        self._values: OrderedDict[tuple[str, bytes], bytes | None] = OrderedDict()
        self._load()

    def _load(self) -> None:
        self.meta = self.db.load_meta()
        height = int(self.meta.get("height", b"0"))
        # Each store's bucket tree: only non-empty nodes; absent ones are empty subtrees.
        leaves: dict[str, dict[int, bytes]] = {name: {} for name in STORES}
        for store, bucket, root in self.db.bucket_roots():
            leaves[store][bucket] = bucket_leaf(root)
        self.trees: dict[str, dict[int, bytes]] = {
            name: (bucket_tree_changes(leaves[name], empty_node) if leaves[name] else {}) for name in STORES
        }
        # Undo logs by height: the nodes block h replaced, as they were at h - 1.
        self.undo: dict[int, dict[str, dict[int, bytes | None]]] = {}
        self._values.clear()
        self.committed_height = height
        version = AppVersion(height, self, {n: self.trees[n].get(1, EMPTY_STORE_ROOT) for n in STORES})
        committed = self.meta.get("app_hash", b"")
        if height and version.app_hash != committed:
            raise RuntimeError(
                f"state at height {height} hashes to {version.app_hash.hex()}, "
                f"but {committed.hex()} was committed: the state file is corrupt"
            )
        self.versions: dict[int, AppVersion] = {height: version}
        self.latest = version

    # --- reads -----------------------------------------------------------------------------------

    def get_latest(self, store: str, key: bytes) -> bytes | None:
        cache_key = (store, key)
        try:
            value = self._values[cache_key]
            self._values.move_to_end(cache_key)
            return value
        except KeyError:
            pass
        value = self.db.get(store, bucket_of(key), key, None)
        self._values[cache_key] = value
        if len(self._values) > VALUE_CACHE_SIZE:
            self._values.popitem(last=False)
        return value

    def node_at(self, store: str, node: int, height: int | None) -> bytes:
        """A bucket-tree node at a retained height (None: the latest committed)."""
        if height is not None:
            for later in range(height + 1, self.committed_height + 1):
                replaced = self.undo.get(later, {}).get(store)
                if replaced is not None and node in replaced:
                    return replaced[node] or empty_node(node)
        return self.trees[store].get(node) or empty_node(node)

    def dump(self) -> dict[str, dict[bytes, bytes]]:
        """The whole latest state as plain mappings (tests and tools; O(state))."""
        out: dict[str, dict[bytes, bytes]] = {name: {} for name in STORES}
        for store, key, value in self.db.live_items():
            out[store][key] = value
        for store, changed in (self.latest.pending or {}).items():
            for key, value in changed.items():
                if value is None:
                    out[store].pop(key, None)
                else:
                    out[store][key] = value
        return out

    # --- building and committing versions ------------------------------------------------------

    def next_version(self, height: int, overlay: Overlay, base: AppVersion | None = None) -> AppVersion:
        """The version ``overlay`` makes of ``base`` (the latest by default), app hash computed, unsaved."""
        base = base or self.latest
        pending = {s: dict(c) for s, c in (base.pending or {}).items()}
        nodes = {s: dict(c) for s, c in (base.pending_nodes or {}).items()}
        roots = {s: dict(c) for s, c in (base.pending_roots or {}).items()}
        existing = set(base.pending_existing or ())
        for store, changed in overlay.changes.items():
            if changed:
                pending.setdefault(store, {}).update(changed)
        store_roots = dict(base.store_roots)
        for store, changed in overlay.changes.items():
            if not changed:
                continue
            store_pending = pending[store]
            buckets = {bucket_of(key) for key in changed}
            in_buckets: dict[int, list[bytes]] = {b: [] for b in buckets}
            if len(store_pending) == len(changed):
                for key in changed:
                    in_buckets[bucket_of(key)].append(key)
            else:
                for key in store_pending:
                    bucket = bucket_of(key)
                    if bucket in in_buckets:
                        in_buckets[bucket].append(key)
            leaves = {}
            store_roots_changed = roots.setdefault(store, {})
            committed = self.db.latest_bucket_entries(store, in_buckets)
            for bucket, keys in in_buckets.items():
                entries = dict(committed.get(bucket, ()))
                for key in keys:
                    if key in entries:
                        existing.add((store, key))
                    value = store_pending[key]
                    if value is None:
                        entries.pop(key, None)
                    else:
                        entries[key] = kv_leaf_hash(key, value)
                root = MerkleTree.from_leaf_hashes([entries[k] for k in sorted(entries)]).root
                store_roots_changed[bucket] = root
                leaves[bucket] = bucket_leaf(root)
            store_nodes = nodes.setdefault(store, {})
            trees = self.trees[store]
            store_nodes.update(
                bucket_tree_changes(
                    leaves, lambda n: store_nodes[n] if n in store_nodes else (trees.get(n) or empty_node(n))
                )
            )
            store_roots[store] = store_nodes[1]
        return AppVersion(height, self, store_roots, pending, nodes, roots, existing)

    def genesis_base(self) -> AppVersion:
        """The empty state InitChain's writes go on (again from scratch if InitChain runs twice)."""
        self._load()
        return self.latest

    def replace_genesis(self, overlay: Overlay) -> AppVersion:
        """Apply InitChain's writes at height 0 (not persisted until the first Commit)."""
        version = self.next_version(0, overlay, base=self.latest)
        self.versions = {0: version}
        self.latest = version
        return version

    def commit(self, version: AppVersion, overlay: Overlay | None = None, extra_meta: Mapping[str, bytes] = {}) -> None:
        """Persist a pending version atomically (the store's one transaction), then make it the latest.
        ``overlay`` is the block's writes, already folded into the version."""
        if version.pending is None:
            raise ValueError(f"version {version.height} is already committed")
        height = version.height
        changes = [
            (
                store, bucket_of(key), key, value, None if value is None else kv_leaf_hash(key, value),
                (store, key) in (version.pending_existing or ()),
            )
            for store, changed in version.pending.items()
            for key, value in changed.items()
        ]
        bucket_roots = [(s, b, r) for s, c in (version.pending_roots or {}).items() for b, r in c.items()]
        meta = {"height": str(height).encode(), "app_hash": version.app_hash, **extra_meta}
        self.db.save(height, changes, bucket_roots, meta, height - self.retain + 1)
        self.meta.update(meta)
        # The tree nodes go live after the store holds them: a crash before this loses nothing on disk.
        replaced: dict[str, dict[int, bytes | None]] = {}
        for store, changed in (version.pending_nodes or {}).items():
            tree = self.trees[store]
            replaced[store] = {node: tree.get(node) for node in changed}
            for node, digest in changed.items():
                if digest == empty_node(node):
                    tree.pop(node, None)
                else:
                    tree[node] = digest
        self.undo[height] = replaced
        for store, changed in version.pending.items():
            for key, value in changed.items():
                if (store, key) in self._values:
                    self._values[(store, key)] = value
        version.pending = version.pending_nodes = version.pending_roots = version.pending_existing = None
        self.committed_height = height
        self.versions[height] = version
        self.latest = version
        for old in sorted(self.versions)[: -self.retain]:
            del self.versions[old]
        oldest = min(self.versions)
        for old in [h for h in self.undo if h <= oldest]:
            del self.undo[old]

    def restore(self, height: int, items: Iterable[tuple[str, bytes, bytes]], app_hash: bytes, meta: Mapping[str, bytes]) -> bool:
        """Replace the whole state with ``items`` at ``height`` (a state-sync snapshot) only if they hash
        to ``app_hash`` (the light client's trusted one); False, and the state untouched, otherwise."""

        def accept(bucket_roots: list[tuple[str, int, bytes]]) -> bool:
            return app_hash_of_buckets(bucket_roots) == app_hash

        meta = {**meta, "height": str(height).encode(), "app_hash": app_hash}
        replaced = self.db.replace_all(height, items, meta, accept)
        if replaced:
            self._load()
        return replaced


def app_hash_of_buckets(bucket_roots: Iterable[tuple[str, int, bytes]]) -> bytes:
    """The app hash of a state given as its non-empty buckets' roots (an unknown store: no hash)."""
    leaves: dict[str, dict[int, bytes]] = {name: {} for name in STORES}
    for store, bucket, root in bucket_roots:
        if store not in leaves or not 0 <= bucket < BUCKETS:
            return b""
        leaves[store][bucket] = bucket_leaf(root)
    roots = {n: (bucket_tree_changes(leaves[n], empty_node)[1] if leaves[n] else EMPTY_STORE_ROOT) for n in STORES}
    return MerkleTree.from_leaf_hashes([kv_leaf_hash(n.encode(), roots[n]) for n in STORES]).root


# --- snapshots (state sync): the format, owned here because the core parses hostile chunks ---------

SNAPSHOT_FORMAT = 1
SNAPSHOT_CHUNK_BYTES = 4 * 1024 * 1024  # CometBFT allows up to 16 MiB per chunk message
MAX_SNAPSHOT_CHUNKS = 100_000
MAX_SNAPSHOT_KEY_BYTES = 4096
MAX_SNAPSHOT_VALUE_BYTES = 8 * 1024 * 1024


class SnapshotError(ValueError):
    """A snapshot chunk or its metadata is malformed."""


def _put_bytes(out: bytearray, data: bytes) -> None:
    out += uvarint(len(data))
    out += data


def encode_snapshot_chunks(items: Iterable[tuple[str, bytes, bytes]], chunk_bytes: int = SNAPSHOT_CHUNK_BYTES) -> Iterator[bytes]:
    """The state as chunks of records ``uvarint(len) store ‖ uvarint(len) key ‖ uvarint(len) value``."""
    chunk = bytearray()
    for store, key, value in items:
        _put_bytes(chunk, store.encode())
        _put_bytes(chunk, key)
        _put_bytes(chunk, value)
        if len(chunk) >= chunk_bytes:
            yield bytes(chunk)
            chunk = bytearray()
    yield bytes(chunk)  # the last (possibly empty: an empty state is one empty chunk)


def _read_uvarint(data: bytes, at: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if at >= len(data) or shift > 35:
            raise SnapshotError("truncated or overlong length")
        byte = data[at]
        at += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, at
        shift += 7


def decode_snapshot_chunk(data: bytes) -> list[tuple[str, bytes, bytes]]:
    """A chunk's records; SnapshotError for anything but well-formed records of known stores."""
    out = []
    at = 0
    limits = (32, MAX_SNAPSHOT_KEY_BYTES, MAX_SNAPSHOT_VALUE_BYTES)
    while at < len(data):
        parts = []
        for limit in limits:
            length, at = _read_uvarint(data, at)
            if length > limit or at + length > len(data):
                raise SnapshotError(f"a field of {length} bytes at offset {at} overruns the chunk or its limit")
            parts.append(data[at : at + length])
            at += length
        try:
            store = parts[0].decode("ascii")
        except UnicodeDecodeError:
            raise SnapshotError("store name is not ASCII") from None
        if store not in STORE_INDEX or not parts[1] or not parts[2]:
            raise SnapshotError(f"record of unknown store {store!r} or with an empty key or value")
        out.append((store, parts[1], parts[2]))
    return out


def snapshot_metadata(chain_id: str, last_block_time: int, chunk_hashes: list[bytes]) -> bytes:
    """What a snapshot's ``metadata`` carries: the chain id and block time a joining node's CheckTx needs
    (not in the app hash; a wrong one only hurts the node that trusted it) and SHA-256 of every chunk."""
    out = bytearray()
    _put_bytes(out, chain_id.encode())
    out += uvarint(last_block_time)
    out += b"".join(chunk_hashes)
    return bytes(out)


def parse_snapshot_metadata(metadata: bytes, chunks: int) -> tuple[str, int, list[bytes]]:
    if not 1 <= chunks <= MAX_SNAPSHOT_CHUNKS:
        raise SnapshotError(f"{chunks} chunks (1..{MAX_SNAPSHOT_CHUNKS} accepted)")
    length, at = _read_uvarint(metadata, 0)
    if length > 256 or at + length > len(metadata):
        raise SnapshotError("chain id overruns the metadata")
    try:
        chain_id = metadata[at : at + length].decode()
    except UnicodeDecodeError:
        raise SnapshotError("chain id is not UTF-8") from None
    block_time, at = _read_uvarint(metadata, at + length)
    hashes = metadata[at:]
    if len(hashes) != 32 * chunks:
        raise SnapshotError(f"metadata holds {len(hashes)} bytes of chunk hashes for {chunks} chunks")
    return chain_id, block_time, [hashes[i : i + 32] for i in range(0, len(hashes), 32)]
