"""Pricing rules under attack on the real state machine: another organisation, overflow, negative and
unknown-currency amounts, inverted windows, oversize lists; every guardrail violated (refused with
its rule and limit, nothing changed) and respected; the schedule carrying out prices and promotion
windows from block time alone, bounded per block and total."""

from __future__ import annotations

import pytest

from shelfproof.ledger.core.app import LedgerApplication
from shelfproof.ledger.core.codes import ResultCode
from shelfproof.ledger.core.rules import pricing
from shelfproof.ledger.core.rules.price_computation import lowest_prior_price
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb

from tests.security.world import BRAND, RETAILER, STORE, STORE2, STORE2_SHOP, T0, GTIN, World, body, eur, gtin

DENIED, INVALID, GUARDRAIL = ResultCode.PERMISSION_DENIED, ResultCode.INVALID_ARGUMENT, ResultCode.GUARDRAIL_VIOLATED
PRECONDITION = ResultCode.FAILED_PRECONDITION
WINE = gtin("061414100017")  # the brand's second product, in category "wine"
STORE_B = "4012345000023"  # a second store of the retailer


@pytest.fixture
def world() -> World:
    w = World().with_goods()
    w.ok(w.agent(BRAND, "admin-0"), body(register_product=txpb.RegisterProduct(gtin=WINE, name="Rioja", category="wine")))
    w.ok(w.agent(RETAILER, "admin-0"), body(register_location=txpb.RegisterLocation(gln=STORE_B, organization_gln=RETAILER, name="Store 2")))
    return w


def change(amount: int, cost: int = 500, *, g: str = GTIN, location: str = STORE, currency: str = "EUR", **extra) -> txpb.ChangePrice:
    return txpb.ChangePrice(gtin=g, location_gln=location, price=txpb.Money(currency_code=currency, amount_minor=amount),
                            unit_cost=txpb.Money(currency_code=currency, amount_minor=cost), **extra)


def price(amount: int, **kw) -> txpb.TransactionBody:
    return body(change_price=change(amount, **kw))


def schedule(change_id: str, at: int, amount: int, **kw) -> txpb.TransactionBody:
    return body(schedule_price_change=txpb.SchedulePriceChange(change_id=change_id, change=change(amount, **kw), effective_unix_s=at))


def promotion(pid: str = "p1", start: int = T0, end: int = T0 + 86_400, **terms) -> txpb.TransactionBody:
    terms.setdefault("gtins", [GTIN])
    if not {"discount_bps", "amount_off_minor", "fixed_price_minor", "buy_quantity"} & set(terms):
        terms["discount_bps"] = 1_000
    return body(create_promotion=txpb.CreatePromotion(promotion_id=pid, location_gln=STORE, start_unix_s=start, end_unix_s=end, **terms))


def current(world: World, g: str = GTIN, location: str = STORE) -> st.PriceRecord:
    return world.read("prices", f"{g}/{location}", st.PriceRecord)


def promo(world: World, pid: str) -> st.PromotionRecord:
    return world.read("promotions", pid, st.PromotionRecord)


def events(world: World, height: int | None = None) -> list[st.PriceLogEntry]:
    """The price log of a height (the latest by default)."""
    height = height or world.app.height
    header = world.read("price_log", f"{height:012d}", st.PriceLogHeight)
    return [world.read("price_log", f"{height:012d}/{n:06d}", st.PriceLogEntry) for n in range(header.entries if header else 0)]


def at(world: World) -> int:
    """The next block's time (World blocks are T0 + height unless told)."""
    return T0 + world.app.height + 1


def ok_at(world: World, time_s: int, signer, *bodies) -> None:
    world.sync_nonce(signer)
    assert world.block([signer.sign(b) for b in bodies], time_s=time_s) == [0] * len(bodies)


def refused_with(world: World, signer, b, code, *, says: str, time_s: int | None = None) -> None:
    raw = world.sync_nonce(signer).sign(b)
    before = world.snapshot()
    response = world.app.finalize_block(_request(world, raw, time_s))
    world.app.commit()
    result = response.tx_results[0]
    assert (result.code, says in result.log) == (code, True), result.log
    assert world.snapshot() == before


def _request(world, raw, time_s):
    from google.protobuf import timestamp_pb2
    from tendermint.abci import types_pb2 as abci
    height = world.app.height + 1
    return abci.RequestFinalizeBlock(txs=[raw], height=height, time=timestamp_pb2.Timestamp(seconds=time_s or T0 + height))


# --- scope: only the owner of a location --------------------------------------------------------


def test_another_organisation_cannot_price_promote_schedule_end_or_redeem_at_a_retailers_store(world):
    retailer, other = world.agent(RETAILER, "admin-0"), world.agent(STORE2, "admin-0")
    world.ok(retailer, promotion("mine"))
    world.refused(other, schedule("c1", at(world) + 100, 1_100), DENIED)
    world.refused(other, body(end_promotion=txpb.EndPromotion(promotion_id="mine")), DENIED)
    world.refused(other, body(record_promotion_redemptions=txpb.RecordPromotionRedemptions(
        redemptions=[txpb.PromotionRedemption(promotion_id="mine", units=10**6)])), DENIED)
    # A promotion of its own that names the retailer's store as a further location.
    world.ok(other, world.price(STORE2_SHOP), world.policy(STORE2))
    sneaky = body(create_promotion=txpb.CreatePromotion(
        promotion_id="sneaky", location_gln=STORE2_SHOP, location_glns=[STORE], gtins=[GTIN], discount_bps=500,
        start_unix_s=T0, end_unix_s=T0 + 600))
    world.refused(other, sneaky, DENIED)
    # A guardrail policy whose override names another organisation's store.
    world.refused(other, world.policy(STORE2, overrides=[txpb.GuardrailOverride(location_gln=STORE, max_discount_bps=9_000)]), DENIED)


# --- bad input: refused at the boundary or by the rule, nothing written ------------------------------


@pytest.mark.parametrize("bad", [
    price(1_000, currency="XXX"), price(1_000, currency="eur"), price(1_000, currency="EURO"),
    price(2**62), price(-1), price(1_000, cost=-5), price(0),
    body(change_price=txpb.ChangePrice(gtin=GTIN, location_gln=STORE, price=eur(1_000), unit_cost=txpb.Money(currency_code="USD", amount_minor=5))),
    price(1_000, valid_until_unix_s=T0),  # ends before it starts
    promotion(discount_bps=0), promotion(discount_bps=10_000), promotion(discount_bps=-1),
    promotion(start=T0 + 100, end=T0 + 100), promotion(start=T0 + 100, end=T0 + 50),  # window inverted
    promotion(end=T0 + 400 * 86_400),  # longer than a year
    promotion(gtins=[GTIN] * 2), promotion(gtins=[f"0061414{n:06d}" for n in range(101)]),
    promotion(location_glns=[STORE_B] * 40), promotion(gtins=[]),
    promotion(kind=txpb.PROMOTION_KIND_AMOUNT_OFF, amount_off_minor=100),  # no currency for the amount
    promotion(kind=txpb.PROMOTION_KIND_AMOUNT_OFF, amount_off_minor=100, currency_code="ZZZ"),
    promotion(kind=txpb.PROMOTION_KIND_AMOUNT_OFF, amount_off_minor=2**60, currency_code="EUR"),
    promotion(kind=txpb.PROMOTION_KIND_MULTI_BUY, buy_quantity=2, pay_quantity=2),
    promotion(kind=txpb.PROMOTION_KIND_MULTI_BUY, buy_quantity=3, pay_quantity=0),
    promotion(kind=txpb.PROMOTION_KIND_AMOUNT_OFF, amount_off_minor=100, currency_code="EUR", discount_bps=500),  # two kinds' terms
    promotion(budget_units=2**62), promotion(draft_id="forged"),
    schedule("c1", T0, 1_100), schedule("c1", T0 + 2 * 366 * 86_400, 1_100), schedule("bad id!", T0 + 10**5, 1_100),
    body(schedule_price_change=txpb.SchedulePriceChange(change_id="c", change=change(1_000, valid_until_unix_s=T0 + 10**5), effective_unix_s=T0 + 10**5)),
])
def test_bad_pricing_input_is_invalid_and_writes_nothing(world, bad):
    world.refused(world.agent(RETAILER, "admin-0"), bad, INVALID)


@pytest.mark.parametrize("bad_policy", [
    dict(currency_code="XYZ"), dict(price_endings=["9"] * 2), dict(price_endings=["99a"]), dict(price_endings=["1234567"]),
    dict(price_endings=[str(n) for n in range(9)]), dict(min_price_minor=-1), dict(min_price_minor=2**40),
    dict(overrides=[txpb.GuardrailOverride(max_discount_bps=100)]),  # names no scope
    dict(overrides=[txpb.GuardrailOverride(category="wine", max_discount_bps=10_000)]),
    dict(overrides=[txpb.GuardrailOverride(category="wine", margin_floor_bps=-1)]),
    dict(overrides=[txpb.GuardrailOverride(category="wine"), txpb.GuardrailOverride(category="wine")]),
    dict(overrides=[txpb.GuardrailOverride(category=f"c{n}") for n in range(65)]),
    dict(auto_apply_discount_below_bps=20_000),
])
def test_bad_guardrail_policy_is_invalid(world, bad_policy):
    world.refused(world.agent(RETAILER, "admin-0"), world.policy(**bad_policy), INVALID)


# --- each guardrail violated and respected ----------------------------------------------------------


def test_base_price_guardrails_margin_floor_min_price_endings_and_daily_change(world):
    retailer = world.agent(RETAILER, "admin-0")
    world.ok(retailer, world.policy(min_price_minor=600, max_price_change_bps_per_day=2_000, overrides=[
        txpb.GuardrailOverride(category="wine", price_endings=["99", "95"]),
        txpb.GuardrailOverride(category="wine", location_gln=STORE_B, min_price_minor=2_000),
    ]))
    refused_with(world, retailer, price(549), GUARDRAIL, says="margin_floor: price 549 is below cost 500 plus 1000 bps")
    refused_with(world, retailer, price(590, cost=100, g=WINE), GUARDRAIL, says="min_price: price 590 is below the minimum of 600")
    refused_with(world, retailer, price(1_000, g=WINE), GUARDRAIL, says="price_endings: price 1000 does not end in 99 or 95")
    world.ok(retailer, price(999, g=WINE))
    refused_with(world, retailer, price(1_999, g=WINE, location=STORE_B), GUARDRAIL, says="min_price: price 1999 is below the minimum of 2000")
    world.ok(retailer, price(2_095, g=WINE, location=STORE_B))
    # The day's opening price bounds every change that day (1,000 ± 20 %), whatever steps lead there.
    world.ok(retailer, price(1_150))
    refused_with(world, retailer, price(1_250), GUARDRAIL, says="max_change_per_day: change from 1000 to 1250 exceeds 2000 bps today")
    world.ok(retailer, price(1_200))
    # Another currency at a location priced in EUR is refused, not mixed in.
    world.refused(retailer, price(1_000, currency="USD"), INVALID)  # the policy is in EUR
    assert current(world).price.amount_minor == 1_200


def test_promotion_guardrails_each_kind_violated_and_respected(world):
    retailer = world.agent(RETAILER, "admin-0")
    world.ok(retailer, world.policy(min_price_minor=750, price_endings=["0", "5", "9"]), price(2_500, cost=2_000, g=WINE))
    refused_with(world, retailer, promotion("deep", discount_bps=3_500), GUARDRAIL, says="max_discount: 3500 bps off exceeds the maximum of 3000 bps")
    refused_with(world, retailer, promotion("low", discount_bps=3_000), GUARDRAIL, says="min_price: 700 per unit is below the minimum of 750")
    fixed = dict(kind=txpb.PROMOTION_KIND_FIXED_PRICE, currency_code="EUR")
    refused_with(world, retailer, promotion("fixed", fixed_price_minor=648, **fixed), GUARDRAIL, says="max_discount: 3520 bps")
    refused_with(world, retailer, promotion("ending", fixed_price_minor=901, **fixed), GUARDRAIL, says="price_endings: fixed price 901")
    multi = dict(kind=txpb.PROMOTION_KIND_MULTI_BUY)
    refused_with(world, retailer, promotion("2for1", buy_quantity=2, pay_quantity=1, **multi), GUARDRAIL, says="max_discount: 5000 bps")
    refused_with(world, retailer, promotion("3for2", buy_quantity=3, pay_quantity=2, **multi), GUARDRAIL, says="max_discount: 3333 bps")
    refused_with(world, retailer, promotion("off", gtins=[WINE], kind=txpb.PROMOTION_KIND_AMOUNT_OFF, amount_off_minor=400, currency_code="EUR"),
                 GUARDRAIL, says="margin_floor: 2100 per unit is below cost 2000 plus 1000 bps")
    world.ok(retailer,
             promotion("pct", discount_bps=2_500),
             promotion("fix", fixed_price_minor=899, **fixed),
             promotion("4for3", buy_quantity=4, pay_quantity=3, **multi),
             promotion("amt", gtins=[WINE], kind=txpb.PROMOTION_KIND_AMOUNT_OFF, amount_off_minor=250, currency_code="EUR"))
    assert promo(world, "pct").status == st.PROMOTION_STATUS_ACTIVE  # its window had started
    # A category promotion: the category's discount limit is checked without listing its products.
    world.ok(retailer, world.policy(overrides=[txpb.GuardrailOverride(category="wine", max_discount_bps=1_000)]))
    refused_with(world, retailer, promotion("wine", gtins=[], categories=["wine"], discount_bps=1_500), GUARDRAIL,
                 says="category wine at 4012345000016: max_discount: 1500 bps exceeds 1000 bps")
    world.ok(retailer, promotion("wine", gtins=[], categories=["wine"], discount_bps=1_000))
    # A product with no price at a location it names cannot be promoted there.
    world.refused(retailer, promotion("nowine", gtins=[WINE], location_glns=[STORE_B]), PRECONDITION)


# --- the schedule: from block time alone -------------------------------------------------------------


def test_a_scheduled_change_takes_effect_at_its_time_and_is_checked_again_then(world):
    retailer = world.agent(RETAILER, "admin-0")
    due = T0 + 1_000
    world.ok(retailer, schedule("raise", due, 1_100), schedule("late", due + 500, 1_450))
    world.refused(retailer, schedule("raise", due, 1_050), ResultCode.ALREADY_EXISTS)
    assert world.block([], time_s=due - 1) == [] and current(world).price.amount_minor == 1_000
    world.block([], time_s=due + 3)  # the first block at or after its time
    record = current(world)
    assert (record.price.amount_minor, record.effective_unix_s, record.change_id) == (1_100, due, "raise")
    assert [(e.kind, e.change_id, e.applied, e.old_price_minor, e.new_price_minor) for e in events(world)] == [
        (st.PRICE_EVENT_KIND_PRICE_SET, "raise", True, 1_000, 1_100)]
    # Due the same day: 1,450 is +45 % over the day's opening 1,000 (the limit is 50 %)... then a
    # tighter policy arrives before it falls due: the change is refused then, with the rule, and the
    # price stays.
    ok_at(world, due + 10, retailer, world.policy(max_price_change_bps_per_day=2_000))
    world.block([], time_s=due + 600)
    (refused,) = events(world)
    assert (refused.change_id, refused.applied) == ("late", False) and refused.reason.startswith("max_change_per_day: ")
    assert current(world).price.amount_minor == 1_100
    assert list(world.read("price_schedule", f"pending/{GTIN}/{STORE}", st.PendingChanges).due_change_ids) == []
    # Processed once: later blocks do not run it again.
    world.block([], time_s=due + 700)
    assert events(world) == []


def test_a_price_with_an_end_leaves_the_book_at_its_end(world):
    retailer = world.agent(RETAILER, "admin-0")
    world.ok(retailer, price(1_100, valid_until_unix_s=T0 + 500))
    world.block([], time_s=T0 + 501)
    assert [(e.kind, e.applied, e.old_price_minor) for e in events(world)] == [(st.PRICE_EVENT_KIND_PRICE_END, True, 1_100)]
    assert pricing.price_in_effect(current(world), T0 + 501) is None


def test_promotion_windows_open_and_close_with_block_time_and_a_changed_cost_refuses_the_start(world):
    retailer = world.agent(RETAILER, "admin-0")
    start = T0 + 1_000
    world.ok(retailer, promotion("later", start=start, end=start + 600, discount_bps=3_000),
             promotion("doomed", start=start + 100, end=start + 600, discount_bps=3_000))
    assert promo(world, "later").status == st.PROMOTION_STATUS_SCHEDULED
    world.block([], time_s=start)
    assert promo(world, "later").status == st.PROMOTION_STATUS_ACTIVE
    # The unit cost rises: 30 % off 1,000 is now below cost 650 + 10 %; the second one never starts.
    ok_at(world, start + 50, retailer, price(1_000, cost=650))
    world.block([], time_s=start + 100)
    doomed = promo(world, "doomed")
    assert doomed.status == st.PROMOTION_STATUS_REFUSED and "margin_floor: 700 per unit" in doomed.end_reason
    assert [(e.kind, e.promotion_id, e.applied) for e in events(world)] == [(st.PRICE_EVENT_KIND_PROMOTION_START, "doomed", False)]
    world.block([], time_s=start + 600)
    assert [(e.kind, e.promotion_id) for e in events(world)] == [(st.PRICE_EVENT_KIND_PROMOTION_END, "later")]
    later = promo(world, "later")
    assert (later.status, later.end_reason, later.ended_unix_s) == (st.PROMOTION_STATUS_ENDED, "window closed", start + 600)


def test_a_budget_running_out_ends_the_promotion(world):
    retailer = world.agent(RETAILER, "admin-0")
    world.ok(retailer, promotion("budget", budget_units=10))
    redeem = lambda units: body(record_promotion_redemptions=txpb.RecordPromotionRedemptions(
        redemptions=[txpb.PromotionRedemption(promotion_id="budget", units=units)]))
    world.ok(retailer, redeem(6))
    assert promo(world, "budget").status == st.PROMOTION_STATUS_ACTIVE
    world.ok(retailer, redeem(4))
    ended = promo(world, "budget")
    assert (ended.status, ended.units_redeemed, ended.end_reason) == (st.PROMOTION_STATUS_ENDED, 10, "budget spent")
    # A money budget in the promotion's currency; a discount for one without a currency is refused.
    world.ok(retailer, promotion("money", budget_minor=500, currency_code="EUR"))
    world.ok(retailer, body(record_promotion_redemptions=txpb.RecordPromotionRedemptions(
        redemptions=[txpb.PromotionRedemption(promotion_id="money", units=3, discount_minor=300),
                     txpb.PromotionRedemption(promotion_id="money", units=2, discount_minor=200)])))
    assert promo(world, "money").status == st.PROMOTION_STATUS_ENDED
    world.ok(retailer, promotion("nocur"))
    world.refused(retailer, body(record_promotion_redemptions=txpb.RecordPromotionRedemptions(
        redemptions=[txpb.PromotionRedemption(promotion_id="nocur", discount_minor=1)])), INVALID)
    # Saturating counters: no overflow however often a point of sale reports.
    world.ok(retailer, *[redeem(10**6) for _ in range(3)])
    assert promo(world, "budget").units_redeemed == 10 + 3 * 10**6


def test_the_owner_ends_a_promotion_once(world):
    retailer = world.agent(RETAILER, "admin-0")
    world.ok(retailer, promotion("stop"))
    world.ok(retailer, body(end_promotion=txpb.EndPromotion(promotion_id="stop", reason="sold out")))
    assert promo(world, "stop").status == st.PROMOTION_STATUS_ENDED
    world.refused(retailer, body(end_promotion=txpb.EndPromotion(promotion_id="stop")), PRECONDITION)
    world.refused(retailer, body(end_promotion=txpb.EndPromotion(promotion_id="nope")), ResultCode.NOT_FOUND)


def test_the_schedule_is_bounded_per_block_and_the_rest_follows(world):
    retailer = world.agent(RETAILER, "admin-0")
    due = T0 + 5_000
    world.ok(retailer, *[promotion(f"p{n:03d}", start=due, end=due + 10**5) for n in range(pricing.SCHEDULE_BATCH + 20)])
    world.block([], time_s=due)
    first = events(world)
    world.block([], time_s=due + 1)
    second = events(world)
    assert (len(first), len(second)) == (pricing.SCHEDULE_BATCH, 20)
    assert {e.kind for e in first + second} == {st.PRICE_EVENT_KIND_PROMOTION_START}
    assert all(promo(world, f"p{n:03d}").status == st.PROMOTION_STATUS_ACTIVE for n in range(pricing.SCHEDULE_BATCH + 20))


def test_a_schedule_entry_that_raises_is_refused_alone_and_the_block_goes_on(world, monkeypatch):
    retailer = world.agent(RETAILER, "admin-0")
    original = pricing._activate

    def fragile(state, entry, height, block_time):
        if entry.promotion_id == "bomb":
            state.set("promotions", b"half-written", b"x")  # discarded with the entry
            raise ZeroDivisionError("a bug an entry reaches")
        return original(state, entry, height, block_time)

    monkeypatch.setattr(pricing, "_activate", fragile)
    world.ok(retailer, promotion("bomb", start=T0 + 900, end=T0 + 2_000), promotion("fine", start=T0 + 900, end=T0 + 2_000))
    world.sync_nonce(retailer)
    assert world.block([retailer.sign(price(1_050))], time_s=T0 + 900) == [0]
    # The schedule first (in key order), then the block's transaction.
    assert [(e.kind, e.promotion_id, e.applied, e.reason) for e in events(world)] == [
        (st.PRICE_EVENT_KIND_PROMOTION_START, "bomb", False, "internal error"),
        (st.PRICE_EVENT_KIND_PROMOTION_START, "fine", True, ""),
        (st.PRICE_EVENT_KIND_PRICE_SET, "", True, ""),
    ]
    assert promo(world, "fine").status == st.PROMOTION_STATUS_ACTIVE and world.read("promotions", "half-written", st.PromotionRecord) is None


def test_two_nodes_fed_the_same_blocks_run_the_same_schedule():
    from google.protobuf import json_format, timestamp_pb2
    from tendermint.abci import types_pb2 as abci

    world = World()
    twin = LedgerApplication(None)
    twin.init_chain(abci.RequestInitChain(chain_id="shelfproof-dev", app_state_bytes=json_format.MessageToJson(world.genesis.state).encode()))
    sent: list[tuple[list[bytes], int]] = []
    original = world.block

    def both(txs, time_s=None):
        time_s = time_s or T0 + world.app.height + 1
        sent.append((list(txs), time_s))
        return original(txs, time_s)

    world.block = both
    world.with_goods()
    retailer = world.agent(RETAILER, "admin-0")
    world.ok(retailer, schedule("c", T0 + 500, 1_200), promotion("w", start=T0 + 400, end=T0 + 800, discount_bps=2_000))
    for t in (T0 + 400, T0 + 500, T0 + 800):
        world.block([], time_s=t)
    for height, (txs, time_s) in enumerate(sent, start=1):
        twin.finalize_block(abci.RequestFinalizeBlock(txs=txs, height=height, time=timestamp_pb2.Timestamp(seconds=time_s)))
        twin.commit()
    assert twin.app_hash == world.app.app_hash and current(world).price.amount_minor == 1_200


# --- AI promotion drafts ---------------------------------------------------------------------------


def test_an_ai_promotion_draft_below_the_threshold_applies_itself_and_above_waits_for_a_person(world):
    retailer, planner = world.agent(RETAILER, "admin-0"), world.agent(RETAILER, "admin-1")
    world.ok(retailer, world.policy(auto_apply_discount_below_bps=1_500))
    world.ok(planner, world.promotion_draft("small", 1_000))
    small = world.read("drafts", "small", st.DraftRecord)
    assert small.status == st.DRAFT_STATUS_APPROVED
    assert promo(world, "promo-small").promotion.draft_id == "small"
    world.ok(planner, world.promotion_draft("big", 2_000))
    assert world.read("drafts", "big", st.DraftRecord).status == st.DRAFT_STATUS_PENDING
    assert promo(world, "promo-big") is None
    world.ok(world.agent(RETAILER, "person-0"), world.approve("big"))
    assert promo(world, "promo-big").status == st.PROMOTION_STATUS_ACTIVE
    # Outside a guardrail, no draft is accepted at all (auto or not).
    world.refused(planner, world.promotion_draft("deep", 3_500), GUARDRAIL)


def test_the_reference_price_is_the_lowest_of_the_prior_30_days_from_the_ledgers_record(world):
    retailer = world.agent(RETAILER, "admin-0")
    day = 86_400
    world.ok(retailer, world.policy(max_price_change_bps_per_day=5_000))
    for n, amount in enumerate([900, 1_200, 1_500]):
        world.sync_nonce(retailer)
        assert world.block([retailer.sign(price(amount))], time_s=T0 + (n + 1) * 3 * day) == [0]
    record = current(world)
    assert lowest_prior_price(record, T0 + 10 * day) == 900
    assert lowest_prior_price(record, T0 + 34 * day) == 900  # 900 closed day 3, the window's opening price
    assert lowest_prior_price(record, T0 + 37 * day) == 1_200


def test_the_schedule_catches_up_after_an_idle_chain_and_keeps_no_carried_out_entries(world):
    """The schedule's own per-minute index (the bucketed state has no key order): an entry due later in
    a minute the cursor already passed rewinds it; a block after an idle stretch walks at most
    MAX_MINUTES_PER_BLOCK minutes and the next blocks catch up; nothing carried out stays in the store."""
    retailer = world.agent(RETAILER, "admin-0")
    far = 10**7
    a = (T0 + 3 * 86_400) // 60 * 60 + 10  # ten seconds into a minute
    ok_at(world, T0 + 1_000, retailer, promotion("a", start=a, end=a + far))
    world.block([], time_s=a)
    assert promo(world, "a").status == st.PROMOTION_STATUS_ACTIVE
    # later in the same minute: the cursor has moved past it
    ok_at(world, a + 5, retailer, promotion("b", start=a + 20, end=a + far))
    world.block([], time_s=a + 30)
    assert promo(world, "b").status == st.PROMOTION_STATUS_ACTIVE
    # two more, then a day and a half without blocks
    ok_at(world, a + 40, retailer, promotion("c", start=a + 40_000, end=a + far), promotion("d", start=a + 121_000, end=a + far))
    idle = a + 129_600
    world.block([], time_s=idle)
    assert promo(world, "c").status == st.PROMOTION_STATUS_ACTIVE  # minute 666 of 2160
    assert promo(world, "d").status == st.PROMOTION_STATUS_SCHEDULED  # minute 2016: beyond this block's walk
    world.block([], time_s=idle + 1)
    assert promo(world, "d").status == st.PROMOTION_STATUS_ACTIVE
    schedule = world.app.state.dump()["price_schedule"]
    left = [k for k in schedule if k[:1].isdigit() or k.startswith(b"slot/")]
    # only what is still due: the four promotions' ends, each an entry and a slot
    assert len(left) <= 8 and all(int(k.split(b"/")[-1] if k.startswith(b"slot/") else k[:12]) * (60 if k.startswith(b"slot/") else 1) >= a + far - 60 for k in left), left
