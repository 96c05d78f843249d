"""Prices, promotions and the guardrail policy."""

from __future__ import annotations

from shelfproof.ledger.core.codes import ResultCode, TxRejected
from shelfproof.ledger.core.rules.common import (
    BPS,
    TxContext,
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
    read,
    write,
)
from shelfproof.ledger.core.state import Overlay
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb

# --- prices, promotions, policies ---------------------------------------------------------------


def _money(m: txpb.Money, what: str, currency: str | None = None) -> int:
    if len(m.currency_code) != 3 or not m.currency_code.isalpha() or not m.currency_code.isupper():
        raise _invalid(f"{what}.currency_code must be an ISO 4217 code")
    if currency and m.currency_code != currency:
        raise _invalid(f"{what} is in {m.currency_code}, the policy is in {currency}")
    if m.amount_minor < 0:
        raise _invalid(f"{what} must not be negative")
    return m.amount_minor


def margin_floor_ok(price_minor: int, cost_minor: int, margin_floor_bps: int) -> bool:
    """The margin floor, in the integers every validator uses (the planner checks with the same)."""
    return price_minor * BPS >= cost_minor * (BPS + margin_floor_bps)


def change_price(state: Overlay, ctx: TxContext, a: txpb.ChangePrice) -> None:
    gtin = _gtin(a.gtin)
    location = _own_gln(state, ctx, a.location_gln, "location")
    if read(state, "products", gtin, st.ProductRecord) is None:
        raise TxRejected(ResultCode.NOT_FOUND, f"product {gtin} is not registered")
    policy = _policy(state, ctx.signer.organization_gln)
    currency = policy.currency_code if policy else None
    price = _money(a.price, "price", currency)
    cost = _money(a.unit_cost, "unit_cost", a.price.currency_code)
    if price == 0:
        raise _invalid("price must be positive")
    day = ctx.time_unix_s // 86_400
    key = f"{gtin}/{location}"
    current = read(state, "prices", key, st.PriceRecord)
    day_open = price
    if current is not None:
        day_open = current.day_open_minor if current.day == day else current.price.amount_minor
    if policy is not None:
        if not margin_floor_ok(price, cost, policy.margin_floor_bps):
            raise _guardrail(
                f"price {price} is below the margin floor of {policy.margin_floor_bps} bps over cost {cost}"
            )
        if current is not None and abs(price - day_open) * BPS > day_open * policy.max_price_change_bps_per_day:
            raise _guardrail(
                f"price change from {day_open} to {price} exceeds {policy.max_price_change_bps_per_day} bps today"
            )
    write(
        state,
        "prices",
        key,
        st.PriceRecord(gtin=gtin, location_gln=location, price=a.price, unit_cost=a.unit_cost, height=ctx.height, day=day, day_open_minor=day_open),
    )


def _check_promotion(state: Overlay, a: txpb.CreatePromotion, policy: txpb.GuardrailPolicy | None) -> None:
    _identifier(a.promotion_id, "promotion_id")
    location = _gln(a.location_gln)
    if not 1 <= len(a.gtins) <= 100:
        raise _invalid("a promotion names 1 to 100 GTINs")
    if not 0 < a.discount_bps < BPS:
        raise _invalid("discount_bps must be between 1 and 9999")
    if a.end_unix_s <= a.start_unix_s:
        raise _invalid("the promotion must end after it starts")
    _text(a.customer_copy, "customer_copy", 1024, required=False)
    if policy is None:
        raise TxRejected(ResultCode.FAILED_PRECONDITION, "no guardrail policy: promotions need one")
    if a.discount_bps > policy.max_discount_bps:
        raise _guardrail(f"discount {a.discount_bps} bps exceeds the maximum of {policy.max_discount_bps} bps")
    for gtin in a.gtins:
        price = read(state, "prices", f"{_gtin(gtin)}/{location}", st.PriceRecord)
        if price is None:
            raise TxRejected(ResultCode.FAILED_PRECONDITION, f"{gtin} has no price at {location}")
        discounted = price.price.amount_minor * (BPS - a.discount_bps) // BPS
        if not margin_floor_ok(discounted, price.unit_cost.amount_minor, policy.margin_floor_bps):
            raise _guardrail(f"{gtin} at {discounted} would be below the margin floor")


def create_promotion(state: Overlay, ctx: TxContext, a: txpb.CreatePromotion) -> None:
    _own_gln(state, ctx, a.location_gln, "location")
    _check_promotion(state, a, _policy(state, ctx.signer.organization_gln))
    if read(state, "promotions", a.promotion_id, st.PromotionRecord) is not None:
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"promotion {a.promotion_id} exists")
    write(state, "promotions", a.promotion_id, st.PromotionRecord(promotion=a, created_by=ctx.signer.agent_id, height=ctx.height))


def set_guardrail_policy(state: Overlay, ctx: TxContext, a: txpb.SetGuardrailPolicy) -> None:
    p = a.policy
    _require_org(state, _gln(p.organization_gln))
    _same_org(ctx, p.organization_gln)
    if len(p.currency_code) != 3:
        raise _invalid("currency_code must be an ISO 4217 code")
    if p.budget_minor < 0 or p.budget_period_s <= 0 or p.draft_ttl_s <= 0:
        raise _invalid("budget must be >= 0 and budget_period_s, draft_ttl_s > 0")
    if p.approval_quorum < 1:
        raise _invalid("approval_quorum must be at least 1")
    if not (0 <= p.max_discount_bps < BPS and 0 <= p.margin_floor_bps and 0 <= p.max_price_change_bps_per_day):
        raise _invalid("basis-point limits out of range")
    write(state, "policies", p.organization_gln, p)
