"""Prices, scheduled changes, promotions and the guardrail policy.

Only the organisation whose company prefix a location's GLN carries sets prices and promotions there.
Every base price and every promotion is checked against the guardrails in force for its product's
category at its location (``price_computation.guardrails_for``); a violation is GUARDRAIL_VIOLATED
naming the rule and its limit, and nothing changes. Scheduled changes and promotion windows are
keyed by their due time in the ``price_schedule`` store, listed in the slot of their due minute, and
carried out at the start of the first block at or after it (``run_price_schedule``, at most
SCHEDULE_BATCH entries and MAX_MINUTES_PER_BLOCK slots per block), guardrails checked again then; what each block did is the ``price_log`` record of its height.
"""

from __future__ import annotations

import logging
import re

from shelfproof.ledger.core.codes import ResultCode, TxRejected
from shelfproof.ledger.core.rules.common import (
    BPS,
    TxContext,
    _denied,
    _gln,
    _gtin,
    _guardrail,
    _identifier,
    _invalid,
    _own_gln,
    _policy,
    _require_org,
    _same_org,
    _text,
    gln_owner,
    read,
    write,
)
from shelfproof.ledger.core.rules.price_computation import (
    CURRENCY_MINOR_UNITS,
    deepest_discount_bps,
    guardrails_for,
    kind_of,
    lowest_prior_price,  # noqa: F401 - re-exported for the service and the tests
    price_in_effect,
    price_violation,
    promotion_violation,
    record_day,
)
from shelfproof.ledger.core.state import Overlay
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb

log = logging.getLogger(__name__)

MAX_PENDING_CHANGES = 16
MAX_SCHEDULE_AHEAD_S = 366 * 86_400
MAX_PROMOTION_DAYS = 366
MAX_PROMOTION_GTINS = 100
MAX_PROMOTION_CATEGORIES = 32
MAX_PROMOTION_LOCATIONS = 32
# Products × locations a promotion's guardrails are checked over in one transaction.
MAX_PROMOTION_CHECKS = 1_000
MAX_MULTI_BUY = 100
MAX_OVERRIDES = 64
MAX_ENDINGS = 8
# Schedule entries carried out per block: bounded work; the rest follow in the next blocks.
SCHEDULE_BATCH = 256
# Redemption counters saturate here (they only ever grow).
COUNTER_LIMIT = 2**53
CURSOR_KEY = "~cursor"
MINUTE_S = 60
# Slots (minutes) looked at per block: an idle stretch of the chain is caught up over a few blocks.
MAX_MINUTES_PER_BLOCK = 1_440
_ENDING = re.compile(r"[0-9]{1,6}", re.ASCII)


# --- validation ----------------------------------------------------------------------------------


def _currency(code: str, what: str) -> str:
    if code not in CURRENCY_MINOR_UNITS:
        raise _invalid(f"{what} {code!r} is not an ISO 4217 currency")
    return code


def _money(m: txpb.Money, what: str, currency: str | None = None) -> int:
    _currency(m.currency_code, f"{what}.currency_code")
    if currency and m.currency_code != currency:
        raise _invalid(f"{what} is in {m.currency_code}, the policy is in {currency}")
    if m.amount_minor < 0:
        raise _invalid(f"{what} must not be negative")
    return m.amount_minor


def _category(state: Overlay, gtin: str) -> str:
    product = read(state, "products", gtin, st.ProductRecord)
    if product is None:
        raise TxRejected(ResultCode.NOT_FOUND, f"product {gtin} is not registered")
    return product.product.category


def margin_floor_ok(price_minor: int, cost_minor: int, margin_floor_bps: int) -> bool:
    """The margin floor, in the integers every validator uses (the planner checks with the same)."""
    return price_minor * BPS >= cost_minor * (BPS + margin_floor_bps)


def _price_key(gtin: str, location: str) -> str:
    return f"{gtin}/{location}"


def _due_key(due_unix_s: int, kind: int, subject: str) -> str:
    return f"{due_unix_s:012d}/{kind}/{subject}"


def _slot_key(minute: int) -> str:
    return f"slot/{minute:010d}"


def _schedule(state: Overlay, entry: st.ScheduleEntry, subject: str) -> None:
    key = _due_key(entry.due_unix_s, entry.kind, subject)
    write(state, "price_schedule", key, entry)
    minute = entry.due_unix_s // MINUTE_S
    slot = read(state, "price_schedule", _slot_key(minute), st.ScheduleSlot) or st.ScheduleSlot()
    if key not in slot.keys:
        write(state, "price_schedule", _slot_key(minute), st.ScheduleSlot(keys=sorted([*slot.keys, key])))
    cursor = read(state, "price_schedule", CURSOR_KEY, st.ScheduleCursor)
    if cursor is None or minute < cursor.next_minute:
        write(state, "price_schedule", CURSOR_KEY, st.ScheduleCursor(next_minute=minute))


def log_price_event(state: Overlay, height: int, block_unix_s: int, entry: st.PriceLogEntry) -> None:
    """Append ``entry`` to the height's price log (a counter key, then one key per entry: O(1) per event)."""
    header_key = f"{height:012d}"
    header = read(state, "price_log", header_key, st.PriceLogHeight) or st.PriceLogHeight(height=height, block_unix_s=block_unix_s)
    write(state, "price_log", f"{header_key}/{header.entries:06d}", entry)
    header.entries += 1
    write(state, "price_log", header_key, header)


def _promotion_event(state: Overlay, kind: int, record: st.PromotionRecord, height: int, at_unix_s: int, *, applied: bool = True, reason: str = "") -> None:
    log_price_event(state, height, at_unix_s, st.PriceLogEntry(
        kind=kind, promotion_id=record.promotion.promotion_id, location_gln=record.promotion.location_gln, applied=applied,
        reason=reason, promotion=record, draft_id=record.promotion.draft_id,
        organization_gln=gln_owner(state, record.promotion.location_gln) or "",
    ))


# --- base prices ---------------------------------------------------------------------------------


def _checked_change(state: Overlay, ctx: TxContext, a: txpb.ChangePrice) -> tuple[str, str, st.GuardrailPolicy | None]:
    """The stateless and ownership checks of a price change (now or scheduled)."""
    gtin = _gtin(a.gtin)
    location = _own_gln(state, ctx, a.location_gln, "location")
    _category(state, gtin)
    policy = _policy(state, ctx.signer.organization_gln)
    price = _money(a.price, "price", policy.currency_code if policy else None)
    _money(a.unit_cost, "unit_cost", a.price.currency_code)
    if price == 0:
        raise _invalid("price must be positive")
    _text(a.reason, "reason", 512, required=False)
    return gtin, location, policy


def _apply_price(
    state: Overlay, org: str, a: txpb.ChangePrice, at_unix_s: int, height: int, block_unix_s: int, *, change_id: str = "",
    draft_id: str = "",
) -> tuple[int | None, int]:
    """Make ``a`` the base price from ``at_unix_s`` on, inside the guardrails; (old, new) price."""
    gtin, location = a.gtin, a.location_gln
    if a.valid_until_unix_s and a.valid_until_unix_s <= at_unix_s:
        raise _invalid("valid_until_unix_s must be after the price takes effect")
    key = _price_key(gtin, location)
    current = read(state, "prices", key, st.PriceRecord)
    if current is not None and current.price.currency_code != a.price.currency_code:
        raise TxRejected(
            ResultCode.FAILED_PRECONDITION,
            f"{location} prices {gtin} in {current.price.currency_code}, not {a.price.currency_code}",
        )
    price, cost = a.price.amount_minor, a.unit_cost.amount_minor
    day = at_unix_s // 86_400
    previous = price_in_effect(current, at_unix_s)
    day_open = None
    if current is not None and previous is not None:
        day_open = current.day_open_minor if current.day == day else previous
    category = _category(state, gtin)
    guardrails = guardrails_for(_policy(state, org), category, location)
    violation = price_violation(price, cost, day_open, guardrails)
    if violation:
        raise _guardrail(violation)
    record = st.PriceRecord(
        gtin=gtin, location_gln=location, price=a.price, unit_cost=a.unit_cost, height=height, day=day,
        day_open_minor=price if day_open is None else day_open, effective_unix_s=at_unix_s,
        valid_until_unix_s=a.valid_until_unix_s, reason=a.reason, change_id=change_id, draft_id=draft_id,
    )
    if current is not None:
        record.days.extend(current.days)
        record.carried_minor = current.carried_minor
    record_day(record, previous, price, at_unix_s)
    write(state, "prices", key, record)
    log_price_event(state, height, block_unix_s, st.PriceLogEntry(
        kind=st.PRICE_EVENT_KIND_PRICE_SET, gtin=gtin, location_gln=location, category=category, change_id=change_id,
        applied=True, old_price_minor=previous or 0, new_price_minor=price, due_unix_s=at_unix_s, price=record, draft_id=draft_id,
        organization_gln=org,
    ))
    if a.valid_until_unix_s:
        _schedule(state, st.ScheduleEntry(
            kind=st.SCHEDULE_KIND_PRICE_END, due_unix_s=a.valid_until_unix_s, gtin=gtin, location_gln=location, height=height,
        ), f"{gtin}/{location}/{at_unix_s}")
    return previous, price


def change_price(state: Overlay, ctx: TxContext, a: txpb.ChangePrice) -> None:
    _checked_change(state, ctx, a)
    _apply_price(state, ctx.signer.organization_gln, a, ctx.time_unix_s, ctx.height, ctx.time_unix_s)


def schedule_price_change(state: Overlay, ctx: TxContext, a: txpb.SchedulePriceChange) -> None:
    """A price change due later. Margin floor, minimum price and endings are checked now (they do not
    depend on other prices); all of them again, with the day's change limit, when it falls due."""
    change_id = _identifier(a.change_id, "change_id")
    gtin, location, policy = _checked_change(state, ctx, a.change)
    due = a.effective_unix_s
    if not ctx.time_unix_s < due <= ctx.time_unix_s + MAX_SCHEDULE_AHEAD_S:
        raise _invalid(f"effective_unix_s must be after the block time and within {MAX_SCHEDULE_AHEAD_S} s of it")
    if a.change.valid_until_unix_s and a.change.valid_until_unix_s <= due:
        raise _invalid("the scheduled price must end after it starts")
    violation = price_violation(
        a.change.price.amount_minor, a.change.unit_cost.amount_minor, None,
        guardrails_for(policy, _category(state, gtin), location),
    )
    if violation:
        raise _guardrail(violation)
    pending_key = f"pending/{gtin}/{location}"
    pending = read(state, "price_schedule", pending_key, st.PendingChanges) or st.PendingChanges()
    if any(p.split("/", 1)[1] == change_id for p in pending.due_change_ids):
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"change {change_id} of {gtin} at {location} is pending")
    if len(pending.due_change_ids) >= MAX_PENDING_CHANGES:
        raise TxRejected(ResultCode.FAILED_PRECONDITION, f"{gtin} at {location} has {MAX_PENDING_CHANGES} changes pending")
    ids = sorted([*pending.due_change_ids, f"{due:012d}/{change_id}"])
    write(state, "price_schedule", pending_key, st.PendingChanges(due_change_ids=ids, price_key=f"{gtin}/{location}"))
    _schedule(state, st.ScheduleEntry(
        kind=st.SCHEDULE_KIND_PRICE_CHANGE, due_unix_s=due, change=a, scheduled_by=ctx.signer.agent_id, height=ctx.height,
    ), f"{gtin}/{location}/{change_id}")
    log_price_event(state, ctx.height, ctx.time_unix_s, st.PriceLogEntry(
        kind=st.PRICE_EVENT_KIND_PRICE_SCHEDULED, gtin=gtin, location_gln=location, category=_category(state, gtin),
        change_id=change_id, applied=True, new_price_minor=a.change.price.amount_minor, due_unix_s=due, scheduled=a,
        organization_gln=ctx.signer.organization_gln,
    ))


# --- promotions ----------------------------------------------------------------------------------


def _check_terms(a: txpb.CreatePromotion) -> None:
    kind = kind_of(a)
    amounts = {"discount_bps": a.discount_bps, "amount_off_minor": a.amount_off_minor,
               "fixed_price_minor": a.fixed_price_minor, "buy_quantity": a.buy_quantity, "pay_quantity": a.pay_quantity}
    used = {
        txpb.PROMOTION_KIND_PERCENTAGE: ("discount_bps",),
        txpb.PROMOTION_KIND_AMOUNT_OFF: ("amount_off_minor",),
        txpb.PROMOTION_KIND_FIXED_PRICE: ("fixed_price_minor",),
        txpb.PROMOTION_KIND_MULTI_BUY: ("buy_quantity", "pay_quantity"),
    }[kind]
    stray = [name for name, value in amounts.items() if value and name not in used]
    if stray:
        raise _invalid(f"a {txpb.PromotionKind.Name(kind)} promotion sets no {', '.join(stray)}")
    if kind == txpb.PROMOTION_KIND_PERCENTAGE and not 0 < a.discount_bps < BPS:
        raise _invalid("discount_bps must be between 1 and 9999")
    if kind == txpb.PROMOTION_KIND_AMOUNT_OFF and a.amount_off_minor <= 0:
        raise _invalid("amount_off_minor must be positive")
    if kind == txpb.PROMOTION_KIND_FIXED_PRICE and a.fixed_price_minor <= 0:
        raise _invalid("fixed_price_minor must be positive")
    if kind == txpb.PROMOTION_KIND_MULTI_BUY and not 1 <= a.pay_quantity < a.buy_quantity <= MAX_MULTI_BUY:
        raise _invalid(f"a multi-buy is buy_quantity for pay_quantity, 1 <= pay < buy <= {MAX_MULTI_BUY}")
    needs_currency = kind in (txpb.PROMOTION_KIND_AMOUNT_OFF, txpb.PROMOTION_KIND_FIXED_PRICE) or a.budget_minor
    if needs_currency:
        _currency(a.currency_code, "currency_code")
    elif a.currency_code:
        raise _invalid("currency_code is only for amounts (amount off, fixed price, a money budget)")


def _check_promotion(state: Overlay, a: txpb.CreatePromotion, policy: txpb.GuardrailPolicy | None) -> None:
    """Every check of a promotion against the state now: its terms, its scope (the policy's
    organisation's locations only) and the guardrails at each product and location it names."""
    _identifier(a.promotion_id, "promotion_id")
    if len(a.location_glns) >= MAX_PROMOTION_LOCATIONS:
        raise _invalid(f"a promotion runs at 1 to {MAX_PROMOTION_LOCATIONS} locations")
    locations = sorted({_gln(a.location_gln), *(_gln(g) for g in a.location_glns)})
    if len(a.gtins) > MAX_PROMOTION_GTINS or len(a.categories) > MAX_PROMOTION_CATEGORIES or not (a.gtins or a.categories):
        raise _invalid(f"a promotion names 1 to {MAX_PROMOTION_GTINS} GTINs and up to {MAX_PROMOTION_CATEGORIES} categories")
    gtins = [_gtin(g) for g in a.gtins]
    if len(set(gtins)) != len(gtins) or len(set(a.categories)) != len(a.categories):
        raise _invalid("a GTIN or category appears twice")
    for category in a.categories:
        _text(category, "category", 128)
    if len(gtins) * len(locations) > MAX_PROMOTION_CHECKS:
        raise _invalid(f"GTINs × locations must be at most {MAX_PROMOTION_CHECKS}")
    if a.end_unix_s <= a.start_unix_s:
        raise _invalid("the promotion must end after it starts")
    if a.end_unix_s - a.start_unix_s > MAX_PROMOTION_DAYS * 86_400:
        raise _invalid(f"a promotion runs at most {MAX_PROMOTION_DAYS} days")
    _text(a.customer_copy, "customer_copy", 1024, required=False)
    _check_terms(a)
    if policy is None:
        raise TxRejected(ResultCode.FAILED_PRECONDITION, "no guardrail policy: promotions need one")
    org = policy.organization_gln
    for location in locations:
        if gln_owner(state, location) != org:
            raise _denied(f"location {location} does not carry a company prefix of {org}")
    _check_guardrails(state, a, policy, locations, gtins)


def _check_guardrails(state: Overlay, a: txpb.CreatePromotion, policy: txpb.GuardrailPolicy, locations: list[str], gtins: list[str]) -> None:
    if a.currency_code and a.currency_code != policy.currency_code:
        raise _invalid(f"the promotion is in {a.currency_code}, the policy is in {policy.currency_code}")
    for gtin in gtins:
        category = _category(state, gtin)
        for location in locations:
            price = read(state, "prices", _price_key(gtin, location), st.PriceRecord)
            if price is None:
                raise TxRejected(ResultCode.FAILED_PRECONDITION, f"{gtin} has no price at {location}")
            violation = promotion_violation(
                a, price.price.amount_minor, price.unit_cost.amount_minor, guardrails_for(policy, category, location)
            )
            if violation:
                raise _guardrail(f"{gtin} at {location}: {violation}")
    # A category's products are not listed on the ledger: its limit on the depth of a discount is
    # checked here, and every product's floors hold through the clamp of the price computation.
    if kind_of(a) in (txpb.PROMOTION_KIND_PERCENTAGE, txpb.PROMOTION_KIND_MULTI_BUY):
        depth = a.discount_bps if kind_of(a) == txpb.PROMOTION_KIND_PERCENTAGE else deepest_discount_bps(a, 1)
        for category in a.categories:
            for location in locations:
                limit = guardrails_for(policy, category, location).max_discount_bps
                if depth > limit:
                    raise _guardrail(f"category {category} at {location}: max_discount: {depth} bps exceeds {limit} bps")


def auto_applies(state: Overlay, a: txpb.CreatePromotion, policy: txpb.GuardrailPolicy) -> bool:
    """A promotion draft inside every guardrail (checked before) takes effect by itself when its
    deepest discount on every product it names is below the organisation's threshold."""
    threshold = policy.auto_apply_discount_below_bps
    if threshold <= 0:
        return False
    kind = kind_of(a)
    if a.categories and kind not in (txpb.PROMOTION_KIND_PERCENTAGE, txpb.PROMOTION_KIND_MULTI_BUY):
        return False  # an amount off a category's unlisted prices has no known depth
    depths = [deepest_discount_bps(a, 1)] if kind != txpb.PROMOTION_KIND_PERCENTAGE else [a.discount_bps]
    for gtin in a.gtins:
        for location in sorted({a.location_gln, *a.location_glns}):
            price = read(state, "prices", _price_key(gtin, location), st.PriceRecord)
            if price is not None:
                depths.append(deepest_discount_bps(a, price.price.amount_minor))
    return max(depths) < threshold


def open_promotion(state: Overlay, ctx: TxContext, a: txpb.CreatePromotion, created_by: str) -> None:
    """Record a checked promotion and put its start and end on the schedule."""
    if read(state, "promotions", a.promotion_id, st.PromotionRecord) is not None:
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"promotion {a.promotion_id} exists")
    if a.end_unix_s <= ctx.time_unix_s:
        raise TxRejected(ResultCode.FAILED_PRECONDITION, "the promotion's window is over")
    running = a.start_unix_s <= ctx.time_unix_s
    status = st.PROMOTION_STATUS_ACTIVE if running else st.PROMOTION_STATUS_SCHEDULED
    record = st.PromotionRecord(promotion=a, created_by=created_by, height=ctx.height, status=status)
    write(state, "promotions", a.promotion_id, record)
    _promotion_event(state, st.PRICE_EVENT_KIND_PROMOTION_CREATED, record, ctx.height, ctx.time_unix_s)
    if not running:
        _schedule(state, st.ScheduleEntry(
            kind=st.SCHEDULE_KIND_PROMOTION_START, due_unix_s=a.start_unix_s, promotion_id=a.promotion_id, height=ctx.height,
        ), a.promotion_id)
    _schedule(state, st.ScheduleEntry(
        kind=st.SCHEDULE_KIND_PROMOTION_END, due_unix_s=a.end_unix_s, promotion_id=a.promotion_id, height=ctx.height,
    ), a.promotion_id)


def create_promotion(state: Overlay, ctx: TxContext, a: txpb.CreatePromotion) -> None:
    _own_gln(state, ctx, a.location_gln, "location")
    if a.draft_id:
        raise _invalid("draft_id is set by the ledger when a draft is approved")
    _check_promotion(state, a, _policy(state, ctx.signer.organization_gln))
    open_promotion(state, ctx, a, ctx.signer.agent_id)


def _own_promotion(state: Overlay, ctx: TxContext, promotion_id: str) -> st.PromotionRecord:
    record = read(state, "promotions", _identifier(promotion_id, "promotion_id"), st.PromotionRecord)
    if record is None:
        raise TxRejected(ResultCode.NOT_FOUND, f"promotion {promotion_id} does not exist")
    if gln_owner(state, record.promotion.location_gln) != ctx.signer.organization_gln:
        raise _denied(f"promotion {promotion_id} is not one of {ctx.signer.organization_gln}'s")
    return record


def _end(record: st.PromotionRecord, reason: str, at_unix_s: int, height: int) -> None:
    record.status = st.PROMOTION_STATUS_ENDED
    record.end_reason = reason
    record.ended_unix_s = at_unix_s
    record.ended_height = height


def end_promotion(state: Overlay, ctx: TxContext, a: txpb.EndPromotion) -> None:
    record = _own_promotion(state, ctx, a.promotion_id)
    if record.status not in (st.PROMOTION_STATUS_UNSPECIFIED, st.PROMOTION_STATUS_SCHEDULED, st.PROMOTION_STATUS_ACTIVE):
        raise TxRejected(ResultCode.FAILED_PRECONDITION, f"promotion {a.promotion_id} is {st.PromotionStatus.Name(record.status)}")
    _end(record, f"ended by {ctx.signer.agent_id}: {_text(a.reason, 'reason', 512, required=False)}", ctx.time_unix_s, ctx.height)
    write(state, "promotions", a.promotion_id, record)
    _promotion_event(state, st.PRICE_EVENT_KIND_PROMOTION_END, record, ctx.height, ctx.time_unix_s)


def record_promotion_redemptions(state: Overlay, ctx: TxContext, a: txpb.RecordPromotionRedemptions) -> None:
    """A point of sale's count of redemptions; a promotion whose budget they reach ends here."""
    if not a.redemptions:
        raise _invalid("no redemptions")
    for r in a.redemptions:
        record = _own_promotion(state, ctx, r.promotion_id)
        if record.status in (st.PROMOTION_STATUS_REFUSED,) or ctx.time_unix_s < record.promotion.start_unix_s:
            raise TxRejected(ResultCode.FAILED_PRECONDITION, f"promotion {r.promotion_id} has not run")
        if r.discount_minor and not record.promotion.currency_code:
            raise _invalid(f"promotion {r.promotion_id} has no currency to count a discount in")
        record.units_redeemed = min(record.units_redeemed + r.units, COUNTER_LIMIT)
        record.redeemed_minor = min(record.redeemed_minor + r.discount_minor, COUNTER_LIMIT)
        p = record.promotion
        spent = (p.budget_units and record.units_redeemed >= p.budget_units) or (p.budget_minor and record.redeemed_minor >= p.budget_minor)
        ends = spent and record.status != st.PROMOTION_STATUS_ENDED
        if ends:
            _end(record, "budget spent", ctx.time_unix_s, ctx.height)
        write(state, "promotions", r.promotion_id, record)
        if ends:
            _promotion_event(state, st.PRICE_EVENT_KIND_PROMOTION_END, record, ctx.height, ctx.time_unix_s)


# --- the guardrail policy ------------------------------------------------------------------------


def _endings(values, what: str) -> None:
    if len(values) > MAX_ENDINGS or len(set(values)) != len(values):
        raise _invalid(f"{what}: at most {MAX_ENDINGS} distinct endings")
    for value in values:
        if not _ENDING.fullmatch(value):
            raise _invalid(f"{what}: ending {value!r} must be 1-6 digits")


def set_guardrail_policy(state: Overlay, ctx: TxContext, a: txpb.SetGuardrailPolicy) -> None:
    p = a.policy
    _require_org(state, _gln(p.organization_gln))
    _same_org(ctx, p.organization_gln)
    _currency(p.currency_code, "currency_code")
    if p.budget_minor < 0 or p.budget_period_s <= 0 or p.draft_ttl_s <= 0:
        raise _invalid("budget must be >= 0 and budget_period_s, draft_ttl_s > 0")
    if p.approval_quorum < 1:
        raise _invalid("approval_quorum must be at least 1")
    if not (0 <= p.max_discount_bps < BPS and 0 <= p.margin_floor_bps and 0 <= p.max_price_change_bps_per_day):
        raise _invalid("basis-point limits out of range")
    _endings(p.price_endings, "price_endings")
    if len(p.overrides) > MAX_OVERRIDES:
        raise _invalid(f"at most {MAX_OVERRIDES} overrides")
    scopes = set()
    for n, o in enumerate(p.overrides):
        if not (o.category or o.location_gln):
            raise _invalid(f"overrides[{n}] names a category, a location or both")
        _text(o.category, f"overrides[{n}].category", 128, required=False)
        if o.location_gln:
            _own_gln(state, ctx, o.location_gln, f"overrides[{n}].location_gln")
        if (o.category, o.location_gln) in scopes:
            raise _invalid(f"overrides[{n}] repeats the scope of an earlier override")
        scopes.add((o.category, o.location_gln))
        if o.HasField("max_discount_bps") and o.max_discount_bps >= BPS:
            raise _invalid(f"overrides[{n}].max_discount_bps must be below {BPS}")
        _endings(o.price_endings, f"overrides[{n}].price_endings")
    write(state, "policies", p.organization_gln, p)
    log_price_event(state, ctx.height, ctx.time_unix_s, st.PriceLogEntry(
        kind=st.PRICE_EVENT_KIND_POLICY_SET, applied=True, policy=p, organization_gln=p.organization_gln,
    ))


# --- the schedule, at the start of each block ----------------------------------------------------


def _activate(state: Overlay, entry: st.ScheduleEntry, height: int, block_time: int) -> None:
    """Carry out one due entry on ``state``, logging what it did (raises TxRejected to refuse it)."""
    if entry.kind == st.SCHEDULE_KIND_PRICE_CHANGE:
        change = entry.change.change
        org = gln_owner(state, change.location_gln)
        member = read(state, "orgs", org or "", st.OrganizationRecord)
        if member is None or member.status != st.ORGANIZATION_STATUS_ACTIVE:
            raise TxRejected(ResultCode.FAILED_PRECONDITION, f"the owner of {change.location_gln} is not an active member")
        _apply_price(state, org, change, entry.due_unix_s, height, block_time, change_id=entry.change.change_id)
    elif entry.kind == st.SCHEDULE_KIND_PRICE_END:
        record = read(state, "prices", _price_key(entry.gtin, entry.location_gln), st.PriceRecord)
        if record is not None and record.valid_until_unix_s == entry.due_unix_s:  # else superseded by a later price
            log_price_event(state, height, block_time, st.PriceLogEntry(
                kind=st.PRICE_EVENT_KIND_PRICE_END, gtin=entry.gtin, location_gln=entry.location_gln,
                category=_category(state, entry.gtin), applied=True, old_price_minor=record.price.amount_minor,
                due_unix_s=entry.due_unix_s, price=record, organization_gln=gln_owner(state, entry.location_gln) or "",
            ))
    else:
        record = read(state, "promotions", entry.promotion_id, st.PromotionRecord)
        live = (st.PROMOTION_STATUS_UNSPECIFIED, st.PROMOTION_STATUS_SCHEDULED, st.PROMOTION_STATUS_ACTIVE)
        if record is None or record.status not in live:
            return  # ended before its time (budget, owner, refused start): nothing left to do
        if entry.kind == st.SCHEDULE_KIND_PROMOTION_START:
            if record.status == st.PROMOTION_STATUS_ACTIVE:
                return
            try:
                policy = _policy(state, gln_owner(state, record.promotion.location_gln) or "")
                if policy is None:
                    raise TxRejected(ResultCode.FAILED_PRECONDITION, "no guardrail policy")
                _check_promotion(state, record.promotion, policy)
                record.status = st.PROMOTION_STATUS_ACTIVE
                _promotion_event(state, st.PRICE_EVENT_KIND_PROMOTION_START, record, height, block_time)
            except TxRejected as rejected:
                # Prices or the policy changed since it was accepted: it never runs.
                record.status, record.end_reason = st.PROMOTION_STATUS_REFUSED, rejected.log
                record.ended_unix_s, record.ended_height = block_time, height
                _promotion_event(state, st.PRICE_EVENT_KIND_PROMOTION_START, record, height, block_time, applied=False, reason=rejected.log)
        else:
            _end(record, "window closed", entry.due_unix_s, height)
            _promotion_event(state, st.PRICE_EVENT_KIND_PROMOTION_END, record, height, block_time)
        write(state, "promotions", entry.promotion_id, record)


def run_price_schedule(state: Overlay, height: int, block_time: int) -> None:
    """Carry out the schedule entries due by ``block_time`` (at most SCHEDULE_BATCH, minute slot by minute
    slot, each slot in key order: due time, then kind, then subject) on ``state``. Total: an entry that
    fails is logged as refused with its reason; nothing raises out."""
    try:
        cursor = read(state, "price_schedule", CURSOR_KEY, st.ScheduleCursor)
        if cursor is None:
            return  # nothing was ever scheduled
        limit = f"{block_time:012d}/~"
        work = Overlay(state)
        minute, done = cursor.next_minute, 0
        for _ in range(MAX_MINUTES_PER_BLOCK):
            if minute > block_time // MINUTE_S or done >= SCHEDULE_BATCH:
                break
            slot_key = _slot_key(minute)
            slot = read(work, "price_schedule", slot_key, st.ScheduleSlot)
            keys = list(slot.keys) if slot is not None else []
            remaining = []
            for key in keys:
                if done >= SCHEDULE_BATCH or key > limit:
                    remaining.append(key)
                    continue
                done += 1
                _carry_out(work, key, height, block_time)
            if slot is not None and remaining != keys:
                if remaining:
                    write(work, "price_schedule", slot_key, st.ScheduleSlot(keys=remaining))
                else:
                    work.delete("price_schedule", slot_key.encode())
            if remaining:
                break  # this minute is not done: not yet due, or the batch is spent
            minute += 1
        if minute != cursor.next_minute or done:
            write(work, "price_schedule", CURSOR_KEY, st.ScheduleCursor(next_minute=minute))
            work.merge_into(state)
    except Exception:  # noqa: BLE001 - the same on every node; the block goes on without the schedule
        log.error("price schedule failed at height %s", height, exc_info=True)


def _carry_out(work: Overlay, key: str, height: int, block_time: int) -> None:
    entry = read(work, "price_schedule", key, st.ScheduleEntry)
    if entry is None:
        return
    work.delete("price_schedule", key.encode())  # carried out (or refused) once
    if entry.kind == st.SCHEDULE_KIND_PRICE_CHANGE:
        _unpend(work, entry)
    attempt = Overlay(work)
    try:
        _activate(attempt, entry, height, block_time)
        attempt.merge_into(work)
    except TxRejected as rejected:
        log_price_event(work, height, block_time, _refused(entry, rejected.log))
    except Exception:  # noqa: BLE001 - a bug an entry reaches refuses that entry, never the block
        log.error("schedule entry raised; refused", exc_info=True, extra={"height": height, "key": key})
        log_price_event(work, height, block_time, _refused(entry, "internal error"))


def _unpend(state: Overlay, entry: st.ScheduleEntry) -> None:
    change = entry.change.change
    key = f"pending/{change.gtin}/{change.location_gln}"
    pending = read(state, "price_schedule", key, st.PendingChanges)
    if pending is not None:
        done = f"{entry.due_unix_s:012d}/{entry.change.change_id}"
        pending_ids = [p for p in pending.due_change_ids if p != done]
        write(state, "price_schedule", key, st.PendingChanges(due_change_ids=pending_ids, price_key=pending.price_key))


_EVENT_OF = {
    st.SCHEDULE_KIND_PRICE_CHANGE: st.PRICE_EVENT_KIND_PRICE_SET,
    st.SCHEDULE_KIND_PRICE_END: st.PRICE_EVENT_KIND_PRICE_END,
    st.SCHEDULE_KIND_PROMOTION_START: st.PRICE_EVENT_KIND_PROMOTION_START,
    st.SCHEDULE_KIND_PROMOTION_END: st.PRICE_EVENT_KIND_PROMOTION_END,
}


def _refused(entry: st.ScheduleEntry, reason: str) -> st.PriceLogEntry:
    change = entry.change.change
    return st.PriceLogEntry(
        kind=_EVENT_OF.get(entry.kind, st.PRICE_EVENT_KIND_UNSPECIFIED), due_unix_s=entry.due_unix_s,
        gtin=change.gtin or entry.gtin, location_gln=change.location_gln or entry.location_gln,
        change_id=entry.change.change_id, promotion_id=entry.promotion_id, applied=False, reason=reason,
        new_price_minor=change.price.amount_minor,
    )
