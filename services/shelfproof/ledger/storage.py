"""The committed state on disk: one SQLite file per node with the latest state, a per-height change log
and the commit point (written in one transaction at Commit, WAL with synchronous=FULL so a crash
leaves the previous commit or this one). The deterministic core (``ledger.core``) reaches it only
through ``core.state.StateStore``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Iterable, Mapping

from shelfproof.ledger.core.state import STORES


class StateDB:
    """SQLite file holding the latest state, a per-height change log, and the commit point."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS kv (store TEXT, key BLOB, value BLOB, PRIMARY KEY (store, key))
                WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS changes (height INTEGER, store TEXT, key BLOB, value BLOB);
            CREATE INDEX IF NOT EXISTS changes_height ON changes (height);
            CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB);
            """
        )

    def load(self) -> tuple[int, bytes, dict[str, dict[bytes, bytes]], dict[str, bytes]]:
        meta = dict(self.conn.execute("SELECT name, value FROM meta"))
        stores: dict[str, dict[bytes, bytes]] = {name: {} for name in STORES}
        for store, key, value in self.conn.execute("SELECT store, key, value FROM kv"):
            stores[store][bytes(key)] = bytes(value)
        height = int(meta.get("height", b"0"))
        return height, bytes(meta.get("app_hash", b"")), stores, {k: bytes(v) for k, v in meta.items()}

    def save(
        self,
        height: int,
        app_hash: bytes,
        changes: Iterable[tuple[str, bytes, bytes | None]],
        extra_meta: Mapping[str, bytes] = {},
    ) -> None:
        rows = list(changes)
        cur = self.conn.cursor()
        cur.execute("BEGIN")
        try:
            cur.executemany(
                "INSERT OR REPLACE INTO kv (store, key, value) VALUES (?, ?, ?)",
                [(s, k, v) for s, k, v in rows if v is not None],
            )
            cur.executemany("DELETE FROM kv WHERE store = ? AND key = ?", [(s, k) for s, k, v in rows if v is None])
            cur.executemany(
                "INSERT INTO changes (height, store, key, value) VALUES (?, ?, ?, ?)",
                [(height, s, k, v) for s, k, v in rows],
            )
            meta = {"height": str(height).encode(), "app_hash": app_hash, **extra_meta}
            cur.executemany("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", list(meta.items()))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.conn.close()
