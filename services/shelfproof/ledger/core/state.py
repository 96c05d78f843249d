"""The ledger's state: named key-value stores, Merkle-committed, versioned by height, persisted in Commit.

Layout (what CometBFT's light client verifies, see notes/cometbft.md §6): each store is an RFC 6962
tree over ``kv_leaf(key, value)`` of its pairs sorted by key; the app hash is the tree over
``kv_leaf(store name, store root)`` of every store, sorted by name. A proof is two ``simple:v`` ops;
a missing key's proof is a ``shelfproof:absent`` op (its two neighbours, merkle.absence_op) and the
store's ``simple:v`` op.

Execution writes to an ``Overlay``; ``LedgerState.next_version`` turns a block's overlay into a new
immutable ``AppVersion`` (rebuilding trees only for stores the block changed) and ``commit`` persists
it atomically in SQLite (state rows, the height's change log, height and app hash in one transaction).
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass
from typing import Iterable, Mapping, Protocol

from shelfproof.ledger.proofs.merkle import MerkleTree, Proof, absence_op, kv_leaf_hash
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

# Heights whose full trees stay in memory for proofs (the newest provable height is latest - 1).
RETAINED_VERSIONS = 4


class StoreVersion:
    """One store at one height. Immutable once built; unchanged stores are shared between heights."""

    __slots__ = ("values", "keys", "leaf_hashes", "tree")

    def __init__(self, values: dict[bytes, bytes], keys: list[bytes], leaf_hashes: dict[bytes, bytes]):
        self.values = values
        self.keys = keys
        self.leaf_hashes = leaf_hashes
        self.tree = MerkleTree.from_leaf_hashes([leaf_hashes[k] for k in keys])

    @classmethod
    def empty(cls) -> "StoreVersion":
        return cls({}, [], {})

    @classmethod
    def from_items(cls, items: Mapping[bytes, bytes]) -> "StoreVersion":
        keys = sorted(items)
        return cls(dict(items), keys, {k: kv_leaf_hash(k, items[k]) for k in keys})

    @property
    def root(self) -> bytes:
        return self.tree.root

    def with_changes(self, changes: Mapping[bytes, bytes | None]) -> "StoreVersion":
        values = dict(self.values)
        leaf_hashes = dict(self.leaf_hashes)
        keys = self.keys
        added = [k for k, v in changes.items() if v is not None and k not in values]
        removed = {k for k, v in changes.items() if v is None and k in values}
        if added or removed:
            keys = [k for k in keys if k not in removed] if removed else list(keys)
            if len(added) > 64:
                keys = sorted(keys + added)
            else:
                for key in added:
                    bisect.insort(keys, key)
        for key, value in changes.items():
            if value is None:
                values.pop(key, None)
                leaf_hashes.pop(key, None)
            else:
                values[key] = value
                leaf_hashes[key] = kv_leaf_hash(key, value)
        return StoreVersion(values, keys, leaf_hashes)

    def proof(self, key: bytes) -> Proof | None:
        index = bisect.bisect_left(self.keys, key)
        if index == len(self.keys) or self.keys[index] != key:
            return None
        return self.tree.proof(index)

    def absence_op(self, key: bytes) -> ProofOp:
        """The ``shelfproof:absent`` op for a key this store lacks (ValueError if it has it)."""
        return absence_op(key, self.keys, self.tree, lambda k: hashlib.sha256(self.values[k]).digest())


@dataclass(frozen=True)
class AppVersion:
    """The whole state after a height, with its app hash (which header height + 1 carries)."""

    height: int
    stores: dict[str, StoreVersion]
    root_tree: MerkleTree

    @property
    def app_hash(self) -> bytes:
        return self.root_tree.root

    @classmethod
    def build(cls, height: int, stores: dict[str, StoreVersion]) -> "AppVersion":
        leaves = [kv_leaf_hash(name.encode(), stores[name].root) for name in STORES]
        return cls(height, stores, MerkleTree.from_leaf_hashes(leaves))

    def get(self, store: str, key: bytes) -> bytes | None:
        return self.stores[store].values.get(key)

    def store_proof(self, store: str) -> Proof:
        return self.root_tree.proof(STORE_INDEX[store])


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

    def merge_into(self, parent: "Overlay") -> None:
        for store, changed in self.changes.items():
            parent.changes.setdefault(store, {}).update(changed)


class StateStore(Protocol):
    """Where committed state persists (``shelfproof.ledger.storage.StateDB``, a SQLite file): the core
    only calls it, so it imports no I/O itself."""

    def load(self) -> tuple[int, bytes, dict[str, dict[bytes, bytes]], dict[str, bytes]]: ...

    def save(
        self, height: int, app_hash: bytes, changes: Iterable[tuple[str, bytes, bytes | None]], extra_meta: Mapping[str, bytes] = {}
    ) -> None: ...


class LedgerState:
    """Committed versions (the newest few kept for proofs) and the bridge to persistence."""

    def __init__(self, db: StateStore | None) -> None:
        self.db = db
        self.meta: dict[str, bytes] = {}
        height, app_hash, stores, meta = db.load() if db else (0, b"", {n: {} for n in STORES}, {})
        self.meta = meta
        version = AppVersion.build(height, {n: StoreVersion.from_items(stores[n]) for n in STORES})
        if height and version.app_hash != app_hash:
            raise RuntimeError(
                f"state at height {height} hashes to {version.app_hash.hex()}, "
                f"but {app_hash.hex()} was committed: the state file is corrupt"
            )
        self.versions: dict[int, AppVersion] = {height: version}
        self.latest = version
        # Writes made before the first Commit (InitChain's genesis) ride along with it.
        self._unsaved: dict[str, dict[bytes, bytes | None]] = {}

    def next_version(self, height: int, overlay: Overlay, base: AppVersion | None = None) -> AppVersion:
        base = base or self.latest
        stores = dict(base.stores)
        for store, changed in overlay.changes.items():
            if changed:
                stores[store] = stores[store].with_changes(changed)
        return AppVersion.build(height, stores)

    def replace_genesis(self, overlay: Overlay) -> AppVersion:
        """Apply InitChain's writes at height 0 (not persisted until the first Commit)."""
        version = self.next_version(0, overlay, base=self.versions[0])
        self.versions = {0: version}
        self.latest = version
        self._unsaved = {s: dict(c) for s, c in overlay.changes.items()}
        return version

    def commit(self, version: AppVersion, overlay: Overlay, extra_meta: Mapping[str, bytes] = {}) -> None:
        changes = {s: dict(c) for s, c in self._unsaved.items()}
        for store, changed in overlay.changes.items():
            changes.setdefault(store, {}).update(changed)
        if self.db:
            rows = [(s, k, v) for s, c in changes.items() for k, v in c.items()]
            self.db.save(version.height, version.app_hash, rows, extra_meta)
        self.meta.update(extra_meta)
        self._unsaved = {}
        self.versions[version.height] = version
        self.latest = version
        for old in sorted(self.versions)[:-RETAINED_VERSIONS]:
            del self.versions[old]
