"""The lookup cache of the pricing service never answers stale: a promotion's start and end, a price's
end, midnight (the reference window) and any change to the book each end a cached line. (The real
service, projector and ledger are in tests/integration/test_pricing_service.py.)"""

from __future__ import annotations

import asyncio

import pytest

from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.pricing.projector import PriceBook
from shelfproof.pricing.service import PricingService
from shelfproof.pricing.v1 import pricing_pb2 as pb
from shelfproof.runtime.errors import InvalidArgument, NotFound

GTIN, STORE, ORG = "00614141123452", "4012345000016", "4012345000009"
T = 1_780_000_000 // 86_400 * 86_400 + 3_600  # 01:00


class Book:
    def __init__(self) -> None:
        self.book = PriceBook()


def _service(now: list[int]) -> tuple[PricingService, PriceBook]:
    holder = Book()
    service = PricingService(None, None, holder, clock=lambda: now[0])
    return service, holder.book


def _price(amount: int, at: int, until: int = 0) -> st.PriceLogEntry:
    record = st.PriceRecord(gtin=GTIN, location_gln=STORE, price=txpb.Money(currency_code="EUR", amount_minor=amount),
                            unit_cost=txpb.Money(currency_code="EUR", amount_minor=100), effective_unix_s=at, valid_until_unix_s=until)
    return st.PriceLogEntry(kind=st.PRICE_EVENT_KIND_PRICE_SET, applied=True, gtin=GTIN, location_gln=STORE, price=record,
                            organization_gln=ORG, category="pantry")


def _promotion(pid: str, start: int, end: int, bps: int = 1_000, status=st.PROMOTION_STATUS_SCHEDULED) -> st.PriceLogEntry:
    return st.PriceLogEntry(kind=st.PRICE_EVENT_KIND_PROMOTION_CREATED, applied=True, promotion=st.PromotionRecord(
        status=status, promotion=txpb.CreatePromotion(promotion_id=pid, location_gln=STORE, gtins=[GTIN], discount_bps=bps,
                                                      start_unix_s=start, end_unix_s=end)))


def _total(service: PricingService) -> int | None:
    try:
        answer = asyncio.run(service.GetPrice(pb.GetPriceRequest(gtin=GTIN, location_gln=STORE), None))
    except NotFound:
        return None
    return answer.line.line_total.amount_minor


def test_cached_lines_end_at_every_boundary_and_on_every_change():
    now = [T]
    service, book = _service(now)
    assert _total(service) is None
    book.apply(_price(1_000, T - 10, until=T + 500))
    book.apply(_promotion("p", T + 100, T + 200))
    assert _total(service) == 1_000
    now[0] = T + 100  # the window opens
    assert _total(service) == 900
    now[0] = T + 199
    assert _total(service) == 900
    now[0] = T + 200  # and closes
    assert _total(service) == 1_000
    book.apply(_promotion("q", T + 250, T + 10_000, bps=2_000, status=st.PROMOTION_STATUS_ACTIVE))
    now[0] = T + 300
    assert _total(service) == 800
    # The owner ends it early: the book changed, so the cached 800 is gone.
    ended = _promotion("q", T + 250, T + 10_000, bps=2_000, status=st.PROMOTION_STATUS_ENDED)
    ended.promotion.ended_unix_s = T + 301
    ended.kind = st.PRICE_EVENT_KIND_PROMOTION_END
    book.apply(ended)
    now[0] = T + 301
    assert _total(service) == 1_000
    now[0] = T + 500  # the price's validity ends
    assert _total(service) is None


def test_the_reference_price_moves_at_midnight():
    now = [T]
    service, book = _service(now)
    book.apply(_price(1_200, T - 86_400 // 2))
    book.apply(_promotion("p", T - 10, T + 3 * 86_400, status=st.PROMOTION_STATUS_ACTIVE))
    line = asyncio.run(service.GetPrice(pb.GetPriceRequest(gtin=GTIN, location_gln=STORE), None)).line
    assert line.line_total.amount_minor == 1_080
    assert service._lines[(GTIN, STORE, 1)][2] == (T // 86_400 + 1) * 86_400  # valid until midnight at most


def test_bad_keys_are_refused_naming_the_request_field_even_when_cached():
    service, _ = _service([T])
    asyncio.run(service.GetPrices(pb.GetPricesRequest(location_gln=STORE, lines=[pb.PriceLine(gtin=GTIN)]), None))
    with pytest.raises(InvalidArgument) as bad:
        asyncio.run(service.GetPrices(pb.GetPricesRequest(location_gln=STORE, lines=[pb.PriceLine(gtin=GTIN), pb.PriceLine(gtin="123")]), None))
    assert bad.value.field_violations[0].field == "lines[1].gtin"
