"""The one price computation: each promotion kind, each stacking mode, the guardrail clamp, guardrail
resolution by specificity, ISO 4217 minor units and the 30-day reference price."""

from __future__ import annotations

import random

import pytest

from shelfproof.ledger.core.rules.price_computation import (
    BPS, CURRENCY_MINOR_UNITS, DAY_S, KEPT_DAYS, Guardrails, compute_line, guardrails_for, lowest_prior_price,
    max_off, price_violation, promotion_violation, record_day, round_half_up,
)
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb

K = txpb
NO_LIMITS = Guardrails(max_discount_bps=BPS - 1)


def promo(pid: str, kind=K.PROMOTION_KIND_PERCENTAGE, stacking=K.STACKING_MODE_STACK, priority=0, **terms) -> txpb.CreatePromotion:
    return txpb.CreatePromotion(promotion_id=pid, kind=kind, stacking=stacking, priority=priority, **terms)


def test_rounding_is_half_up_in_integers():
    assert [round_half_up(n, 2) for n in (1, 2, 3, 5)] == [1, 1, 2, 3]
    assert round_half_up(999 * 1_500, BPS) == 150  # 149.85 → 150
    assert round_half_up(1_000 * 1_250, BPS) == 125
    assert round_half_up(10**18, 3) == 333_333_333_333_333_333  # no float anywhere


def test_iso_4217_minor_units_from_the_table():
    assert CURRENCY_MINOR_UNITS["EUR"] == 2 and CURRENCY_MINOR_UNITS["JPY"] == 0 and CURRENCY_MINOR_UNITS["KWD"] == 3
    assert "XXX" not in CURRENCY_MINOR_UNITS and "eur" not in CURRENCY_MINOR_UNITS


def test_each_promotion_kind():
    pct = compute_line(999, 0, 1, [promo("p", discount_bps=1_500)], None)
    assert (pct.line_minor, pct.adjustments[0].off_minor) == (849, 150)
    off = compute_line(999, 0, 2, [promo("a", K.PROMOTION_KIND_AMOUNT_OFF, amount_off_minor=100)], None)
    assert off.line_minor == 1_798 and off.unit_minor == 899
    fixed = compute_line(999, 0, 1, [promo("f", K.PROMOTION_KIND_FIXED_PRICE, fixed_price_minor=799)], None)
    assert fixed.line_minor == 799
    # A fixed price above the base takes nothing off (a promotion never raises a price).
    assert compute_line(999, 0, 1, [promo("f", K.PROMOTION_KIND_FIXED_PRICE, fixed_price_minor=1_200)], None).line_minor == 999
    three_for_two = promo("m", K.PROMOTION_KIND_MULTI_BUY, buy_quantity=3, pay_quantity=2)
    assert compute_line(300, 0, 3, [three_for_two], None).line_minor == 600
    assert compute_line(300, 0, 7, [three_for_two], None).line_minor == 1_500  # two groups free, one unit paid
    assert compute_line(300, 0, 2, [three_for_two], None).adjustments == ()


def test_stacking_modes():
    ten, twenty = promo("ten", discount_bps=1_000, priority=2), promo("twenty", discount_bps=2_000, priority=1)
    stacked = compute_line(1_000, 0, 1, [twenty, ten], None)
    assert [a.promotion_id for a in stacked.adjustments] == ["ten", "twenty"] and stacked.line_minor == 720
    stop = promo("ten", discount_bps=1_000, priority=2, stacking=K.STACKING_MODE_STOP_AFTER)
    assert compute_line(1_000, 0, 1, [twenty, stop], None).line_minor == 900
    # A stop-after that takes nothing off (a multi-buy on one unit) does not stop the rest.
    idle_stop = promo("m", K.PROMOTION_KIND_MULTI_BUY, K.STACKING_MODE_STOP_AFTER, 9, buy_quantity=3, pay_quantity=2)
    assert compute_line(1_000, 0, 1, [idle_stop, ten], None).line_minor == 900
    # Best only: alone, or the stack, whichever is cheaper.
    best = promo("best", discount_bps=2_500, stacking=K.STACKING_MODE_BEST_ONLY)
    assert compute_line(1_000, 0, 1, [ten, twenty, best], None).line_minor == 720
    deeper = promo("best", discount_bps=3_000, stacking=K.STACKING_MODE_BEST_ONLY)
    result = compute_line(1_000, 0, 1, [ten, twenty, deeper], None)
    assert result.line_minor == 700 and [a.promotion_id for a in result.adjustments] == ["best"]
    # Order is by priority, then id: the same promotions in any order give the same line.
    assert compute_line(1_000, 0, 1, [ten, twenty], None) == compute_line(1_000, 0, 1, [twenty, ten], None)


def test_the_clamp_holds_the_margin_floor_min_price_and_max_discount():
    g = Guardrails(margin_floor_bps=1_000, max_discount_bps=3_000, min_price_minor=0)
    deep = [promo("a", discount_bps=2_500), promo("b", discount_bps=2_500)]
    held = compute_line(1_000, 500, 1, deep, g)
    assert (held.line_minor, held.clamp_rule) == (700, "max_discount")  # 562 stacked, 30 % at most
    by_cost = compute_line(1_000, 680, 1, deep, g)
    assert (by_cost.line_minor, by_cost.clamp_rule) == (748, "margin_floor")
    by_min = compute_line(1_000, 0, 1, deep, Guardrails(min_price_minor=800, max_discount_bps=BPS - 1))
    assert (by_min.line_minor, by_min.clamp_rule, by_min.clamp_minor) == (800, "min_price", 238)
    # No promotion, no clamp: a base price is what its own change was checked to be.
    assert compute_line(500, 680, 1, [], g).line_minor == 500


def test_random_lines_stay_between_the_floor_and_the_base():
    rng = random.Random(12)
    kinds = [K.PROMOTION_KIND_PERCENTAGE, K.PROMOTION_KIND_AMOUNT_OFF, K.PROMOTION_KIND_FIXED_PRICE, K.PROMOTION_KIND_MULTI_BUY]
    for _ in range(2_000):
        base, cost, quantity = rng.randint(1, 10**9), rng.randint(0, 10**9), rng.randint(1, 1_000)
        promotions = []
        for n in range(rng.randint(0, 5)):
            kind = rng.choice(kinds)
            terms = {K.PROMOTION_KIND_PERCENTAGE: {"discount_bps": rng.randint(1, 9_999)},
                     K.PROMOTION_KIND_AMOUNT_OFF: {"amount_off_minor": rng.randint(1, 10**9)},
                     K.PROMOTION_KIND_FIXED_PRICE: {"fixed_price_minor": rng.randint(1, 10**9)},
                     K.PROMOTION_KIND_MULTI_BUY: {"buy_quantity": 3, "pay_quantity": 2}}[kind]
            promotions.append(promo(f"p{n}", kind, rng.choice([1, 2, 3]), rng.randint(-3, 3), **terms))
        g = Guardrails(margin_floor_bps=rng.randint(0, 5_000), max_discount_bps=rng.randint(0, 9_999), min_price_minor=rng.randint(0, 10**6))
        line = compute_line(base, cost, quantity, promotions, g)
        assert 0 <= line.line_minor <= base * quantity
        assert line.line_minor == base * quantity - sum(a.off_minor for a in line.adjustments) + line.clamp_minor
        if line.adjustments:
            assert line.line_minor >= base * quantity - max_off(base * quantity, g.max_discount_bps)


def _policy(**overrides) -> txpb.GuardrailPolicy:
    return txpb.GuardrailPolicy(organization_gln="4012345000009", currency_code="EUR", margin_floor_bps=1_000,
                                max_discount_bps=3_000, max_price_change_bps_per_day=2_000, price_endings=["9"], **overrides)


def test_guardrails_resolve_most_specific_first_field_by_field():
    policy = _policy(overrides=[
        txpb.GuardrailOverride(category="wine", max_discount_bps=1_000, price_endings=["99", "95"]),
        txpb.GuardrailOverride(location_gln="4012345000016", max_discount_bps=5_000, min_price_minor=100),
        txpb.GuardrailOverride(category="wine", location_gln="4012345000016", margin_floor_bps=2_500),
    ])
    org = guardrails_for(policy, "bread", "4012345000023")
    assert (org.max_discount_bps, org.margin_floor_bps, org.price_endings) == (3_000, 1_000, ("9",))
    wine_elsewhere = guardrails_for(policy, "wine", "4012345000023")
    assert (wine_elsewhere.max_discount_bps, wine_elsewhere.price_endings) == (1_000, ("99", "95"))
    store_bread = guardrails_for(policy, "bread", "4012345000016")
    assert (store_bread.max_discount_bps, store_bread.min_price_minor) == (5_000, 100)
    store_wine = guardrails_for(policy, "wine", "4012345000016")
    # Category-and-location sets the floor; the location beats the category on the discount.
    assert (store_wine.margin_floor_bps, store_wine.max_discount_bps, store_wine.min_price_minor) == (2_500, 5_000, 100)
    assert guardrails_for(None, "wine", "4012345000016") is None


def test_price_and_promotion_violations_name_the_rule_and_limit():
    g = guardrails_for(_policy(min_price_minor=300), "", "")
    assert price_violation(549, 500, None, g).startswith("margin_floor: ")
    assert price_violation(299, 0, None, g).startswith("min_price: ") and "300" in price_violation(299, 0, None, g)
    assert price_violation(1_000, 500, None, g).startswith("price_endings: ")
    assert price_violation(1_299, 500, 999, g).startswith("max_change_per_day: ") and "2000 bps" in price_violation(1_299, 500, 999, g)
    assert price_violation(1_189, 500, 999, g) is None
    assert promotion_violation(promo("p", discount_bps=3_100), 1_000, 0, g).startswith("max_discount: ")
    assert promotion_violation(promo("m", K.PROMOTION_KIND_MULTI_BUY, buy_quantity=2, pay_quantity=1), 1_000, 0, g).startswith("max_discount: ")
    assert promotion_violation(promo("f", K.PROMOTION_KIND_FIXED_PRICE, fixed_price_minor=800), 1_000, 0, g).startswith("price_endings: ")
    assert promotion_violation(promo("p", discount_bps=3_000), 1_000, 650, g).startswith("margin_floor: ")
    assert promotion_violation(promo("p", discount_bps=3_000), 1_000, 600, g) is None


def _history(*changes: tuple[int, int]) -> st.PriceRecord:
    record = st.PriceRecord()
    previous = None
    for at, price in changes:
        record_day(record, previous, price, at)
        record.price.amount_minor, previous = price, price
    return record


T = 1_780_000_000 // DAY_S * DAY_S  # midnight


@pytest.mark.parametrize(
    "changes, at, expected",
    [
        ([(T, 1_000)], T + 40 * DAY_S, 1_000),  # unchanged for 40 days
        ([(T, 1_000), (T + 20 * DAY_S, 1_200)], T + 25 * DAY_S, 1_000),  # raised inside the window
        ([(T, 1_000), (T + 3 * DAY_S, 800), (T + 3 * DAY_S + 60, 1_200)], T + 10 * DAY_S, 800),  # low for a minute counts
        ([(T, 800), (T + 2 * DAY_S, 1_200)], T + 33 * DAY_S, 1_200),  # 800 ended 31 days ago: outside
        ([(T, 800), (T + 2 * DAY_S, 1_200)], T + 32 * DAY_S, 800),  # 800 was in effect on the window's first day
        ([(T + 5 * DAY_S, 1_000)], T + 5 * DAY_S + 10, None),  # priced only today: no prior price
    ],
)
def test_lowest_prior_price_over_30_days(changes, at, expected):
    assert lowest_prior_price(_history(*changes), at) == expected


def test_daily_lows_stay_bounded_and_keep_the_carried_close():
    record = _history(*[(T + d * DAY_S, 1_000 + d) for d in range(200)])
    assert len(record.days) <= KEPT_DAYS + 1
    # Window days 169..198; day 169 opened at day 168's close (a day's low counts its opening price).
    assert lowest_prior_price(record, T + 199 * DAY_S) == 1_000 + 168


@pytest.mark.parametrize("base", [249, 1_249, 999, 7, 3_333])
def test_a_percentage_promotion_at_exactly_the_maximum_discount_is_allowed_at_any_price(base):
    """30 % of 1,249 is 374.7, rounded half up to 375 off: the guardrail rounds its limit the same way
    (the demo seed's 30 % promotion on a 2.49 product was refused as "3004 bps off" before)."""
    g = Guardrails(max_discount_bps=3_000)
    assert promotion_violation(promo("p", discount_bps=3_000), base, 0, g) is None
    assert promotion_violation(promo("p", discount_bps=3_001), base * 10_000, 0, g).startswith("max_discount: ")
    line = compute_line(base, 0, 1, [promo("p", discount_bps=3_000)], g)
    assert line.clamp_minor == 0 and line.line_minor == base - round_half_up(base * 3_000, BPS)
