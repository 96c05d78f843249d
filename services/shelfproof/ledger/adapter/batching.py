"""Packing signed transactions into batches, so that CometBFT's per-transaction cost is shared.

One lane per engine lane (for CometBFT: per node, chosen by signer, so one account's transactions
stay on one node, in order). A lane flushes when it holds ``max_txs`` transactions or ``max_bytes``,
or ``linger_s`` after the first one arrived, whichever comes first; while a batch's CheckTx is in
flight the next one fills, so batches grow with the load. A lane sends one batch at a time: a batch
refused because some inner transactions failed is re-packed without them and sent again before
anything queued behind it (the next batch may carry the same accounts' next nonces).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from shelfproof.ledger.core.tx import MAX_BATCH_BYTES, MAX_BATCH_TXS, batch_size, encode_batch, tx_hash
from shelfproof.ledger.engines.engine import EngineUnavailable, LedgerEngine, TxOutcome
from shelfproof.ledger.v1 import transaction_pb2 as txpb

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchSettings:
    max_txs: int = 256
    max_bytes: int = 256 * 1024
    linger_s: float = 0.02

    def __post_init__(self) -> None:
        if not 1 <= self.max_txs <= MAX_BATCH_TXS or not 1 <= self.max_bytes <= MAX_BATCH_BYTES or self.linger_s < 0:
            raise ValueError(f"batches hold 1..{MAX_BATCH_TXS} transactions and 1..{MAX_BATCH_BYTES} bytes")


@dataclass
class _Queued:
    raw: bytes
    hash: bytes
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


class _Lane:
    def __init__(self) -> None:
        self.queue: list[_Queued] = []
        self.bytes = 0
        self.wake = asyncio.Event()
        self.full = asyncio.Event()


class BatchPacker:
    """``check(raw, signer)`` answers one signed transaction's CheckTx verdict, having sent it in a
    batch with its lane's neighbours."""

    def __init__(self, engine: LedgerEngine, settings: BatchSettings | None = None) -> None:
        self.engine = engine
        self.settings = settings or BatchSettings()
        self._lanes = [_Lane() for _ in range(engine.lanes)]
        # Queued and unanswered by hash: the same transaction submitted twice shares one verdict.
        self._queued: dict[bytes, asyncio.Future] = {}
        self._tasks: list[asyncio.Task] = []
        self.batches_sent = 0
        # Called with each batch's transaction count as it is sent (runtime/metrics.py).
        self.batch_observers: list[Callable[[int], None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run_lane(n), name=f"ledger-batch-lane-{n}") for n in range(len(self._lanes))
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for future in self._queued.values():
            if not future.done():
                future.set_exception(EngineUnavailable("the adapter is stopping"))

    async def check(self, raw: bytes, signer: str) -> TxOutcome:
        """Raises EngineUnavailable when no node took the batch."""
        h = tx_hash(raw)
        future = self._queued.get(h)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._queued[h] = future
            future.add_done_callback(lambda _: self._queued.pop(h, None))
            lane = self._lanes[self.engine.lane_of(signer) % len(self._lanes)]
            lane.queue.append(_Queued(raw, h, future))
            lane.bytes += len(raw)
            lane.wake.set()
            if len(lane.queue) >= self.settings.max_txs or batch_size(lane.bytes, len(lane.queue)) >= self.settings.max_bytes:
                lane.full.set()
        return await asyncio.shield(future)

    async def _run_lane(self, n: int) -> None:
        lane = self._lanes[n]
        while True:
            await lane.wake.wait()
            if not lane.queue:
                lane.wake.clear()
                continue
            remaining = lane.queue[0].arrived + self.settings.linger_s - time.monotonic()
            if remaining > 0 and not lane.full.is_set():
                try:
                    await asyncio.wait_for(lane.full.wait(), remaining)
                except asyncio.TimeoutError:
                    pass
            items = self._take(lane)
            try:
                await self._send(n, items)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - a lane never dies; its callers get the error
                log.exception("sending a batch failed")
                _fail(items, EngineUnavailable(f"sending the batch failed: {err!r}"))

    def _take(self, lane: _Lane) -> list[_Queued]:
        count, size = 0, 0
        for item in lane.queue:
            if count and (count + 1 > self.settings.max_txs or batch_size(size + len(item.raw), count + 1) > self.settings.max_bytes):
                break
            count, size = count + 1, size + len(item.raw)
        items, lane.queue = lane.queue[:count], lane.queue[count:]
        lane.bytes -= size
        if len(lane.queue) < self.settings.max_txs and batch_size(lane.bytes, len(lane.queue)) < self.settings.max_bytes:
            lane.full.clear()
        return items

    async def _send(self, lane: int, items: list[_Queued]) -> None:
        while items:
            try:
                outcome = await self.engine.broadcast(encode_batch([item.raw for item in items]), lane)
            except EngineUnavailable as err:
                _fail(items, err)
                return
            self.batches_sent += 1
            for observe in self.batch_observers:
                observe(len(items))
            verdicts = _verdicts(outcome, len(items))
            if outcome.code == 0 or verdicts is None:
                # In the mempool (every inner transaction passed), or refused as a whole by the
                # mempool (full, rechecking): the same answer for each.
                for item in items:
                    _answer(item, TxOutcome(outcome.code, outcome.log) if outcome.code else TxOutcome(0))
                return
            passed = []
            for item, verdict in zip(items, verdicts, strict=True):
                if verdict.code == 0:
                    passed.append(item)
                else:
                    _answer(item, TxOutcome(verdict.code, verdict.log))
            if len(passed) == len(items):  # no progress: cannot happen with our application
                for item in items:
                    _answer(item, TxOutcome(outcome.code, outcome.log))
                return
            items = passed


def _verdicts(outcome: TxOutcome, count: int) -> list[txpb.InnerResult] | None:
    if not outcome.data:
        return None
    try:
        results = list(txpb.BatchResult.FromString(outcome.data).results)
    except Exception:  # noqa: BLE001 - not our application's answer
        return None
    return results if len(results) == count else None


def _answer(item: _Queued, outcome: TxOutcome) -> None:
    if not item.future.done():
        item.future.set_result(outcome)


def _fail(items: list[_Queued], err: Exception) -> None:
    for item in items:
        if not item.future.done():
            item.future.set_exception(err)
