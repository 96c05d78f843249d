"""Replenishment policy: order quantities from a forecast, stock, supplier master data and a budget.

The policy is a periodic review, order-up-to policy. Every ``R`` days (the review period) a line is
reviewed; an order placed now arrives after ``L`` days (the lead time), and the next order can only arrive
``L + R`` days from now, so the stock must cover demand over that protection interval. Per line, with
``mu`` and ``sigma`` the forecast mean and standard deviation of daily demand (``planner.forecast``):

- ``safety_stock = z * sigma * sqrt(L + R)``, with ``z`` the standard normal quantile of the cycle service
  level (the probability of no stockout in a replenishment cycle): 0.95 gives z = 1.645;
- ``reorder_point = mu * L + safety_stock``: at or below it, stock is expected to fall into safety stock
  before an order placed now arrives (reason ``reorder_point_reached`` rather than ``top_up``);
- ``order_up_to = mu * (L + R) + safety_stock``;
- ``raw_need = order_up_to - inventory_position``, at least 0, where the inventory position is on hand
  plus on order.

The three levels are whole units, rounded up (a fraction of a unit cannot be stocked, and rounding down
would lower the service level). The need is then made orderable: rounded up to whole case packs; raised to
the minimum order quantity (itself rounded up to whole cases) if below it; and cut to the maximum order
quantity (rounded down to whole cases). A line whose terms leave no orderable quantity (maximum below the
minimum) orders nothing (``terms_infeasible``). Quantities are always whole cases, and either 0 or at
least the minimum order quantity.

**Budget.** When the lines cost more than the organization's budget, lines are funded in order of
urgency: the lowest days of cover first (the inventory position divided by the forecast daily demand;
negative for backorders; infinite without forecast demand), ties in input order. Each line gets its full
quantity if the money left pays for it; otherwise as many whole cases as the money left pays for, if that
is still at least its minimum order quantity (``budget_reduced``), else nothing (``budget_excluded``). The
allocation then goes on down the list, so a less urgent line is only ever funded with money that no more
urgent line could use. The rule keeps the lines closest to a stockout whole: they lose sales first, and a
partial cut of every line would leave all of them short.

Money is in integer minor currency units, quantities in integer units.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from statistics import NormalDist

import numpy as np

# Slack when rounding computed levels up to whole units, so that 30.000000000000004 stays 30.
_ROUNDING_SLACK = 1e-9
# Largest order value we accept, so that sums of line costs cannot overflow int64.
_MAX_MONEY = 2**62


class ReasonCode(str, Enum):
    """Why a line has its quantity: one code per line, the last rule that changed it."""

    STOCK_SUFFICIENT = "stock_sufficient"  # inventory position at or above order-up-to: no need
    REORDER_POINT_REACHED = "reorder_point_reached"  # position at or below the reorder point: ordered
    TOP_UP = "top_up"  # position above the reorder point, below order-up-to: ordered
    RAISED_TO_MOQ = "raised_to_moq"  # need below the minimum order quantity: ordered the minimum
    CAPPED_AT_MAX = "capped_at_max"  # need above the maximum order quantity: ordered the maximum
    TERMS_INFEASIBLE = "terms_infeasible"  # maximum (in whole cases) below minimum: nothing orderable
    BUDGET_REDUCED = "budget_reduced"  # cut to fit the budget, still at least the minimum
    BUDGET_EXCLUDED = "budget_excluded"  # not funded: the budget left could not pay the minimum


@dataclass(frozen=True)
class ReplenishmentLines:
    """One entry per (product, location) line; every array has the same length."""

    mean_daily_demand: np.ndarray  # units/day, float, >= 0
    demand_sigma: np.ndarray  # units/day, float, >= 0
    on_hand: np.ndarray  # units, int (may be negative: backorders)
    on_order: np.ndarray  # units, int, >= 0
    lead_time_days: np.ndarray  # int, >= 0
    review_period_days: np.ndarray  # int, >= 0
    unit_cost: np.ndarray  # minor currency units per unit, int, >= 0
    min_order_qty: np.ndarray  # units, int, >= 0
    case_pack: np.ndarray  # units per case, int, >= 1
    max_order_qty: np.ndarray  # units, int, >= 0


@dataclass(frozen=True)
class ReplenishmentPolicy:
    """The bounds a person committed: the cycle service level and the organization's budget."""

    cycle_service_level: float  # in [0.5, 1)
    budget: int  # minor currency units, >= 0


@dataclass(frozen=True)
class ReplenishmentPlan:
    quantity: np.ndarray  # int64 units to order: whole cases, 0 or >= the minimum order quantity
    line_cost: np.ndarray  # int64 minor units: quantity * unit_cost
    safety_stock: np.ndarray  # int64 units
    reorder_point: np.ndarray  # int64 units
    order_up_to: np.ndarray  # int64 units
    raw_need: np.ndarray  # int64 units: order_up_to - inventory position, at least 0
    inventory_position: np.ndarray  # int64 units: on hand + on order
    days_of_cover: np.ndarray  # float64 days: inventory position / mean daily demand (+-inf without demand)
    urgency: np.ndarray  # float64 in [0, 1]: 1 / (1 + days of cover), 1 for no cover at all
    reason: np.ndarray  # str: a ReasonCode value per line
    z: float  # the service level's standard normal quantile
    total_cost: int  # minor units, <= budget
    budget: int


def service_level_z(cycle_service_level: float) -> float:
    """The standard normal quantile of a cycle service level (0.95 -> 1.6449)."""
    if not 0.5 <= cycle_service_level < 1.0:
        raise ValueError(f"cycle service level must be in [0.5, 1), got {cycle_service_level}")
    return NormalDist().inv_cdf(cycle_service_level)


def _float_array(name: str, values: np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError(f"{name} must be a 1-D array of finite numbers >= 0")
    return array


def _int_array(name: str, values: np.ndarray, minimum: int | None) -> np.ndarray:
    raw = np.asarray(values)
    if raw.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array")
    if raw.size and not np.issubdtype(raw.dtype, np.integer):
        if not np.issubdtype(raw.dtype, np.floating) or not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)):
            raise ValueError(f"{name} must hold whole numbers")
    array = raw.astype(np.int64)
    if minimum is not None and np.any(array < minimum):
        raise ValueError(f"{name} must be >= {minimum}")
    return array


def _round_up(values: np.ndarray) -> np.ndarray:
    return np.ceil(values - _ROUNDING_SLACK).astype(np.int64)


def _ceil_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return -(-a // b)


def _allocate_budget(
    quantity: np.ndarray, unit_cost: np.ndarray, case_pack: np.ndarray, min_qty: np.ndarray,
    days_of_cover: np.ndarray, budget: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Funded quantities, and the masks of reduced and excluded lines (see the module's Budget rule)."""
    funded = quantity.copy()
    reduced = np.zeros(quantity.shape, dtype=bool)
    excluded = np.zeros(quantity.shape, dtype=bool)
    cost = quantity * unit_cost
    if int(cost.sum()) <= budget:
        return funded, reduced, excluded
    wanted = np.flatnonzero(quantity > 0)
    candidates = wanted[np.argsort(days_of_cover[wanted], kind="stable")]
    remaining = budget
    # Each round funds, in one vectorized step, the longest run of lines the money pays in full, then
    # settles the first line it does not; lines that cannot afford their minimum any more drop out.
    while candidates.size:
        cumulative = np.cumsum(cost[candidates])
        paid = int(np.searchsorted(cumulative, remaining, side="right"))
        if paid:
            remaining -= int(cumulative[paid - 1])
        if paid == candidates.size:
            break
        line = candidates[paid]
        case_cost = int(unit_cost[line] * case_pack[line])
        partial = remaining // case_cost * int(case_pack[line])
        if partial >= min_qty[line]:
            funded[line], reduced[line] = partial, True
            remaining -= partial * int(unit_cost[line])
        else:
            funded[line], excluded[line] = 0, True
        rest = candidates[paid + 1:]
        affordable = min_qty[rest] * unit_cost[rest] <= remaining
        funded[rest[~affordable]] = 0
        excluded[rest[~affordable]] = True
        candidates = rest[affordable]
    return funded, reduced, excluded


def plan_replenishment(lines: ReplenishmentLines, policy: ReplenishmentPolicy) -> ReplenishmentPlan:
    """Order quantities for every line within the policy's service level and budget (see the module)."""
    z = service_level_z(policy.cycle_service_level)
    if int(policy.budget) != policy.budget or policy.budget < 0:
        raise ValueError("budget must be a whole number of minor units >= 0")
    budget = int(policy.budget)
    mu = _float_array("mean_daily_demand", lines.mean_daily_demand)
    sigma = _float_array("demand_sigma", lines.demand_sigma)
    on_hand = _int_array("on_hand", lines.on_hand, None)
    on_order = _int_array("on_order", lines.on_order, 0)
    lead = _int_array("lead_time_days", lines.lead_time_days, 0)
    review = _int_array("review_period_days", lines.review_period_days, 0)
    unit_cost = _int_array("unit_cost", lines.unit_cost, 0)
    moq = _int_array("min_order_qty", lines.min_order_qty, 0)
    case = _int_array("case_pack", lines.case_pack, 1)
    max_qty = _int_array("max_order_qty", lines.max_order_qty, 0)
    arrays = (mu, sigma, on_hand, on_order, lead, review, unit_cost, moq, case, max_qty)
    if len({a.shape for a in arrays}) != 1:
        raise ValueError("every array of ReplenishmentLines must have the same length")

    protection = (lead + review).astype(np.float64)
    safety = z * sigma * np.sqrt(protection)
    safety_stock = _round_up(safety)
    reorder_point = _round_up(mu * lead + safety)
    order_up_to = _round_up(mu * protection + safety)
    position = on_hand + on_order
    need = np.maximum(order_up_to - position, 0)

    min_qty = np.maximum(_ceil_div(moq, case), 1) * case  # smallest orderable: whole cases >= MOQ
    top_qty = max_qty // case * case  # largest orderable: whole cases <= max
    feasible = top_qty >= min_qty
    rounded = _ceil_div(need, case) * case
    quantity = np.where(need > 0, np.clip(rounded, min_qty, top_qty), 0)
    quantity = np.where(feasible, quantity, 0)
    if float(np.sum(quantity.astype(np.float64) * unit_cost)) >= _MAX_MONEY:
        raise ValueError("order value out of range")

    days_of_cover = np.where(
        mu > 0, position / np.where(mu > 0, mu, 1.0), np.where(position >= 0, np.inf, -np.inf)
    )
    urgency = 1.0 / (1.0 + np.maximum(days_of_cover, 0.0))

    funded, reduced, excluded = _allocate_budget(quantity, unit_cost, case, min_qty, days_of_cover, budget)

    R = ReasonCode
    reason = np.select(
        [
            excluded,
            reduced,
            need == 0,
            ~feasible,
            rounded > top_qty,
            rounded < min_qty,
            position <= reorder_point,
        ],
        [
            R.BUDGET_EXCLUDED.value,
            R.BUDGET_REDUCED.value,
            R.STOCK_SUFFICIENT.value,
            R.TERMS_INFEASIBLE.value,
            R.CAPPED_AT_MAX.value,
            R.RAISED_TO_MOQ.value,
            R.REORDER_POINT_REACHED.value,
        ],
        default=R.TOP_UP.value,
    )
    line_cost = funded * unit_cost
    return ReplenishmentPlan(
        quantity=funded,
        line_cost=line_cost,
        safety_stock=safety_stock,
        reorder_point=reorder_point,
        order_up_to=order_up_to,
        raw_need=need,
        inventory_position=position,
        days_of_cover=days_of_cover,
        urgency=urgency,
        reason=reason,
        z=z,
        total_cost=int(line_cost.sum()),
        budget=budget,
    )
