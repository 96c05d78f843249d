"""Follows the ledger's committed stream into the PostgreSQL query model.

The transactions the stream has delivered are applied together, up to ``GROUP_MAX`` in one PostgreSQL
transaction with the projector's cursor (height, index), so a crash never applies a transaction twice or
skips one; a group that fails is applied again one transaction at a time, so everything before a bad
one still lands. (One PostgreSQL transaction per ledger transaction cost about seven round trips per
EPCIS event; capture streams thousands.) Replaying from height 1 into an empty database rebuilds the
same tables: a projection reads nothing but the ledger.
Subclasses say what a transaction changes (``apply``) and may fetch what it needs first (``prepare``,
outside the database transaction).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any

import grpc
from psycopg_pool import AsyncConnectionPool

from shelfproof.ledger.v1 import ledger_pb2 as pb
from shelfproof.ledger.v1 import ledger_pb2_grpc
from shelfproof.ledger.v1 import transaction_pb2 as txpb

log = logging.getLogger(__name__)

GROUP_MAX = 256  # ledger transactions per PostgreSQL transaction
_END = object()  # the stream ended (the server closed it): open a new one from the cursor


def block_time(result: pb.TransactionResult) -> datetime:
    return datetime.fromtimestamp(result.block_time.seconds + result.block_time.nanos / 1e9, tz=timezone.utc)


class Projector:
    NAME = ""  # the cursor's name in projection_cursors

    def __init__(self, pool: AsyncConnectionPool, ledger: ledger_pb2_grpc.LedgerServiceStub) -> None:
        self.pool = pool
        self.ledger = ledger
        self.position = (0, -1)
        self._advanced = asyncio.Condition()
        self._task: asyncio.Task | None = None
        self._stopping = False
        # Whether it may have more to apply: not reading the stream, or applying what it read
        # (a projector waiting on the stream has applied all there is: runtime/metrics.py's lag).
        self.following = False
        self.applying = False

    @property
    def behind(self) -> bool:
        return self.applying or not self.following

    @property
    def projected_height(self) -> int:
        return self.position[0]

    async def prepare(self, action: str, signed: txpb.SignedTransaction, body: txpb.TransactionBody) -> Any:
        """What ``apply`` needs from outside the database (read before its transaction opens)."""
        return None

    async def apply(self, cur, result: pb.TransactionResult, signed: txpb.SignedTransaction, body: txpb.TransactionBody, action: str, prepared: Any) -> None:
        raise NotImplementedError

    async def apply_group(self, cur, parsed: list[tuple]) -> None:
        """A group's transactions in order, each (result, signed, body, action, prepared); a subclass may
        write runs of one kind in fewer statements."""
        for result, signed, body, action, prepared in parsed:
            await self.apply(cur, result, signed, body, action, prepared)

    def applied(self, action: str, body: txpb.TransactionBody) -> None:
        """Called after a transaction's changes are committed (e.g. to evict caches)."""

    async def start(self) -> None:
        async with self.pool.connection() as conn:
            row = await (
                await conn.execute("SELECT height, tx_index FROM projection_cursors WHERE projector = %s", (self.NAME,))
            ).fetchone()
        self.position = (row[0], row[1]) if row else (0, -1)
        self._task = asyncio.create_task(self._follow(), name=f"{self.NAME}-projector")

    async def stop(self) -> None:
        # The flag as well as the cancellation: a gRPC stream may turn a cancellation into an
        # AioRpcError(CANCELLED), which the loop below would otherwise treat as a broken stream.
        self._stopping = True
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def wait_for(self, height: int, index: int, timeout_s: float = 10.0) -> bool:
        """Wait until the transaction at (height, index), and all before it, are in PostgreSQL."""
        async with self._advanced:
            try:
                await asyncio.wait_for(self._advanced.wait_for(lambda: self.position >= (height, index)), timeout_s)
            except asyncio.TimeoutError:
                return False
        return True

    async def _follow(self) -> None:
        while not self._stopping:
            reader = None
            try:
                stream = self.ledger.StreamCommittedTransactions(
                    pb.StreamCommittedTransactionsRequest(from_height=max(self.position[0], 1))
                )
                self.following = True
                delivered: asyncio.Queue = asyncio.Queue(maxsize=2 * GROUP_MAX)
                reader = asyncio.create_task(self._read(stream, delivered), name=f"{self.NAME}-stream")
                while (first := await delivered.get()) is not _END:
                    if isinstance(first, BaseException):
                        raise first
                    group = [first]
                    while len(group) < GROUP_MAX and not delivered.empty():
                        group.append(delivered.get_nowait())
                    end = next((k for k, g in enumerate(group) if g is _END or isinstance(g, BaseException)), len(group))
                    stop = group[end] if end < len(group) else None  # the reader's last word, after the items
                    fresh = [g.result for g in group[:end] if (g.result.height, g.result.index) > self.position]
                    if fresh:
                        self.applying = True
                        try:
                            await self._apply_group(fresh)
                        finally:
                            self.applying = False
                            async with self._advanced:
                                self._advanced.notify_all()
                    if stop is _END:
                        break
                    if stop is not None:
                        raise stop
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as err:
                self.following = False
                if self._stopping:
                    return
                log.warning("ledger stream broke (%s); resuming", err.code().name, extra={"projector": self.NAME})
                await asyncio.sleep(0.5)
            except Exception:
                self.following = False
                if self._stopping:
                    return
                log.exception("projection failed; retrying from the cursor", extra={"projector": self.NAME})
                await asyncio.sleep(1.0)
            finally:
                if reader is not None:
                    reader.cancel()
                    await asyncio.gather(reader, return_exceptions=True)

    @staticmethod
    async def _read(stream, delivered: asyncio.Queue) -> None:
        """The stream's items into ``delivered``, then ``_END``, or the error that broke it."""
        try:
            async for item in stream:
                await delivered.put(item)
            await delivered.put(_END)
        except asyncio.CancelledError:
            stream.cancel()
            raise
        except Exception as err:
            await delivered.put(err)

    async def _apply_group(self, results: list[pb.TransactionResult]) -> None:
        try:
            await self._apply(results)
        except Exception:
            if len(results) == 1:
                raise
            for result in results:  # what comes before a failing transaction still lands
                await self._apply([result])

    async def _apply(self, results: list[pb.TransactionResult]) -> None:
        parsed = []
        for result in results:
            signed = txpb.SignedTransaction.FromString(result.transaction)
            body = txpb.TransactionBody.FromString(signed.body)
            action = body.WhichOneof("action")
            parsed.append((result, signed, body, action, await self.prepare(action, signed, body)))
        async with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            await self.apply_group(cur, parsed)
            last = results[-1]
            await cur.execute(
                """INSERT INTO projection_cursors (projector, height, tx_index) VALUES (%s, %s, %s)
                   ON CONFLICT (projector) DO UPDATE SET height = EXCLUDED.height, tx_index = EXCLUDED.tx_index""",
                (self.NAME, last.height, last.index),
            )
        self.position = (last.height, last.index)
        for _, _, body, action, _ in parsed:
            self.applied(action, body)
