"""The committed state on disk: one SQLite file per node (``core.state.StateStore``).

Rows are versioned: ``kv`` holds a row per (store, bucket, key, height written) with ``until``, the
height that superseded it (NULL while current), so a read as of any retained height is one index
seek, and pruning is a range delete on ``until``. ``buckets`` holds the latest root of every non-empty
bucket, from which a restart rebuilds the in-memory bucket trees. A Commit is one SQLite transaction
(WAL): a crash leaves the previous commit or this one, never half of one. There is no
per-height change log: superseded rows past the retention are deleted in the same transaction.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

from shelfproof.ledger.core.state import SNAPSHOT_CHUNK_BYTES, encode_snapshot_chunks, snapshot_metadata
from shelfproof.ledger.proofs.merkle import MerkleTree, bucket_of, kv_leaf_hash

log = logging.getLogger(__name__)

_SNAPSHOT_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (height INTEGER PRIMARY KEY, chunks INTEGER NOT NULL, metadata BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (height INTEGER NOT NULL, idx INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (height, idx)) WITHOUT ROWID;
"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    store TEXT NOT NULL, bucket INTEGER NOT NULL, key BLOB NOT NULL, height INTEGER NOT NULL,
    value BLOB, leaf BLOB, until INTEGER,
    PRIMARY KEY (store, bucket, key, height)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_superseded ON kv (until) WHERE until IS NOT NULL;
CREATE INDEX IF NOT EXISTS kv_deleted ON kv (height) WHERE value IS NULL;
CREATE TABLE IF NOT EXISTS buckets (store TEXT NOT NULL, bucket INTEGER NOT NULL, root BLOB NOT NULL,
    PRIMARY KEY (store, bucket)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB);
DROP TABLE IF EXISTS changes;
"""

_EMPTY_BUCKET_ROOT = MerkleTree.from_leaf_hashes([]).root


class StateDB:
    """SQLite file holding versioned state rows, bucket roots and the commit point."""

    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL: in WAL mode a commit is still atomic (a crash leaves the previous commit or this one);
        # only the newest commits can be lost to a power cut, and CometBFT's handshake replays the
        # blocks an application is missing, so durability comes from the block store.
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA cache_size=-65536")  # 64 MiB of pages, whatever the state size
        columns = [row[1] for row in self.conn.execute("PRAGMA table_info(kv)")]
        if columns and "bucket" not in columns:
            raise RuntimeError(
                f"{path} holds state in the pre-bucket layout (a different app hash): reset this node's ledger home"
            )
        self.conn.executescript(_SCHEMA)
        # Snapshots go to a file of their own, written by a background thread, so a snapshot of a large
        # state neither holds the state file's write lock nor stalls Commit.
        self.snapshot_path = ":memory:" if str(path) == ":memory:" else f"{path}.snapshots"
        self._snapshots = self._snapshot_connection()
        self._snapshot_thread: threading.Thread | None = None
        self.snapshot_chunk_bytes = SNAPSHOT_CHUNK_BYTES

    def _snapshot_connection(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.snapshot_path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SNAPSHOT_SCHEMA)
        return conn

    def load_meta(self) -> dict[str, bytes]:
        return {name: bytes(value) for name, value in self.conn.execute("SELECT name, value FROM meta")}

    def get(self, store: str, bucket: int, key: bytes, height: int | None) -> bytes | None:
        if height is None:
            row = self.conn.execute(
                "SELECT value FROM kv WHERE store = ? AND bucket = ? AND key = ? AND until IS NULL"
                " ORDER BY height DESC LIMIT 1",
                (store, bucket, key),
            ).fetchone()
        else:
            row = self.conn.execute(
                "SELECT value FROM kv WHERE store = ? AND bucket = ? AND key = ? AND height <= ?"
                " AND (until IS NULL OR until > ?) ORDER BY height DESC LIMIT 1",
                (store, bucket, key, height, height),
            ).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    def bucket_entries(self, store: str, bucket: int, height: int | None) -> list[tuple[bytes, bytes]]:
        if height is None:
            rows = self.conn.execute(
                "SELECT key, leaf FROM kv WHERE store = ? AND bucket = ? AND until IS NULL AND value IS NOT NULL"
                " ORDER BY key",
                (store, bucket),
            )
        else:
            rows = self.conn.execute(
                "SELECT key, leaf FROM kv WHERE store = ? AND bucket = ? AND height <= ?"
                " AND (until IS NULL OR until > ?) AND value IS NOT NULL ORDER BY key",
                (store, bucket, height, height),
            )
        return [(bytes(k), bytes(leaf)) for k, leaf in rows]

    def latest_bucket_entries(self, store: str, buckets: Iterable[int]) -> dict[int, list[tuple[bytes, bytes]]]:
        """``bucket_entries`` of the latest state for many buckets in a few statements (a block's)."""
        out: dict[int, list[tuple[bytes, bytes]]] = {}
        wanted = sorted(set(buckets))
        for start in range(0, len(wanted), 500):
            part = wanted[start : start + 500]
            rows = self.conn.execute(
                f"SELECT bucket, key, leaf FROM kv WHERE store = ? AND bucket IN ({','.join('?' * len(part))})"  # noqa: S608
                " AND until IS NULL AND value IS NOT NULL ORDER BY bucket, key",
                (store, *part),
            )
            for bucket, key, leaf in rows:
                out.setdefault(bucket, []).append((bytes(key), bytes(leaf)))
        return out

    def bucket_roots(self) -> Iterable[tuple[str, int, bytes]]:
        return [(s, b, bytes(r)) for s, b, r in self.conn.execute("SELECT store, bucket, root FROM buckets")]

    def save(
        self,
        height: int,
        changes: Iterable[tuple[str, int, bytes, bytes | None, bytes | None, bool]],
        bucket_roots: Iterable[tuple[str, int, bytes]],
        meta: Mapping[str, bytes],
        prune_through: int,
    ) -> None:
        rows = list(changes)
        roots = list(bucket_roots)
        cur = self.conn.cursor()
        cur.execute("BEGIN")
        try:
            cur.executemany(
                "UPDATE kv SET until = ? WHERE store = ? AND bucket = ? AND key = ? AND until IS NULL",
                [(height, s, b, k) for s, b, k, _, _, existed in rows if existed],
            )
            cur.executemany(
                "INSERT OR REPLACE INTO kv (store, bucket, key, height, value, leaf, until) VALUES (?, ?, ?, ?, ?, ?, NULL)",
                [(s, b, k, height, v, leaf) for s, b, k, v, leaf, _ in rows],
            )
            cur.executemany(
                "INSERT OR REPLACE INTO buckets (store, bucket, root) VALUES (?, ?, ?)",
                [(s, b, r) for s, b, r in roots if r != _EMPTY_BUCKET_ROOT],
            )
            cur.executemany(
                "DELETE FROM buckets WHERE store = ? AND bucket = ?", [(s, b) for s, b, r in roots if r == _EMPTY_BUCKET_ROOT]
            )
            cur.executemany("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", list(meta.items()))
            # Versions older than the retention: superseded rows, then deletions nothing can read any more.
            cur.execute("DELETE FROM kv WHERE until IS NOT NULL AND until <= ?", (prune_through,))
            cur.execute("DELETE FROM kv WHERE value IS NULL AND until IS NULL AND height <= ?", (prune_through,))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    def live_items(self) -> Iterator[tuple[str, bytes, bytes]]:
        """The latest state in (store, key) order, read in one transaction on a connection of its own, so
        commits may go on while a snapshot is written (WAL keeps this reader's view)."""
        reader = self.conn if str(self.path) == ":memory:" else sqlite3.connect(self.path, check_same_thread=False)
        try:
            rows = reader.execute(
                "SELECT store, key, value FROM kv WHERE until IS NULL AND value IS NOT NULL ORDER BY store, bucket, key"
            )
            for store, key, value in rows:
                yield store, bytes(key), bytes(value)
        finally:
            if reader is not self.conn:
                reader.close()

    def replace_all(
        self,
        height: int,
        items: Iterable[tuple[str, bytes, bytes]],
        meta: Mapping[str, bytes],
        accept: Callable[[list[tuple[str, int, bytes]]], bool],
    ) -> bool:
        cur = self.conn.cursor()
        cur.execute("BEGIN")
        try:
            for table in ("kv", "buckets", "meta"):
                cur.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
            # Appended to a heap first and moved over in key order: sorted inserts into the clustered
            # table instead of random ones (a snapshot arrives in (store, key) order, not bucket order).
            cur.execute("CREATE TEMP TABLE IF NOT EXISTS restoring (store, bucket, key, value, leaf)")
            cur.execute("DELETE FROM restoring")
            cur.executemany(
                "INSERT INTO restoring VALUES (?, ?, ?, ?, ?)", ((s, bucket_of(k), k, v, kv_leaf_hash(k, v)) for s, k, v in items)
            )
            cur.execute(
                "INSERT OR REPLACE INTO kv (store, bucket, key, height, value, leaf, until)"
                " SELECT store, bucket, key, ?, value, leaf, NULL FROM restoring ORDER BY store, bucket, key",
                (height,),
            )
            cur.execute("DELETE FROM restoring")
            roots: list[tuple[str, int, bytes]] = []
            current: tuple[str, int] | None = None
            leaves: list[bytes] = []
            for store, bucket, leaf in cur.execute("SELECT store, bucket, leaf FROM kv ORDER BY store, bucket, key"):
                if (store, bucket) != current:
                    if current is not None:
                        roots.append((*current, MerkleTree.from_leaf_hashes(leaves).root))
                    current, leaves = (store, bucket), []
                leaves.append(bytes(leaf))
            if current is not None:
                roots.append((*current, MerkleTree.from_leaf_hashes(leaves).root))
            if not accept(roots):
                cur.execute("ROLLBACK")
                return False
            cur.executemany("INSERT INTO buckets (store, bucket, root) VALUES (?, ?, ?)", roots)
            cur.executemany("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", list(meta.items()))
            cur.execute("COMMIT")
            return True
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    # --- snapshots ----------------------------------------------------------------------------------

    def take_snapshot(self, height: int, chain_id: str, last_block_time: int, keep: int) -> None:
        if self._snapshot_thread is not None and self._snapshot_thread.is_alive():
            log.warning("snapshot at height %d skipped: the previous one is still being written", height)
            return
        if str(self.path) == ":memory:":
            self._write_snapshot(self.conn, self._snapshots, height, chain_id, last_block_time, keep, self.snapshot_chunk_bytes)
            return
        # The read transaction starts here, before the next Commit can write: WAL keeps this view.
        reader = sqlite3.connect(self.path, check_same_thread=False)
        reader.execute("BEGIN")
        (committed,) = reader.execute("SELECT value FROM meta WHERE name = 'height'").fetchone()
        if int(committed) != height:
            reader.close()
            raise RuntimeError(f"snapshot of height {height} asked with {int(committed)} committed")

        def write() -> None:
            writer = self._snapshot_connection()
            try:
                self._write_snapshot(reader, writer, height, chain_id, last_block_time, keep, self.snapshot_chunk_bytes)
            except Exception:  # noqa: BLE001 - a failed snapshot is logged, the node goes on
                log.exception("snapshot at height %d failed", height)
            finally:
                reader.close()
                writer.close()

        self._snapshot_thread = threading.Thread(target=write, name=f"snapshot-{height}", daemon=True)
        self._snapshot_thread.start()

    @staticmethod
    def _write_snapshot(
        reader: sqlite3.Connection,
        writer: sqlite3.Connection,
        height: int,
        chain_id: str,
        last_block_time: int,
        keep: int,
        chunk_bytes: int,
    ) -> None:
        rows = reader.execute(
            "SELECT store, key, value FROM kv WHERE until IS NULL AND value IS NOT NULL ORDER BY store, bucket, key"
        )
        hashes = []
        writer.execute("DELETE FROM chunks WHERE height = ?", (height,))
        for index, chunk in enumerate(
            encode_snapshot_chunks(((s, bytes(k), bytes(v)) for s, k, v in rows), chunk_bytes)
        ):
            writer.execute("INSERT INTO chunks (height, idx, data) VALUES (?, ?, ?)", (height, index, chunk))
            hashes.append(hashlib.sha256(chunk).digest())
        metadata = snapshot_metadata(chain_id, last_block_time, hashes)
        writer.execute("BEGIN")
        writer.execute("INSERT OR REPLACE INTO snapshots (height, chunks, metadata) VALUES (?, ?, ?)", (height, len(hashes), metadata))
        old = [h for (h,) in writer.execute("SELECT height FROM snapshots ORDER BY height DESC LIMIT -1 OFFSET ?", (keep,))]
        for h in old:
            writer.execute("DELETE FROM snapshots WHERE height = ?", (h,))
            writer.execute("DELETE FROM chunks WHERE height = ?", (h,))
        writer.execute("COMMIT")
        log.info("snapshot written", extra={"height": height, "chunks": len(hashes)})

    def wait_for_snapshot(self, timeout_s: float | None = None) -> None:
        """Until the snapshot being written (if any) is finished (tests, shutdown)."""
        if self._snapshot_thread is not None:
            self._snapshot_thread.join(timeout_s)

    def list_snapshots(self) -> list[tuple[int, int, bytes]]:
        return [
            (h, n, bytes(m)) for h, n, m in self._snapshots.execute("SELECT height, chunks, metadata FROM snapshots ORDER BY height DESC")
        ]

    def load_snapshot_chunk(self, height: int, index: int) -> bytes | None:
        row = self._snapshots.execute("SELECT data FROM chunks WHERE height = ? AND idx = ?", (height, index)).fetchone()
        return None if row is None else bytes(row[0])

    def close(self) -> None:
        self.wait_for_snapshot()
        self._snapshots.close()
        self.conn.close()
