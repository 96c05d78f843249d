"""Follows the ledger's price log into PostgreSQL and an in-memory price book.

The price log (store ``price_log``) has every price event in ledger order per height, the schedule's
activations at the start of a block included (those are no transaction, so the transaction stream
cannot show them). The projector reads it height by height (up to 256 heights per query) and applies
each batch of heights in one PostgreSQL transaction with its cursor, so a height is applied whole,
once. ``height`` is the last height applied whole: what the stream may send. The in-memory book
(prices, promotions, policies) is updated after each commit, so this process answers lookups from
memory and is never staler than its database.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone

from psycopg_pool import AsyncConnectionPool

from google.protobuf import timestamp_pb2

from shelfproof.common.v1 import common_pb2
from shelfproof.ledger.core.rules.price_computation import locations_of, promotion_covers, promotion_runs
from shelfproof.ledger.v1 import ledger_pb2 as lpb
from shelfproof.ledger.v1 import ledger_pb2_grpc
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.pricing.v1 import pricing_pb2 as pb
from shelfproof.runtime.client import call

log = logging.getLogger(__name__)

HEIGHTS_PER_QUERY = 256
KEYS_PER_QUERY = 256
# Heights of events kept in memory for live streams (older ones are read from PostgreSQL).
RECENT_EVENTS = 20_000


def _text(value: str) -> str:
    """Member-written text as PostgreSQL can hold it (no NUL characters): a hostile category or reason
    must not stop the projection."""
    return value.replace("\x00", "")


def _time(unix_s: int) -> datetime:
    return datetime.fromtimestamp(unix_s, tz=timezone.utc)


def money(currency: str, amount: int) -> common_pb2.Money:
    return common_pb2.Money(currency_code=currency, amount_minor=amount)


def stamp(unix_s: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=unix_s)


def price_event(height: int, sequence: int, entry: st.PriceLogEntry, block_unix_s: int) -> pb.PriceEvent:
    currency = entry.price.price.currency_code or entry.scheduled.change.price.currency_code or entry.promotion.promotion.currency_code
    event = pb.PriceEvent(
        height=height, sequence=sequence, kind=entry.kind, gtin=entry.gtin, location_gln=entry.location_gln,
        promotion_id=entry.promotion_id, change_id=entry.change_id, applied=entry.applied, reason=entry.reason,
        block_time=stamp(block_unix_s), draft_id=entry.draft_id,
    )
    if entry.old_price_minor:
        event.old_price.CopyFrom(money(currency, entry.old_price_minor))
    if entry.new_price_minor:
        event.new_price.CopyFrom(money(currency, entry.new_price_minor))
    effective = entry.due_unix_s or (entry.promotion.promotion.start_unix_s if entry.kind == st.PRICE_EVENT_KIND_PROMOTION_START else 0)
    if entry.kind == st.PRICE_EVENT_KIND_PROMOTION_END:
        effective = entry.promotion.ended_unix_s
    if effective:
        event.effective_time.CopyFrom(stamp(effective))
    return event


class PriceBook:
    """This process's copy of the price book: base prices, promotions by location, policies."""

    def __init__(self) -> None:
        self.prices: dict[tuple[str, str], tuple[st.PriceRecord, str, str]] = {}  # → (record, category, org)
        self.promotions: dict[str, st.PromotionRecord] = {}
        self.by_location: dict[str, set[str]] = {}
        self.policies: dict[str, txpb.GuardrailPolicy] = {}
        # Bumped by every change: lookups computed from an older version are stale.
        self.version = 0

    def apply(self, entry: st.PriceLogEntry) -> None:
        self.version += 1
        kind = entry.kind
        if kind == st.PRICE_EVENT_KIND_PRICE_SET and entry.applied:
            self.prices[(entry.gtin, entry.location_gln)] = (entry.price, entry.category, entry.organization_gln)
        elif kind in (st.PRICE_EVENT_KIND_PROMOTION_CREATED, st.PRICE_EVENT_KIND_PROMOTION_START, st.PRICE_EVENT_KIND_PROMOTION_END):
            if entry.HasField("promotion"):
                self.set_promotion(entry.promotion)
        elif kind == st.PRICE_EVENT_KIND_POLICY_SET:
            self.policies[entry.policy.organization_gln] = entry.policy

    def set_promotion(self, record: st.PromotionRecord) -> None:
        pid = record.promotion.promotion_id
        self.promotions[pid] = record
        for location in locations_of(record.promotion):
            ids = self.by_location.setdefault(location, set())
            # Ended ones stay: a lookup at an earlier time still finds them (promotion_runs decides).
            if record.status == st.PROMOTION_STATUS_REFUSED:
                ids.discard(pid)
            else:
                ids.add(pid)

    def running(self, gtin: str, category: str, location: str, currency: str, at_unix_s: int) -> tuple[list[txpb.CreatePromotion], int]:
        """The promotions that apply at ``at_unix_s``, and the next time any of them (or another
        covering the product) starts or ends: until then the answer stays the same."""
        out, until = [], 2**62
        for pid in self.by_location.get(location, ()):
            record = self.promotions[pid]
            p = record.promotion
            if not promotion_covers(p, gtin, category, location, currency):
                continue
            if promotion_runs(record, at_unix_s):
                out.append(p)
            for moment in (p.start_unix_s, p.end_unix_s, record.ended_unix_s):
                if moment > at_unix_s:
                    until = min(until, moment)
        return out, until


class PricingProjector:
    NAME = "pricing"

    def __init__(self, pool: AsyncConnectionPool, ledger: ledger_pb2_grpc.LedgerServiceStub, poll_s: float = 0.02) -> None:
        self.pool = pool
        self.ledger = ledger
        self.poll_s = poll_s
        self.book = PriceBook()
        self.height = 0
        # (height, sequence, entry, block unix s, the stream's message) of the newest events, and the
        # first height they cover whole: live streams share one message per event.
        self.recent: list[tuple[int, int, st.PriceLogEntry, int, pb.StreamPriceChangesResponse]] = []
        self.recent_from = 1
        self._advanced = asyncio.Condition()
        self._task: asyncio.Task | None = None
        self._stopping = False

    # It reads the price log height by height: every height above ``height`` is still to apply.
    behind = True

    @property
    def projected_height(self) -> int:
        return self.height

    async def start(self) -> None:
        async with self.pool.connection() as conn:
            row = await (await conn.execute("SELECT height FROM projection_cursors WHERE projector = %s", (self.NAME,))).fetchone()
            self.height = row[0] if row else 0
            for category, org, record in await (await conn.execute(
                "SELECT category, organization_gln, record FROM price_book"
            )).fetchall():
                price = st.PriceRecord.FromString(record)
                self.book.prices[(price.gtin, price.location_gln)] = (price, category, org)
            for (record,) in await (await conn.execute("SELECT record FROM promotions")).fetchall():
                self.book.set_promotion(st.PromotionRecord.FromString(record))
            # Each organisation's policy: the newest POLICY_SET event of it.
            for (entry,) in await (await conn.execute(
                "SELECT DISTINCT ON (promotion_id) entry FROM price_events WHERE kind = %s "
                "ORDER BY promotion_id, height DESC, sequence DESC",
                (st.PRICE_EVENT_KIND_POLICY_SET,),
            )).fetchall():
                event = st.PriceLogEntry.FromString(entry)
                self.book.policies[event.policy.organization_gln] = event.policy
        self.recent_from = self.height + 1
        self._task = asyncio.create_task(self._follow(), name="pricing-projector")

    async def stop(self) -> None:
        self._stopping = True
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def wait_for_height(self, height: int, timeout_s: float = 10.0) -> bool:
        async with self._advanced:
            try:
                await asyncio.wait_for(self._advanced.wait_for(lambda: self.height >= height), timeout_s)
            except asyncio.TimeoutError:
                return False
        return True

    async def _follow(self) -> None:
        while not self._stopping:
            try:
                if not await self._step():
                    await asyncio.sleep(self.poll_s)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - the ledger or the database is away: try again
                if self._stopping:
                    return
                log.warning("price log projection paused (%s); retrying", err, extra={"projector": self.NAME})
                await asyncio.sleep(0.5)

    async def _query(self, keys: list[bytes]) -> lpb.QueryManyResponse:
        request = lpb.QueryManyRequest(keys=[lpb.StoreKey(store="price_log", key=k) for k in keys])
        return await call(self.ledger.QueryMany, request, idempotent=True, deadline_s=10.0)

    async def _step(self) -> bool:
        """Apply the next heights the ledger has committed; False when there are none."""
        first = self.height + 1
        heights = list(range(first, first + HEIGHTS_PER_QUERY))
        answer = await self._query([f"{h:012d}".encode() for h in heights])
        top = min(answer.height, heights[-1])
        if top < first:
            return False
        headers = [(h, st.PriceLogHeight.FromString(v.value)) for h, v in zip(heights, answer.values) if v.found and h <= top]
        wanted = [(h, n, header.block_unix_s) for h, header in headers for n in range(header.entries)]
        entries: list[tuple[int, int, st.PriceLogEntry, int]] = []
        for start in range(0, len(wanted), KEYS_PER_QUERY):
            chunk = wanted[start:start + KEYS_PER_QUERY]
            values = (await self._query([f"{h:012d}/{n:06d}".encode() for h, n, _ in chunk])).values
            for (h, n, at), value in zip(chunk, values):
                entries.append((h, n, st.PriceLogEntry.FromString(value.value), at))
        async with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            for h, n, entry, at in entries:
                await self._apply(cur, h, n, entry, at)
            await cur.execute(
                """INSERT INTO projection_cursors (projector, height, tx_index) VALUES (%s, %s, -1)
                   ON CONFLICT (projector) DO UPDATE SET height = EXCLUDED.height""",
                (self.NAME, top),
            )
        for item in entries:
            self.book.apply(item[2])
        self.recent.extend((*item, pb.StreamPriceChangesResponse(event=price_event(*item))) for item in entries)
        if len(self.recent) > 2 * RECENT_EVENTS:
            del self.recent[:RECENT_EVENTS]
            self.recent_from = self.recent[0][0] + 1  # the oldest kept height may be cut
        async with self._advanced:
            self.height = top
            self._advanced.notify_all()
        return True

    @staticmethod
    async def _apply(cur, height: int, sequence: int, entry: st.PriceLogEntry, block_unix_s: int) -> None:
        await cur.execute(
            """INSERT INTO price_events (height, sequence, kind, gtin, location_gln, promotion_id, block_time, entry)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
            # A policy event keeps its organisation in promotion_id's column: one index serves "the newest of each".
            (height, sequence, entry.kind, entry.gtin, entry.location_gln,
             entry.organization_gln if entry.kind == st.PRICE_EVENT_KIND_POLICY_SET else entry.promotion_id, _time(block_unix_s),
             entry.SerializeToString(deterministic=True)),
        )
        if entry.kind == st.PRICE_EVENT_KIND_PRICE_SET and entry.applied:
            p = entry.price
            await cur.execute(
                """INSERT INTO price_book (gtin, location_gln, currency_code, amount_minor, unit_cost_minor, category,
                                           effective_time, valid_until, reason, change_id, draft_id, ledger_height, record,
                                           organization_gln)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (gtin, location_gln) DO UPDATE SET currency_code = EXCLUDED.currency_code,
                     amount_minor = EXCLUDED.amount_minor, unit_cost_minor = EXCLUDED.unit_cost_minor,
                     category = EXCLUDED.category, effective_time = EXCLUDED.effective_time,
                     valid_until = EXCLUDED.valid_until, reason = EXCLUDED.reason, change_id = EXCLUDED.change_id,
                     draft_id = EXCLUDED.draft_id, ledger_height = EXCLUDED.ledger_height, record = EXCLUDED.record,
                     organization_gln = EXCLUDED.organization_gln""",
                (p.gtin, p.location_gln, p.price.currency_code, p.price.amount_minor, p.unit_cost.amount_minor,
                 _text(entry.category), _time(p.effective_unix_s), _time(p.valid_until_unix_s) if p.valid_until_unix_s else None,
                 _text(p.reason), p.change_id, p.draft_id, height, p.SerializeToString(deterministic=True),
                 entry.organization_gln),
            )
        elif entry.HasField("promotion"):
            r = entry.promotion
            await cur.execute(
                """INSERT INTO promotions (promotion_id, status, start_time, end_time, draft_id, ledger_height, record)
                   VALUES (%s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (promotion_id) DO UPDATE SET status = EXCLUDED.status, ledger_height = EXCLUDED.ledger_height,
                     record = EXCLUDED.record""",
                (r.promotion.promotion_id, r.status, _time(r.promotion.start_unix_s), _time(r.promotion.end_unix_s),
                 r.promotion.draft_id, height, r.SerializeToString(deterministic=True)),
            )
