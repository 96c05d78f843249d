"""The pricing service with the real ledger (embedded engine), real gRPC servers and real PostgreSQL:
lookups with their breakdown, bad input answered before anything is sent, guardrails refused by the
ledger, idempotent writes, a scheduled change and a promotion window taking effect through the
stream, a reconnecting stream missing nothing, the 30-day reference price, an AI promotion draft."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from google.protobuf import timestamp_pb2

from shelfproof.common.v1 import common_pb2
from shelfproof.ledger.v1 import ledger_pb2 as lpb
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.pricing.v1 import pricing_pb2 as pb
from shelfproof.runtime.client import call
from shelfproof.pricing.service import PricingService
from shelfproof.runtime.errors import PermissionDenied
from tests.integration.pricing_harness import BRAND, GTINS, OTHER, RETAILER, STORE, STORE_B, WINE, Pricing, body, guardrails

pytestmark = pytest.mark.asyncio

DEADLINE = 10.0


def money(amount: int, currency: str = "EUR") -> common_pb2.Money:
    return common_pb2.Money(currency_code=currency, amount_minor=amount)


def change(amount: int, gtin: str = GTINS[0], cost: int = 500, **extra) -> pb.PriceChange:
    return pb.PriceChange(gtin=gtin, location_gln=STORE, amount=money(amount), unit_cost=money(cost), **extra)


async def nonce(p: Pricing, agent_id: str) -> int:
    answer = await call(p.ledger.Query, lpb.QueryRequest(store="agents", key=agent_id.encode()), idempotent=True)
    return st.AgentRecord.FromString(answer.value).nonce


async def collect(p: Pricing, request: pb.StreamPriceChangesRequest, count: int, timeout_s: float = 20.0) -> list[pb.PriceEvent]:
    events = []
    stream = p.stub.StreamPriceChanges(request)
    try:
        async with asyncio.timeout(timeout_s):
            async for item in stream:
                events.append(item.event)
                if len(events) == count:
                    break
    finally:
        stream.cancel()
    return events


async def test_lookups_writes_and_bad_input(tmp_path, database_dsn):
    async with Pricing(tmp_path, database_dsn) as p:
        await p.set_up_store()
        health = health_pb2_grpc.HealthStub(p.channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service="shelfproof.pricing.v1.PricingService"), timeout=DEADLINE)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        line = (await p.stub.GetPrice(pb.GetPriceRequest(gtin=GTINS[1], location_gln=STORE), timeout=DEADLINE)).line
        assert (line.line_total.amount_minor, line.breakdown.adjustments, line.HasField("reference_price")) == (1_100, [], False)
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await p.stub.GetPrice(pb.GetPriceRequest(gtin=WINE, location_gln=STORE), timeout=DEADLINE)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND

        # Field violations: INVALID_ARGUMENT and no transaction sent (the signer's nonce stays).
        signer = f"{RETAILER}/admin-0"
        before = await nonce(p, signer)
        bad = [
            change(-1), change(2**40), pb.PriceChange(gtin=GTINS[0], location_gln=STORE, amount=money(900, "XXX"), unit_cost=money(1, "XXX")),
            change(900, cost=-5), change(900, gtin="00614141999994"),  # not registered
            pb.PriceChange(gtin=GTINS[0], location_gln="4012345000030", amount=money(900), unit_cost=money(500)),  # unknown GLN
            change(900, gtin="123"), change(900, valid_until=timestamp_pb2.Timestamp(seconds=int(time.time()) - 60)),
        ]
        for request in bad:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await p.stub.ProposePriceChange(pb.ProposePriceChangeRequest(change=request), timeout=DEADLINE)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request
        with pytest.raises(grpc.aio.AioRpcError) as past:
            await p.stub.SchedulePriceChange(pb.SchedulePriceChangeRequest(
                change=change(900), effective_time=timestamp_pb2.Timestamp(seconds=int(time.time()) - 5), request_id="s-past"), timeout=DEADLINE)
        assert past.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert await nonce(p, signer) == before

        # A guardrail: the ledger refuses it (FAILED_PRECONDITION naming the rule and its limit).
        with pytest.raises(grpc.aio.AioRpcError) as guarded:
            await p.stub.ProposePriceChange(pb.ProposePriceChangeRequest(change=change(549)), timeout=DEADLINE)
        assert guarded.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "margin_floor" in guarded.value.details()

        # Idempotent by request_id: the retry sends nothing and answers the same price.
        before = await nonce(p, signer)
        first = await p.stub.ProposePriceChange(pb.ProposePriceChangeRequest(change=change(1_050), request_id="r-1"), timeout=DEADLINE)
        again = await p.stub.ProposePriceChange(pb.ProposePriceChangeRequest(change=change(1_050), request_id="r-1"), timeout=DEADLINE)
        assert first.price == again.price and first.price.amount.amount_minor == 1_050
        assert await nonce(p, signer) == before + 1

        # Lists and history, paged.
        page = await p.stub.ListPrices(pb.ListPricesRequest(page_size=2, location_gln=STORE), timeout=DEADLINE)
        rest = await p.stub.ListPrices(pb.ListPricesRequest(page_size=2, location_gln=STORE, page_token=page.next_page_token), timeout=DEADLINE)
        assert [x.gtin for x in page.prices] + [x.gtin for x in rest.prices] == GTINS and not rest.next_page_token
        history = await p.stub.ListPriceHistory(pb.ListPriceHistoryRequest(gtin=GTINS[0], location_gln=STORE), timeout=DEADLINE)
        assert [e.new_price.amount_minor for e in history.events] == [1_050, 1_000]

        # A basket of up to 1,000 lines; more is refused.
        basket = await p.stub.GetPrices(pb.GetPricesRequest(location_gln=STORE, lines=[
            pb.PriceLine(gtin=GTINS[0], quantity=2), pb.PriceLine(gtin=GTINS[2]), pb.PriceLine(gtin=WINE)]), timeout=DEADLINE)
        assert [l.line_total.amount_minor for l in basket.lines] == [2_100, 1_200, 0] and basket.total.amount_minor == 3_300
        with pytest.raises(grpc.aio.AioRpcError) as oversize:
            await p.stub.GetPrices(pb.GetPricesRequest(location_gln=STORE, lines=[pb.PriceLine(gtin=GTINS[0])] * 1_001), timeout=DEADLINE)
        assert oversize.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_scheduled_change_and_a_promotion_window_take_effect_through_the_stream(tmp_path, database_dsn):
    async with Pricing(tmp_path, database_dsn) as p:
        await p.set_up_store()
        retailer = p.client(f"{RETAILER}/admin-1")
        start = int(time.time()) + 3
        scheduled = await p.stub.SchedulePriceChange(pb.SchedulePriceChangeRequest(
            change=change(1_200, gtin=GTINS[1]), effective_time=timestamp_pb2.Timestamp(seconds=start), request_id="raise-1"), timeout=DEADLINE)
        result = await retailer.submit(body(create_promotion=txpb.CreatePromotion(
            promotion_id="spring", location_gln=STORE, gtins=[GTINS[0]], discount_bps=2_000, start_unix_s=start, end_unix_s=start + 3,
            stacking=txpb.STACKING_MODE_STACK)))
        filtered = pb.StreamPriceChangesRequest(from_height=scheduled.ledger_ref.height, location_glns=[STORE])
        # Scheduled, created, then (at their time) the price set and the window's start and end.
        events = await collect(p, filtered, 5)
        kinds = [(e.kind, e.gtin or e.promotion_id, e.applied) for e in events]
        assert kinds == [
            (pb.PRICE_EVENT_KIND_PRICE_SCHEDULED, GTINS[1], True),
            (pb.PRICE_EVENT_KIND_PROMOTION_CREATED, "spring", True),
            *sorted([(pb.PRICE_EVENT_KIND_PRICE_SET, GTINS[1], True), (pb.PRICE_EVENT_KIND_PROMOTION_START, "spring", True)]),
            (pb.PRICE_EVENT_KIND_PROMOTION_END, "spring", True),
        ]
        assert events[2].block_time.seconds >= start and events[2].height > result.height
        # Inside the window the promotion applied, with its reference price; the scheduled price holds.
        during = timestamp_pb2.Timestamp(seconds=start + 1)
        line = (await p.stub.GetPrice(pb.GetPriceRequest(gtin=GTINS[0], location_gln=STORE, time=during), timeout=DEADLINE)).line
        assert [(a.promotion_id, a.off_minor) for a in line.breakdown.adjustments] == [("spring", 200)]
        # Priced only today: there is no prior price to show as "was".
        assert line.line_total.amount_minor == 800 and not line.HasField("reference_price")
        assert (await p.stub.GetPrice(pb.GetPriceRequest(gtin=GTINS[1], location_gln=STORE), timeout=DEADLINE)).line.line_total.amount_minor == 1_200
        # After the window: the base again.
        assert (await p.stub.GetPrice(pb.GetPriceRequest(gtin=GTINS[0], location_gln=STORE), timeout=DEADLINE)).line.line_total.amount_minor == 1_000
        # A promotion 40 days on shows the lowest price of the 30 days before it (today's 1,000).
        later = start + 40 * 86_400
        await retailer.submit(body(create_promotion=txpb.CreatePromotion(
            promotion_id="autumn", location_gln=STORE, gtins=[GTINS[0]], discount_bps=1_000, start_unix_s=later, end_unix_s=later + 86_400)))
        assert await p.projector.wait_for_height((await retailer.submit(body(change_price=txpb.ChangePrice(
            gtin=GTINS[2], location_gln=STORE, price=txpb.Money(currency_code="EUR", amount_minor=1_250),
            unit_cost=txpb.Money(currency_code="EUR", amount_minor=500))))).height)
        line = (await p.stub.GetPrice(pb.GetPriceRequest(gtin=GTINS[0], location_gln=STORE, time=timestamp_pb2.Timestamp(seconds=later + 60)),
                                      timeout=DEADLINE)).line
        assert (line.line_total.amount_minor, line.reference_price.amount_minor) == (900, 1_000)
        # Another location's filter sees none of it; a GTIN filter sees its product's events only.
        other = await collect(p, pb.StreamPriceChangesRequest(from_height=scheduled.ledger_ref.height, gtins=[GTINS[1]]), 2)
        assert [e.kind for e in other] == [pb.PRICE_EVENT_KIND_PRICE_SCHEDULED, pb.PRICE_EVENT_KIND_PRICE_SET]
        with pytest.raises(asyncio.TimeoutError):
            await collect(p, pb.StreamPriceChangesRequest(from_height=scheduled.ledger_ref.height, location_glns=[STORE_B]), 1, timeout_s=1.0)


async def test_a_stream_reconnecting_mid_change_misses_nothing_and_repeats_nothing(tmp_path, database_dsn):
    async with Pricing(tmp_path, database_dsn) as p:
        await p.set_up_store()
        writer = p.client(f"{RETAILER}/admin-1")

        async def changes(n: int) -> None:
            for k in range(n):
                await writer.submit_many([body(change_price=txpb.ChangePrice(gtin=g, location_gln=STORE, price=txpb.Money(
                    currency_code="EUR", amount_minor=1_000 + 100 * i + k + 1), unit_cost=txpb.Money(currency_code="EUR", amount_minor=500)))
                    for i, g in enumerate(GTINS)])

        writing = asyncio.create_task(changes(8))
        total = 3 + 8 * 3
        seen: list[pb.PriceEvent] = []
        while len(seen) < total:
            # Read a few, hang up (mid-height as often as not), and resume after the last one seen.
            resume = pb.StreamPriceChangesRequest(from_height=seen[-1].height, from_sequence=seen[-1].sequence + 1) if seen \
                else pb.StreamPriceChangesRequest(from_height=1)
            resume.gtins.extend(GTINS)
            seen += await collect(p, resume, min(4, total - len(seen)))
        await writing
        once = await collect(p, pb.StreamPriceChangesRequest(from_height=1, gtins=GTINS), total)
        assert [(e.height, e.sequence) for e in seen] == [(e.height, e.sequence) for e in once]
        assert len({(e.height, e.sequence) for e in seen}) == total
        assert [e.new_price.amount_minor for e in once][-3:] == [1_008, 1_108, 1_208]


async def test_an_ai_promotion_draft_below_the_threshold_applies_itself_and_shows_in_the_breakdown(tmp_path, database_dsn):
    async with Pricing(tmp_path, database_dsn) as p:
        await p.set_up_store(guardrails(auto_apply_discount_below_bps=1_500))
        planner = p.client(f"{RETAILER}/admin-1")
        digest = "ab" * 32
        record = txpb.AiDecisionRecord(model="m", weights_digest=digest, engine="vllm-cpu", engine_version="0", prompt_template_sha256=digest,
                                       json_schema_sha256=digest, prompt_sha256=digest, input_snapshot_sha256=digest, output_sha256=digest)
        now = int(time.time())

        def draft(draft_id: str, bps: int) -> txpb.TransactionBody:
            return body(submit_ai_draft=txpb.SubmitAiDraft(
                draft_id=draft_id, organization_gln=RETAILER, location_gln=STORE, rationale="slow mover", decision_record=record,
                promotion=txpb.CreatePromotion(promotion_id=f"promo-{draft_id}", location_gln=STORE, gtins=[GTINS[2]],
                                               discount_bps=bps, start_unix_s=now - 10, end_unix_s=now + 600)))

        small, big = await planner.submit_many([draft("small", 1_000), draft("big", 2_500)])
        assert await p.projector.wait_for_height(max(small.height, big.height))
        line = (await p.stub.GetPrice(pb.GetPriceRequest(gtin=GTINS[2], location_gln=STORE), timeout=DEADLINE)).line
        # Only the small one took effect; its adjustment links the draft (and so its decision record).
        assert [(a.promotion_id, a.draft_id, a.off_minor) for a in line.breakdown.adjustments] == [("promo-small", "small", 120)]
        assert "promo-big" not in p.projector.book.promotions
        # Text PostgreSQL cannot hold (a NUL in a member's category and reason) does not stop the projection.
        hostile = "00614141123483"
        await p.client(f"{BRAND}/admin-0").submit(body(register_product=txpb.RegisterProduct(gtin=hostile, name="x", category="a\x00b")))
        priced = await planner.submit(body(change_price=txpb.ChangePrice(
            gtin=hostile, location_gln=STORE, price=txpb.Money(currency_code="EUR", amount_minor=999),
            unit_cost=txpb.Money(currency_code="EUR", amount_minor=500), reason="\x00")))
        assert await p.projector.wait_for_height(priced.height)
        assert (await p.stub.GetPrice(pb.GetPriceRequest(gtin=hostile, location_gln=STORE), timeout=DEADLINE)).line.line_total.amount_minor == 999
        # Another organisation's pricing service signing for the retailer's store: refused by the ledger.
        other = PricingService(p.pool, p.client(f"{OTHER}/admin-0"), p.projector)
        with pytest.raises(PermissionDenied):
            await other.ProposePriceChange(pb.ProposePriceChangeRequest(change=change(1_300, gtin=GTINS[2])), None)
        assert (await p.stub.GetPrice(pb.GetPriceRequest(gtin=GTINS[2], location_gln=STORE), timeout=DEADLINE)).line.price.amount.amount_minor == 1_200
