"""The one price computation: currencies, guardrail resolution, promotions and stacking, the guardrail
clamp, and the 30-day reference price. Integers only, with one rounding rule (``round_half_up``), so
the ledger, the pricing service and the tests compute the same minor units from the same records.

Order of a line's computation (``compute_line``): base unit price × quantity → promotions in priority
order (higher first, ties by id) combined by their stacking modes → the guardrail clamp (never below
the minimum price, the margin floor over cost, or the maximum discount off the base) → the unit price
of the line, rounded half up.
"""

from __future__ import annotations

from dataclasses import dataclass

from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb

BPS = 10_000
DAY_S = 86_400
REFERENCE_WINDOW_DAYS = 30
# Days of lows kept per price record: the window and the day of the reduction, plus one.
KEPT_DAYS = REFERENCE_WINDOW_DAYS + 2

# ISO 4217 active codes and their minor units (the number of decimals of the amount in minor units).
# A currency not listed here is refused: a price has to mean the same to every validator.
CURRENCY_MINOR_UNITS: dict[str, int] = {
    **dict.fromkeys(
        "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN BWP BYN BZD CAD CDF "
        "CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL "
        "HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP "
        "MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD "
        "SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD UYU UZS "
        "VES WST XCD YER ZAR ZMW ZWG".split(), 2),
    **dict.fromkeys("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split(), 0),
    **dict.fromkeys("BHD IQD JOD KWD LYD OMR TND".split(), 3),
    "CLF": 4, "UYW": 4,
}


def round_half_up(numerator: int, denominator: int) -> int:
    """numerator / denominator to the nearest integer, halves up (both non-negative, denominator > 0)."""
    return (2 * numerator + denominator) // (2 * denominator)


def ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


# --- guardrails ------------------------------------------------------------------------------------

RULE_MARGIN_FLOOR = "margin_floor"
RULE_MAX_DISCOUNT = "max_discount"
RULE_MAX_CHANGE = "max_change_per_day"
RULE_MIN_PRICE = "min_price"
RULE_PRICE_ENDINGS = "price_endings"


@dataclass(frozen=True)
class Guardrails:
    """The limits in force for one product category at one location."""

    margin_floor_bps: int = 0
    max_discount_bps: int = BPS
    max_price_change_bps_per_day: int = 0
    min_price_minor: int = 0
    price_endings: tuple[str, ...] = ()
    # No daily limit when the organisation has no policy.
    limit_daily_change: bool = True


def guardrails_for(policy: txpb.GuardrailPolicy | None, category: str, location_gln: str) -> Guardrails | None:
    """The organisation's limits with its overrides applied, most specific first, field by field:
    (category and location), (location), (category), then the organisation's own values."""
    if policy is None:
        return None
    values = {
        "margin_floor_bps": policy.margin_floor_bps,
        "max_discount_bps": policy.max_discount_bps,
        "max_price_change_bps_per_day": policy.max_price_change_bps_per_day,
        "min_price_minor": policy.min_price_minor,
    }
    endings = tuple(policy.price_endings)
    ranked = sorted(
        (o for o in policy.overrides
         if o.category in ("", category) and o.location_gln in ("", location_gln) and (o.category or o.location_gln)),
        key=lambda o: (bool(o.location_gln), bool(o.category)),
    )
    for override in ranked:  # least specific first, so the most specific is applied last
        for name in values:
            if override.HasField(name):
                values[name] = getattr(override, name)
        if override.price_endings:
            endings = tuple(override.price_endings)
    return Guardrails(price_endings=endings, **values)


def ending_ok(amount_minor: int, endings: tuple[str, ...]) -> bool:
    return not endings or any(str(amount_minor).endswith(e) for e in endings)


def price_violation(price_minor: int, cost_minor: int, day_open_minor: int | None, g: Guardrails | None) -> str | None:
    """Why a base price breaks a guardrail (the rule and its limit), or None."""
    if g is None:
        return None
    if price_minor * BPS < cost_minor * (BPS + g.margin_floor_bps):
        return f"{RULE_MARGIN_FLOOR}: price {price_minor} is below cost {cost_minor} plus {g.margin_floor_bps} bps"
    if price_minor < g.min_price_minor:
        return f"{RULE_MIN_PRICE}: price {price_minor} is below the minimum of {g.min_price_minor}"
    if not ending_ok(price_minor, g.price_endings):
        return f"{RULE_PRICE_ENDINGS}: price {price_minor} does not end in {' or '.join(g.price_endings)}"
    if day_open_minor is not None and abs(price_minor - day_open_minor) * BPS > day_open_minor * g.max_price_change_bps_per_day:
        return (f"{RULE_MAX_CHANGE}: change from {day_open_minor} to {price_minor} exceeds "
                f"{g.max_price_change_bps_per_day} bps today")
    return None


# --- promotions ------------------------------------------------------------------------------------

KIND_NAMES = {
    txpb.PROMOTION_KIND_PERCENTAGE: "percentage", txpb.PROMOTION_KIND_AMOUNT_OFF: "amount_off",
    txpb.PROMOTION_KIND_FIXED_PRICE: "fixed_price", txpb.PROMOTION_KIND_MULTI_BUY: "multi_buy",
}


def kind_of(p: txpb.CreatePromotion) -> int:
    return p.kind or txpb.PROMOTION_KIND_PERCENTAGE


def stacking_of(p: txpb.CreatePromotion) -> int:
    return p.stacking or txpb.STACKING_MODE_STACK


def locations_of(p: txpb.CreatePromotion) -> list[str]:
    return sorted({p.location_gln, *p.location_glns})


def promotion_order(p: txpb.CreatePromotion) -> tuple[int, str]:
    return (-p.priority, p.promotion_id)


def max_off(base_line: int, max_discount_bps: int) -> int:
    """The most a line may lose to promotions: its maximum discount, rounded as a percentage promotion's
    amount is (half up), so a promotion at exactly the maximum is allowed at any price."""
    return round_half_up(base_line * max_discount_bps, BPS)


def promotion_off(p: txpb.CreatePromotion, current_line: int, quantity: int) -> int:
    """What ``p`` takes off a line now at ``current_line`` for ``quantity`` units (0..current_line)."""
    kind = kind_of(p)
    if kind == txpb.PROMOTION_KIND_PERCENTAGE:
        off = round_half_up(current_line * p.discount_bps, BPS)
    elif kind == txpb.PROMOTION_KIND_AMOUNT_OFF:
        off = p.amount_off_minor * quantity
    elif kind == txpb.PROMOTION_KIND_FIXED_PRICE:
        off = current_line - p.fixed_price_minor * quantity
    elif kind == txpb.PROMOTION_KIND_MULTI_BUY and p.buy_quantity > p.pay_quantity >= 1:
        free = (quantity // p.buy_quantity) * (p.buy_quantity - p.pay_quantity)
        off = round_half_up(current_line * free, quantity)
    else:
        off = 0
    return max(0, min(off, current_line))


@dataclass(frozen=True)
class Adjustment:
    promotion_id: str
    kind: str
    off_minor: int


@dataclass(frozen=True)
class LinePrice:
    unit_base_minor: int
    quantity: int
    base_line_minor: int
    adjustments: tuple[Adjustment, ...] = ()
    # The guardrail that held the line up ("" when none did) and by how much.
    clamp_rule: str = ""
    clamp_minor: int = 0
    line_minor: int = 0
    unit_minor: int = 0
    rounding: str = "half up to the minor unit, per adjustment and for the unit price of the line"


def _stack(promotions: list[txpb.CreatePromotion], base_line: int, quantity: int) -> tuple[int, list[Adjustment]]:
    current, applied = base_line, []
    for p in promotions:
        off = promotion_off(p, current, quantity)
        if off == 0:
            continue  # one that takes nothing off does not stop the rest either
        current -= off
        applied.append(Adjustment(p.promotion_id, KIND_NAMES[kind_of(p)], off))
        if stacking_of(p) == txpb.STACKING_MODE_STOP_AFTER:
            break
    return current, applied


def compute_line(
    unit_base_minor: int,
    unit_cost_minor: int,
    quantity: int,
    promotions: list[txpb.CreatePromotion],
    guardrails: Guardrails | None,
) -> LinePrice:
    """The price of ``quantity`` units given the promotions that apply to them.

    Promotions go in priority order. STACK ones apply on top of each other, a STOP_AFTER one applies
    and ends the walk, a BEST_ONLY one is never combined: the customer gets it alone or the stack,
    whichever is cheaper (the stack on a tie). Then the guardrail clamp: the line never falls below
    the minimum price, the margin floor over cost or the maximum discount off the base, unless the
    base itself is lower (a promotion never raises a price)."""
    quantity = max(quantity, 1)
    base_line = unit_base_minor * quantity
    ordered = sorted(promotions, key=promotion_order)
    line, applied = _stack([p for p in ordered if stacking_of(p) != txpb.STACKING_MODE_BEST_ONLY], base_line, quantity)
    for p in ordered:
        if stacking_of(p) == txpb.STACKING_MODE_BEST_ONLY:
            alone, alone_applied = _stack([p], base_line, quantity)
            if alone < line:
                line, applied = alone, alone_applied
    clamp_rule, clamp = "", 0
    if guardrails is not None and applied:
        floors = {
            RULE_MIN_PRICE: guardrails.min_price_minor * quantity,
            RULE_MARGIN_FLOOR: ceil_div(unit_cost_minor * quantity * (BPS + guardrails.margin_floor_bps), BPS),
            RULE_MAX_DISCOUNT: base_line - max_off(base_line, guardrails.max_discount_bps),
        }
        rule = max(floors, key=lambda r: (floors[r], r))
        floor = min(floors[rule], base_line)
        if line < floor:
            clamp_rule, clamp, line = rule, floor - line, floor
    return LinePrice(
        unit_base_minor, quantity, base_line, tuple(applied), clamp_rule, clamp, line, round_half_up(line, quantity)
    )


def promotion_violation(p: txpb.CreatePromotion, unit_base_minor: int, unit_cost_minor: int, g: Guardrails | None) -> str | None:
    """Why ``p`` on its own breaks a guardrail on a product priced ``unit_base_minor`` (rule and limit)."""
    if g is None:
        return None
    quantity = max(p.buy_quantity, 1) if kind_of(p) == txpb.PROMOTION_KIND_MULTI_BUY else 1
    base_line = unit_base_minor * quantity
    off = promotion_off(p, base_line, quantity)
    line = base_line - off
    if off > max_off(base_line, g.max_discount_bps):
        return f"{RULE_MAX_DISCOUNT}: {off * BPS // max(base_line, 1)} bps off exceeds the maximum of {g.max_discount_bps} bps"
    if line < g.min_price_minor * quantity:
        return f"{RULE_MIN_PRICE}: {round_half_up(line, quantity)} per unit is below the minimum of {g.min_price_minor}"
    if line * BPS < unit_cost_minor * quantity * (BPS + g.margin_floor_bps):
        return (f"{RULE_MARGIN_FLOOR}: {round_half_up(line, quantity)} per unit is below cost {unit_cost_minor} "
                f"plus {g.margin_floor_bps} bps")
    if kind_of(p) == txpb.PROMOTION_KIND_FIXED_PRICE and not ending_ok(p.fixed_price_minor, g.price_endings):
        return f"{RULE_PRICE_ENDINGS}: fixed price {p.fixed_price_minor} does not end in {' or '.join(g.price_endings)}"
    return None


def deepest_discount_bps(p: txpb.CreatePromotion, unit_base_minor: int) -> int:
    """The share of the price ``p`` takes off at most, in basis points (rounded up)."""
    quantity = max(p.buy_quantity, 1) if kind_of(p) == txpb.PROMOTION_KIND_MULTI_BUY else 1
    base_line = unit_base_minor * quantity
    return ceil_div(promotion_off(p, base_line, quantity) * BPS, max(base_line, 1))


def promotion_runs(record: st.PromotionRecord, at_unix_s: int) -> bool:
    """Whether the promotion applies at a time: inside its window, never refused, and not yet ended
    (a promotion whose start the schedule has not reached yet in a backlog counts from its start)."""
    p = record.promotion
    if not p.start_unix_s <= at_unix_s < p.end_unix_s:
        return False
    if record.status == st.PROMOTION_STATUS_ENDED:
        return at_unix_s < record.ended_unix_s
    return record.status in (st.PROMOTION_STATUS_UNSPECIFIED, st.PROMOTION_STATUS_SCHEDULED, st.PROMOTION_STATUS_ACTIVE)


def promotion_covers(p: txpb.CreatePromotion, gtin: str, category: str, location_gln: str, currency: str) -> bool:
    if location_gln not in (p.location_gln, *p.location_glns):
        return False
    if gtin not in p.gtins and not (category and category in p.categories):
        return False
    # Amounts are in one currency: a promotion in another does not apply.
    return not p.currency_code or p.currency_code == currency


# --- the base price at a time, and the 30-day reference ----------------------------------------------


def price_in_effect(record: st.PriceRecord | None, at_unix_s: int) -> int | None:
    if record is None or at_unix_s < record.effective_unix_s:
        return None
    if record.valid_until_unix_s and at_unix_s >= record.valid_until_unix_s:
        return None
    return record.price.amount_minor


def record_day(record: st.PriceRecord, previous_minor: int | None, new_minor: int, at_unix_s: int) -> None:
    """Note a base price change at ``at_unix_s`` in the record's daily lows (at most KEPT_DAYS kept)."""
    day = at_unix_s // DAY_S
    days = list(record.days)
    if days and days[-1].day == day:
        days[-1] = st.PriceDay(day=day, low_minor=min(days[-1].low_minor, new_minor), close_minor=new_minor)
    else:
        low = new_minor if previous_minor is None else min(previous_minor, new_minor)
        days.append(st.PriceDay(day=day, low_minor=low, close_minor=new_minor))
    while days and days[0].day < day - KEPT_DAYS:
        record.carried_minor = days.pop(0).close_minor
    del record.days[:]
    record.days.extend(days)


def lowest_prior_price(record: st.PriceRecord | None, at_unix_s: int) -> int | None:
    """The lowest base price in effect during the REFERENCE_WINDOW_DAYS whole days before the day of
    ``at_unix_s`` (the EU rule on announcing a price reduction), or None if there was none."""
    if record is None:
        return None
    today = at_unix_s // DAY_S
    first = today - REFERENCE_WINDOW_DAYS
    # The price in effect when the window opened: the close of the newest day before it.
    opening = record.carried_minor or None
    if not record.days and record.price.amount_minor and record.effective_unix_s // DAY_S < first:
        opening = record.price.amount_minor  # written before daily lows were kept
    candidates = []
    for d in record.days:
        if d.day < first:
            opening = d.close_minor
        elif d.day < today:
            candidates.append(d.low_minor)
    if opening is not None:
        candidates.append(opening)
    return min(candidates) if candidates else None
