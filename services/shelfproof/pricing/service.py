"""``shelfproof.pricing.v1.PricingService``: writes go through the ledger; lookups are computed from the
projector's in-memory price book with the ledger's own price computation; lists, history and stream
catch-up come from PostgreSQL."""

from __future__ import annotations

import base64
import bisect
import time

from google.protobuf import timestamp_pb2
from psycopg_pool import AsyncConnectionPool

from shelfproof.common.v1 import common_pb2
from shelfproof.db.request_ids import earlier_write, remember_write
from shelfproof.ledger.client import LedgerClient, ledger_error
from shelfproof.ledger.core.bounds import MAX_AMOUNT_MINOR, MAX_QUANTITY
from shelfproof.ledger.core.rules.price_computation import (
    CURRENCY_MINOR_UNITS,
    DAY_S,
    compute_line,
    guardrails_for,
    locations_of,
    lowest_prior_price,
    price_in_effect,
)
from shelfproof.ledger.v1 import ledger_pb2 as lpb
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.pricing.projector import PricingProjector, money, price_event, stamp
from shelfproof.pricing.v1 import pricing_pb2 as pb
from shelfproof.pricing.v1 import pricing_pb2_grpc
from shelfproof.runtime.client import call
from shelfproof.runtime.errors import DependencyUnavailable, FieldViolation, InvalidArgument, LedgerRejected, NotFound
from shelfproof.runtime.fields import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, gln_field, gtin_field
from shelfproof.runtime.server import ServiceBinding

MAX_LINES = 1_000
# Lookups answered from memory: computed lines and checked keys (cleared when they grow past this).
CACHE_ENTRIES = 200_000
MAX_STREAM_FILTERS = 100
STREAM_PAGE = 1_000


def _price(record: st.PriceRecord) -> pb.Price:
    price = pb.Price(
        gtin=record.gtin, location_gln=record.location_gln, amount=money(record.price.currency_code, record.price.amount_minor),
        effective_time=stamp(record.effective_unix_s), ledger_ref=common_pb2.LedgerRef(height=record.height),
        reason=record.reason, change_id=record.change_id, draft_id=record.draft_id,
    )
    if record.valid_until_unix_s:
        price.valid_until.CopyFrom(stamp(record.valid_until_unix_s))
    return price


def _matches(entry: st.PriceLogEntry, locations: frozenset[str], gtins: frozenset[str]) -> bool:
    if entry.kind == st.PRICE_EVENT_KIND_POLICY_SET:
        return not locations and not gtins
    if entry.HasField("promotion"):
        p = entry.promotion.promotion
        return (not locations or bool(locations.intersection(locations_of(p)))) and (not gtins or bool(gtins.intersection(p.gtins)))
    return (not locations or entry.location_gln in locations) and (not gtins or entry.gtin in gtins)


def _bad(field: str, description: str) -> InvalidArgument:
    return InvalidArgument(f"{field}: {description}", field_violations=[FieldViolation(field, description)])


def _page_token(value: str, fields: int) -> list[str]:
    try:
        parts = base64.urlsafe_b64decode(value.encode()).decode().split("/")
    except ValueError:
        parts = []
    if len(parts) != fields:
        raise _bad("page_token", "not one this service issued")
    return parts


def _page_size(size: int) -> int:
    if size < 0:
        raise _bad("page_size", ">= 0")
    return min(size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


class PricingService(pricing_pb2_grpc.PricingServiceServicer):
    def __init__(self, pool: AsyncConnectionPool, ledger: LedgerClient, projector: PricingProjector, clock=time.time) -> None:
        self.pool = pool
        self.ledger = ledger
        self.projector = projector
        self.book = projector.book
        self.clock = clock
        # (gtin, location, quantity) → (book version, from, until, line): a line stays right for times in
        # [from, until) until the book changes (the next promotion start or end, price end, midnight).
        self._lines: dict[tuple[str, str, int], tuple[int, int, int, pb.GetPriceResponse | None]] = {}
        self._keys: dict[tuple[str, str], str] = {}

    def binding(self) -> ServiceBinding:
        return ServiceBinding(
            pb.DESCRIPTOR.services_by_name["PricingService"].full_name,
            lambda server: pricing_pb2_grpc.add_PricingServiceServicer_to_server(self, server),
        )

    # --- lookups --------------------------------------------------------------------------------

    def _at(self, stamp: timestamp_pb2.Timestamp, set_: bool) -> int:
        return stamp.seconds if set_ else int(self.clock())

    def _key(self, value: str, field: str, check, kind: str) -> str:
        """A GTIN or GLN checked once per distinct input (lookups repeat the same few keys); a bad one
        is refused naming the request's field."""
        found = self._keys.get((kind, value))
        if found is None:
            found = check(value, field)
            if len(self._keys) >= CACHE_ENTRIES:
                self._keys.clear()
            self._keys[(kind, value)] = found
        return found

    def _line(self, gtin: str, location: str, at_unix_s: int, quantity: int) -> pb.GetPriceResponse | None:
        """The priced line (as GetPrice answers it), from the cache when the book has not changed and no
        boundary passed. Cached answers are shared: never modify one."""
        key = (gtin, location, quantity)
        cached = self._lines.get(key)
        if cached is not None and cached[0] == self.book.version and cached[1] <= at_unix_s < cached[2]:
            return cached[3]
        version = self.book.version
        line, until = self._compute(gtin, location, at_unix_s, quantity)
        answer = pb.GetPriceResponse(line=line) if line is not None else None
        if len(self._lines) >= CACHE_ENTRIES:
            self._lines.clear()
        self._lines[key] = (version, at_unix_s, until, answer)
        return answer

    def _compute(self, gtin: str, location: str, at_unix_s: int, quantity: int) -> tuple[pb.PricedLine | None, int]:
        found = self.book.prices.get((gtin, location))
        if found is None:
            return None, 2**62
        record, category, org = found
        base = price_in_effect(record, at_unix_s)
        if base is None:
            return None, record.effective_unix_s if record.effective_unix_s > at_unix_s else 2**62
        currency = record.price.currency_code
        promotions, until = self.book.running(gtin, category, location, currency, at_unix_s)
        until = min(until, (at_unix_s // DAY_S + 1) * DAY_S)  # the reference price's window moves daily
        if record.valid_until_unix_s:
            until = min(until, record.valid_until_unix_s)
        guardrails = guardrails_for(self.book.policies.get(org), category, location)
        line = compute_line(base, record.unit_cost.amount_minor, quantity, promotions, guardrails)
        drafts = {p.promotion_id: p.draft_id for p in promotions}
        priced = pb.PricedLine(
            price=_price(record),
            breakdown=pb.PriceBreakdown(
                unit_base_minor=line.unit_base_minor, quantity=line.quantity, base_line_minor=line.base_line_minor,
                adjustments=[pb.PriceAdjustment(promotion_id=a.promotion_id, kind=a.kind, off_minor=a.off_minor,
                                                draft_id=drafts.get(a.promotion_id, "")) for a in line.adjustments],
                clamp_rule=line.clamp_rule, clamp_minor=line.clamp_minor, line_minor=line.line_minor,
                unit_minor=line.unit_minor, rounding=line.rounding,
            ),
            line_total=money(currency, line.line_minor),
        )
        if line.adjustments:
            reference = lowest_prior_price(record, at_unix_s)
            if reference is not None:
                priced.reference_price.CopyFrom(money(currency, reference))
        return priced, until

    @staticmethod
    def _quantity(value: int, field: str) -> int:
        if not 0 <= value <= MAX_QUANTITY:
            raise _bad(field, f"0 to {MAX_QUANTITY} (0 reads as 1)")
        return value or 1

    async def GetPrice(self, request: pb.GetPriceRequest, context) -> pb.GetPriceResponse:
        gtin = self._key(request.gtin, "gtin", gtin_field, "gtin")
        location = self._key(request.location_gln, "location_gln", gln_field, "gln")
        quantity = self._quantity(request.quantity, "quantity")
        answer = self._line(gtin, location, self._at(request.time, request.HasField("time")), quantity)
        if answer is None:
            raise NotFound(f"{gtin} has no price at {location} at that time")
        return answer

    async def GetPrices(self, request: pb.GetPricesRequest, context) -> pb.GetPricesResponse:
        location = self._key(request.location_gln, "location_gln", gln_field, "gln")
        if not 1 <= len(request.lines) <= MAX_LINES:
            raise _bad("lines", f"1 to {MAX_LINES} lines")
        at = self._at(request.time, request.HasField("time"))
        lines, totals = [], {}
        for n, wanted in enumerate(request.lines):
            gtin = self._key(wanted.gtin, f"lines[{n}].gtin", gtin_field, "gtin")
            answer = self._line(gtin, location, at, self._quantity(wanted.quantity, f"lines[{n}].quantity"))
            if answer is None:
                lines.append(pb.PricedLine(price=pb.Price(gtin=gtin, location_gln=location)))
                continue
            line = answer.line
            lines.append(line)
            currency = line.line_total.currency_code
            totals[currency] = totals.get(currency, 0) + line.line_total.amount_minor
        response = pb.GetPricesResponse(lines=lines)
        if len(totals) == 1:
            (currency, amount), = totals.items()
            response.total.CopyFrom(money(currency, amount))
        return response

    async def ListPrices(self, request: pb.ListPricesRequest, context) -> pb.ListPricesResponse:
        size = _page_size(request.page_size)
        after = _page_token(request.page_token, 2) if request.page_token else ["", ""]
        conditions, values = ["(gtin, location_gln) > (%s, %s)"], list(after)
        if request.location_gln:
            conditions.append("location_gln = %s")
            values.append(gln_field(request.location_gln, "location_gln"))
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(
                f"SELECT gtin, location_gln, record FROM price_book WHERE {' AND '.join(conditions)} "
                "ORDER BY gtin, location_gln LIMIT %s", (*values, size + 1),
            )).fetchall()
        token = base64.urlsafe_b64encode(f"{rows[size - 1][0]}/{rows[size - 1][1]}".encode()).decode() if len(rows) > size else ""
        return pb.ListPricesResponse(prices=[_price(st.PriceRecord.FromString(r[2])) for r in rows[:size]], next_page_token=token)

    async def ListPriceHistory(self, request: pb.ListPriceHistoryRequest, context) -> pb.ListPriceHistoryResponse:
        gtin = gtin_field(request.gtin, "gtin")
        location = gln_field(request.location_gln, "location_gln")
        size = _page_size(request.page_size)
        before = [2**62, 0]
        if request.page_token:
            try:
                before = [int(v) for v in _page_token(request.page_token, 2)]
            except ValueError:
                raise _bad("page_token", "not one this service issued") from None
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(
                "SELECT height, sequence, entry, extract(epoch FROM block_time)::bigint FROM price_events "
                "WHERE gtin = %s AND location_gln = %s AND (height, sequence) < (%s, %s) "
                "ORDER BY height DESC, sequence DESC LIMIT %s", (gtin, location, *before, size + 1),
            )).fetchall()
        token = base64.urlsafe_b64encode(f"{rows[size - 1][0]}/{rows[size - 1][1]}".encode()).decode() if len(rows) > size else ""
        return pb.ListPriceHistoryResponse(
            events=[price_event(h, n, st.PriceLogEntry.FromString(e), at) for h, n, e, at in rows[:size]], next_page_token=token,
        )

    # --- writes through the ledger ----------------------------------------------------------------

    def _change(self, change: pb.PriceChange, now: int) -> txpb.ChangePrice:
        violations = []
        gtin = gtin_field(change.gtin, "change.gtin")
        location = gln_field(change.location_gln, "change.location_gln")
        currency = change.amount.currency_code
        if currency not in CURRENCY_MINOR_UNITS:
            violations.append(FieldViolation("change.amount.currency_code", "an ISO 4217 currency, e.g. EUR"))
        if not 0 < change.amount.amount_minor <= MAX_AMOUNT_MINOR:
            violations.append(FieldViolation("change.amount.amount_minor", f"1 to {MAX_AMOUNT_MINOR} minor units"))
        if change.unit_cost.currency_code != currency:
            violations.append(FieldViolation("change.unit_cost.currency_code", "the amount's currency"))
        if not 0 <= change.unit_cost.amount_minor <= MAX_AMOUNT_MINOR:
            violations.append(FieldViolation("change.unit_cost.amount_minor", f"0 to {MAX_AMOUNT_MINOR} minor units"))
        if len(change.reason) > 512:
            violations.append(FieldViolation("change.reason", "at most 512 characters"))
        if change.HasField("valid_until") and change.valid_until.seconds <= now:
            violations.append(FieldViolation("change.valid_until", "after the change takes effect"))
        if violations:
            raise InvalidArgument("the price change is invalid", field_violations=violations)
        return txpb.ChangePrice(
            gtin=gtin, location_gln=location, price=txpb.Money(currency_code=currency, amount_minor=change.amount.amount_minor),
            unit_cost=txpb.Money(currency_code=currency, amount_minor=change.unit_cost.amount_minor), reason=change.reason,
            valid_until_unix_s=change.valid_until.seconds if change.HasField("valid_until") else 0,
        )

    async def _known(self, gtin: str, location: str) -> None:
        """Unknown products and locations are the caller's mistake: answered before anything is sent."""
        answer = await call(self.ledger.stub.QueryMany, lpb.QueryManyRequest(keys=[
            lpb.StoreKey(store="products", key=gtin.encode()), lpb.StoreKey(store="locations", key=location.encode()),
        ]), idempotent=True)
        violations = [FieldViolation(f, f"{what} is not registered on the ledger")
                      for f, what, v in zip(("change.gtin", "change.location_gln"), ("the product", "the location"), answer.values)
                      if not v.found]
        if violations:
            raise InvalidArgument("unknown product or location", field_violations=violations)

    async def _replayed(self, request_id: str, method: str) -> tuple[str, bytes] | None:
        return await earlier_write(self.pool, request_id, method)

    async def _commit(self, body: txpb.TransactionBody, request_id: str, method: str, resource: str) -> lpb.TransactionResult:
        try:
            result = await self.ledger.submit(body)
        except LedgerRejected as err:
            raise ledger_error(err) from err
        await remember_write(self.pool, request_id, method, resource, result.tx_hash)
        if not await self.projector.wait_for_height(result.height):
            raise DependencyUnavailable("committed on the ledger, but the price book is behind; read again shortly")
        return result

    async def ProposePriceChange(self, request: pb.ProposePriceChangeRequest, context) -> pb.ProposePriceChangeResponse:
        change = self._change(request.change, int(self.clock()))
        key = f"{change.gtin}/{change.location_gln}"
        if await self._replayed(request.request_id, "ProposePriceChange") is None:
            await self._known(change.gtin, change.location_gln)
            await self._commit(txpb.TransactionBody(change_price=change), request.request_id, "ProposePriceChange", key)
        found = self.book.prices.get((change.gtin, change.location_gln))
        if found is None:
            raise DependencyUnavailable("the price book is behind; read again shortly")
        return pb.ProposePriceChangeResponse(price=_price(found[0]))

    async def SchedulePriceChange(self, request: pb.SchedulePriceChangeRequest, context) -> pb.SchedulePriceChangeResponse:
        now = int(self.clock())
        if not request.request_id:
            raise _bad("request_id", "required: it is the change's id on the ledger")
        if not request.HasField("effective_time") or request.effective_time.seconds <= now:
            raise _bad("effective_time", "in the future")
        change = self._change(request.change, request.effective_time.seconds)
        replayed = await self._replayed(request.request_id, "SchedulePriceChange")
        if replayed is not None:
            answer = await call(self.ledger.stub.GetTransaction, lpb.GetTransactionRequest(tx_hash=replayed[1]), idempotent=True)
            return pb.SchedulePriceChangeResponse(
                change_id=request.request_id, ledger_ref=common_pb2.LedgerRef(height=answer.result.height, tx_hash=replayed[1]))
        await self._known(change.gtin, change.location_gln)
        body = txpb.TransactionBody(schedule_price_change=txpb.SchedulePriceChange(
            change_id=request.request_id, change=change, effective_unix_s=request.effective_time.seconds))
        result = await self._commit(body, request.request_id, "SchedulePriceChange", f"{change.gtin}/{change.location_gln}")
        return pb.SchedulePriceChangeResponse(
            change_id=request.request_id, ledger_ref=common_pb2.LedgerRef(height=result.height, tx_hash=result.tx_hash))

    # --- the stream -------------------------------------------------------------------------------

    async def StreamPriceChanges(self, request: pb.StreamPriceChangesRequest, context):
        if request.from_height < 0 or request.from_sequence < 0:
            raise _bad("from_height" if request.from_height < 0 else "from_sequence", ">= 0")
        if len(request.location_glns) > MAX_STREAM_FILTERS or len(request.gtins) > MAX_STREAM_FILTERS:
            raise _bad("location_glns" if len(request.location_glns) > MAX_STREAM_FILTERS else "gtins", f"at most {MAX_STREAM_FILTERS}")
        locations = frozenset(gln_field(g, f"location_glns[{n}]") for n, g in enumerate(request.location_glns))
        gtins = frozenset(gtin_field(g, f"gtins[{n}]") for n, g in enumerate(request.gtins))
        # The next (height, sequence) to send.
        position = (request.from_height, request.from_sequence) if request.from_height >= 1 else (1, 0)
        while True:
            top = self.projector.height
            if position[0] > top:
                await self.projector.wait_for_height(position[0], timeout_s=30.0)
                continue
            if position[0] >= self.projector.recent_from:
                recent = self.projector.recent
                start = bisect.bisect_left(recent, position, key=lambda item: (item[0], item[1]))
                end = bisect.bisect_right(recent, (top, 2**31), key=lambda item: (item[0], item[1]))
                items = recent[start:end]
            else:
                async with self.pool.connection() as conn:
                    rows = await (await conn.execute(
                        "SELECT height, sequence, entry, extract(epoch FROM block_time)::bigint FROM price_events "
                        "WHERE (height, sequence) >= (%s, %s) AND height <= %s ORDER BY height, sequence LIMIT %s",
                        (*position, top, STREAM_PAGE),
                    )).fetchall()
                items = [(h, n, st.PriceLogEntry.FromString(e), at) for h, n, e, at in rows]
                if len(rows) == STREAM_PAGE:
                    for h, n, entry, at in items:
                        if _matches(entry, locations, gtins):
                            yield pb.StreamPriceChangesResponse(event=price_event(h, n, entry, at))
                    position = (items[-1][0], items[-1][1] + 1)
                    continue
            for item in items:
                if _matches(item[2], locations, gtins):
                    yield item[4] if len(item) > 4 else pb.StreamPriceChangesResponse(event=price_event(*item[:4]))
            position = (top + 1, 0)
