"""Bounds on what the model proposes, applied before anything reaches the ledger (which checks again).

The model's numbers are proposals. A restock quantity outside the line's minimum and maximum, not a
whole number of cases, for a product not among the candidates, or one that would break the budget is
replaced by the policy's quantity; a promotion's discount is cut to the largest one every product can
take above the margin floor and under the policy's maximum. Every replacement is recorded, so the
decision record shows what the model said and what was used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shelfproof.ledger.core.rules import BPS, margin_floor_ok
from shelfproof.runtime.errors import GuardrailViolated


@dataclass(frozen=True)
class RestockCandidate:
    """One line as the inventory policy computed it, with the supplier terms that bound it."""

    gtin: str
    name: str
    on_hand: int
    mean_daily_demand: float
    days_of_cover: float
    urgency: float
    quantity: int  # the policy's quantity (already whole cases, within terms and budget)
    min_order_qty: int
    max_order_qty: int
    case_pack: int
    unit_cost_minor: int
    reason_code: str


@dataclass(frozen=True)
class Adjustment:
    gtin: str
    proposed: object
    used: object
    why: str


@dataclass
class BoundedRestock:
    lines: list[tuple[RestockCandidate, int]]  # (candidate, quantity), quantity > 0
    reasons: dict[str, str]
    adjustments: list[Adjustment] = field(default_factory=list)

    @property
    def total_minor(self) -> int:
        return sum(c.unit_cost_minor * q for c, q in self.lines)


def _orderable(c: RestockCandidate, quantity: int) -> str | None:
    """Why ``quantity`` cannot be ordered for ``c``, or None."""
    if quantity < max(1, c.min_order_qty):
        return f"below the minimum of {max(1, c.min_order_qty)}"
    if quantity > c.max_order_qty:
        return f"above the maximum of {c.max_order_qty}"
    if c.case_pack > 1 and quantity % c.case_pack:
        return f"not a multiple of the case pack {c.case_pack}"
    return None


def bound_restock(
    candidates: list[RestockCandidate], proposals: dict[str, tuple[int, str]], budget_left_minor: int
) -> BoundedRestock:
    """Final lines from the policy's candidates and the model's ``{gtin: (quantity, reason)}``."""
    known = {c.gtin for c in candidates}
    adjustments = [Adjustment(g, q, None, "not a candidate of this draft") for g, (q, _) in proposals.items() if g not in known]
    lines: list[tuple[RestockCandidate, int]] = []
    reasons: dict[str, str] = {}
    for c in candidates:
        if c.quantity <= 0:
            continue  # the policy orders nothing here; the model cannot add a line
        quantity = c.quantity
        if c.gtin in proposals:
            proposed, reason = proposals[c.gtin]
            problem = _orderable(c, proposed)
            if problem is None:
                quantity = proposed
            else:
                adjustments.append(Adjustment(c.gtin, proposed, c.quantity, problem))
            reasons[c.gtin] = reason
        lines.append((c, quantity))
    bounded = BoundedRestock(lines, reasons, adjustments)
    if bounded.total_minor > budget_left_minor:
        # The policy's quantities fit the budget; the model's changes did not: keep the policy's.
        for c, q in lines:
            if q != c.quantity:
                adjustments.append(Adjustment(c.gtin, q, c.quantity, "over the budget left"))
        bounded.lines = [(c, c.quantity) for c, _ in lines]
    return bounded


@dataclass(frozen=True)
class PriceFacts:
    gtin: str
    name: str
    price_minor: int
    cost_minor: int
    days_of_cover: float


def max_discount_bps(price_minor: int, cost_minor: int, margin_floor_bps: int) -> int:
    """The largest discount (bps) that keeps the discounted price, as the ledger computes it, above
    the margin floor; 0 when there is no room."""
    low, high = 0, BPS - 1
    if not margin_floor_ok(price_minor, cost_minor, margin_floor_bps):
        return 0
    while low < high:  # the discounted price falls as the discount grows: binary search
        mid = (low + high + 1) // 2
        if margin_floor_ok(price_minor * (BPS - mid) // BPS, cost_minor, margin_floor_bps):
            low = mid
        else:
            high = mid - 1
    return low


@dataclass
class BoundedPromotion:
    gtins: list[str]
    discount_bps: int
    start_in_days: int
    duration_days: int
    customer_copy: str
    rationale: str
    adjustments: list[Adjustment] = field(default_factory=list)


def bound_promotion(
    proposal: dict, products: dict[str, PriceFacts], *, max_policy_discount_bps: int, margin_floor_bps: int
) -> BoundedPromotion:
    adjustments: list[Adjustment] = []
    gtins: list[str] = []
    for gtin in proposal["gtins"]:
        if gtin in gtins:
            continue
        if gtin not in products:
            adjustments.append(Adjustment(gtin, "included", "left out", "not a candidate of this draft"))
            continue
        gtins.append(gtin)
    if not gtins:
        slowest = max(products.values(), key=lambda p: p.days_of_cover)
        adjustments.append(Adjustment(slowest.gtin, "absent", "included", "no candidate proposed: the slowest mover"))
        gtins = [slowest.gtin]
    room = {g: max_discount_bps(products[g].price_minor, products[g].cost_minor, margin_floor_bps) for g in gtins}
    for g in [g for g in gtins if room[g] < 1]:
        adjustments.append(Adjustment(g, "included", "left out", "no room above the margin floor"))
        gtins.remove(g)
    if not gtins:
        raise GuardrailViolated("no proposed product has room for a discount above the margin floor")
    cap = min([max_policy_discount_bps, *(room[g] for g in gtins)])
    discount = int(proposal["discount_bps"])
    if discount > cap:
        adjustments.append(Adjustment(",".join(gtins), discount, cap, "above the largest allowed discount"))
        discount = cap
    return BoundedPromotion(
        gtins, discount, int(proposal["start_in_days"]), int(proposal["duration_days"]),
        proposal["customer_copy"], proposal["rationale"], adjustments,
    )
