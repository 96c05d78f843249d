"""The adapter's durable record: acknowledged transactions still in flight, and every committed one.

Acknowledgements are group-committed: ``acknowledge`` returns only after the transaction is on disk
(one fsync'd SQLite transaction serves every acknowledgement of the last few milliseconds), so an
adapter that restarts still knows what it promised to get committed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from shelfproof.ledger.v1 import transaction_pb2 as txpb


@dataclass(frozen=True)
class IndexedTx:
    tx_hash: bytes
    height: int
    index: int
    code: int
    log: str
    raw: bytes
    block_time_ms: int


class TxIndex:
    """Reads run on the event loop's thread (``conn``); writes run in worker threads on their own
    connection (``writer``, serialised by a lock), so an fsync never blocks the loop. WAL mode lets
    the reader see every committed write."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.writer.execute("PRAGMA journal_mode=WAL")
        self.writer.execute("PRAGMA synchronous=FULL")
        self._write_lock = threading.Lock()
        self._closed = False
        self.writer.executescript(
            """
            CREATE TABLE IF NOT EXISTS committed (
                hash BLOB PRIMARY KEY, height INTEGER, idx INTEGER, code INTEGER, log TEXT, raw BLOB,
                block_time_ms INTEGER);
            CREATE INDEX IF NOT EXISTS committed_order ON committed (height, idx);
            CREATE TABLE IF NOT EXISTS pending (hash BLOB PRIMARY KEY, raw BLOB, acknowledged_ms INTEGER);
            CREATE TABLE IF NOT EXISTS cursor (id INTEGER PRIMARY KEY CHECK (id = 0), height INTEGER);
            """
        )
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._batch: list[tuple[bytes, bytes, int]] = []
        self._batch_done: asyncio.Future | None = None
        self._flusher: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        # Pending transactions by (signer, nonce), in memory: what a successor's nonce gap may wait on.
        self._held: dict[bytes, tuple[str, int]] = {}
        self._holding: dict[tuple[str, int], int] = {}  # (two transactions may share a nonce)
        self._held_lock = threading.Lock()  # writes run in worker threads
        for h, raw, _ in self.pending():
            self._hold(h, raw)

    # --- acknowledgements ------------------------------------------------------------------------

    async def acknowledge(self, transactions: list[tuple[bytes, bytes]], now_ms: int) -> None:
        """Durably remember transactions (hash, raw) we promised to get committed."""
        loop = asyncio.get_running_loop()
        if self._batch_done is None:
            self._batch_done = loop.create_future()
            self._flusher = loop.create_task(self._flush_soon())
        done = self._batch_done
        self._batch.extend((h, raw, now_ms) for h, raw in transactions)
        await asyncio.shield(done)

    async def _flush_soon(self) -> None:
        await asyncio.sleep(0.002)  # let concurrent acknowledgements join this batch
        async with self._lock:
            batch, done = self._batch, self._batch_done
            self._batch, self._batch_done = [], None
            try:
                await asyncio.to_thread(self._write_pending, batch)
            except BaseException as err:
                done.set_exception(err)
                raise
            done.set_result(None)

    def _write(self, statements: list[tuple[str, list[tuple]]]) -> None:
        """Run statements in one durable transaction (called from worker threads)."""
        with self._write_lock:
            if self._closed:
                raise RuntimeError("the transaction index is closed")
            self.writer.execute("BEGIN")
            try:
                for sql, rows in statements:
                    self.writer.executemany(sql, rows)
                self.writer.execute("COMMIT")
            except BaseException:
                self.writer.execute("ROLLBACK")
                raise

    def _write_pending(self, batch: list[tuple[bytes, bytes, int]]) -> None:
        self._write([("INSERT OR IGNORE INTO pending VALUES (?, ?, ?)", batch)])
        for h, raw, _ in batch:
            self._hold(h, raw)

    def _hold(self, tx_hash: bytes, raw: bytes) -> None:
        signed = txpb.SignedTransaction.FromString(raw)
        with self._held_lock:
            if tx_hash not in self._held:
                self._held[tx_hash] = key = (signed.signer, signed.nonce)
                self._holding[key] = self._holding.get(key, 0) + 1

    def _release(self, hashes: list[bytes]) -> None:
        with self._held_lock:
            for h in hashes:
                key = self._held.pop(h, None)
                if key is not None:
                    left = self._holding.pop(key) - 1
                    if left:
                        self._holding[key] = left

    def holds(self, signer: str, nonce: int) -> bool:
        """Whether an acknowledged, uncommitted transaction of ``signer`` carries ``nonce``."""
        return (signer, nonce) in self._holding

    @property
    def pending_count(self) -> int:
        """Acknowledged transactions not yet committed or rejected (from memory: cheap to scrape)."""
        return len(self._held)

    def pending(self) -> list[tuple[bytes, bytes, int]]:
        return [(bytes(h), bytes(r), t) for h, r, t in self.conn.execute("SELECT hash, raw, acknowledged_ms FROM pending ORDER BY rowid")]

    def is_pending(self, tx_hash: bytes) -> bool:
        return self.conn.execute("SELECT 1 FROM pending WHERE hash = ?", (tx_hash,)).fetchone() is not None

    def lookup(self, tx_hash: bytes) -> tuple[IndexedTx | None, bool]:
        """(its committed or rejected record, whether it is pending), read in one snapshot: a block
        indexed between two separate reads moved a transaction out of ``pending`` after ``committed``
        was read, and it read as unknown (seen in the fault test under load)."""
        self.conn.execute("BEGIN")
        try:
            return self.get(tx_hash), self.is_pending(tx_hash)
        finally:
            self.conn.execute("COMMIT")

    # --- committed transactions ---------------------------------------------------------------

    def cursor(self) -> int:
        row = self.conn.execute("SELECT height FROM cursor WHERE id = 0").fetchone()
        return row[0] if row else 0

    def record_block(self, height: int, block_time_ms: int, txs: list[tuple[bytes, int, str, bytes]]) -> None:
        """Index a block's transactions (hash, code, log, raw) and advance the cursor, atomically."""
        self._write(
            [
                (
                    "INSERT OR IGNORE INTO committed VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(h, height, i, code, log, raw, block_time_ms) for i, (h, code, log, raw) in enumerate(txs)],
                ),
                ("DELETE FROM pending WHERE hash = ?", [(h,) for h, _, _, _ in txs]),
                ("INSERT OR REPLACE INTO cursor VALUES (0, ?)", [(height,)]),
            ]
        )
        self._release([h for h, _, _, _ in txs])

    def record_rejection(self, tx_hash: bytes, raw: bytes, code: int, log: str) -> None:
        """An acknowledged transaction that can never commit (height 0: rejected outside a block)."""
        self._write(
            [
                ("INSERT OR IGNORE INTO committed VALUES (?, 0, 0, ?, ?, ?, 0)", [(tx_hash, code, log, raw)]),
                ("DELETE FROM pending WHERE hash = ?", [(tx_hash,)]),
            ]
        )
        self._release([tx_hash])

    def get(self, tx_hash: bytes) -> IndexedTx | None:
        row = self.conn.execute(
            "SELECT hash, height, idx, code, log, raw, block_time_ms FROM committed WHERE hash = ?", (tx_hash,)
        ).fetchone()
        return IndexedTx(bytes(row[0]), *row[1:5], bytes(row[5]), row[6]) if row else None

    def committed_after(
        self, height: int, index: int, limit: int, include_rejected: bool
    ) -> list[IndexedTx]:
        """Transactions after position (height, index) in commit order."""
        sql = (
            "SELECT hash, height, idx, code, log, raw, block_time_ms FROM committed"
            " WHERE (height, idx) > (?, ?)"
            + ("" if include_rejected else " AND code = 0")
            + " ORDER BY height, idx LIMIT ?"
        )
        rows = self.conn.execute(sql, (height, index, limit))
        return [IndexedTx(bytes(r[0]), *r[1:5], bytes(r[5]), r[6]) for r in rows]

    def close(self) -> None:
        # A write may still be running in a worker thread (its awaiting task was cancelled, the thread
        # was not): take the lock so the connection is never closed under it.
        with self._write_lock:
            self._closed = True
            self.writer.close()
        self.conn.close()
