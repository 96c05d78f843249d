"""Replenishment policy: known safety stock and levels, case pack / MOQ / max rounding, the budget rule,
and invariants on random inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shelfproof.planner.policy import (
    ReasonCode,
    ReplenishmentLines,
    ReplenishmentPolicy,
    plan_replenishment,
    service_level_z,
)

NO_LIMIT = 10**15


def lines(**columns) -> ReplenishmentLines:
    """Lines with neutral terms (case 1, no MOQ, no cap, cost 100) unless a column is given."""
    n = len(next(iter(columns.values())))
    defaults = {
        "mean_daily_demand": [0.0] * n,
        "demand_sigma": [0.0] * n,
        "on_hand": [0] * n,
        "on_order": [0] * n,
        "lead_time_days": [5] * n,
        "review_period_days": [5] * n,
        "unit_cost": [100] * n,
        "min_order_qty": [0] * n,
        "case_pack": [1] * n,
        "max_order_qty": [1_000_000] * n,
    }
    defaults.update(columns)
    return ReplenishmentLines(**{name: np.array(values) for name, values in defaults.items()})


def test_service_level_z():
    assert service_level_z(0.95) == pytest.approx(1.644854, abs=1e-6)
    assert service_level_z(0.99) == pytest.approx(2.326348, abs=1e-6)
    assert service_level_z(0.5) == pytest.approx(0.0, abs=1e-12)
    for bad in (0.4, 1.0, 1.2):
        with pytest.raises(ValueError):
            service_level_z(bad)


def test_known_safety_stock_reorder_point_and_order_up_to():
    # mu = 10/day, sigma = 4, L = 4, R = 5: sqrt(L + R) = 3. At 95 %, z = 1.644854:
    # SS = 1.644854 * 4 * 3 = 19.74 -> 20; ROP = 40 + 19.74 -> 60; OUL = 90 + 19.74 -> 110.
    # Position 30 + 10 = 40 <= ROP: need 70, in cases of 12 -> 72, cost 72 * 250 = 18000.
    plan = plan_replenishment(
        lines(mean_daily_demand=[10.0], demand_sigma=[4.0], on_hand=[30], on_order=[10], lead_time_days=[4],
              review_period_days=[5], unit_cost=[250], case_pack=[12], min_order_qty=[24]),
        ReplenishmentPolicy(0.95, NO_LIMIT),
    )
    assert plan.z == pytest.approx(1.644854, abs=1e-6)
    assert plan.safety_stock.tolist() == [20]
    assert plan.reorder_point.tolist() == [60]
    assert plan.order_up_to.tolist() == [110]
    assert plan.inventory_position.tolist() == [40]
    assert plan.raw_need.tolist() == [70]
    assert plan.quantity.tolist() == [72]
    assert plan.line_cost.tolist() == [18000] and plan.total_cost == 18000
    assert plan.days_of_cover.tolist() == [4.0]
    assert plan.urgency.tolist() == [pytest.approx(0.2)]
    assert plan.reason.tolist() == [ReasonCode.REORDER_POINT_REACHED.value]
    assert plan.quantity.dtype == np.int64 and plan.line_cost.dtype == np.int64


def test_exact_levels_are_not_rounded_past_a_whole_unit():
    # z = 1 (service level Phi(1)), sigma = 2, L + R = 9: SS = 6 exactly; mu = 0.1 * 10 days = 1 exactly.
    plan = plan_replenishment(
        lines(mean_daily_demand=[0.1], demand_sigma=[2.0], lead_time_days=[4], review_period_days=[5]),
        ReplenishmentPolicy(0.8413447460685429, NO_LIMIT),
    )
    assert plan.safety_stock.tolist() == [6]
    assert plan.reorder_point.tolist() == [7]  # 0.4 + 6 -> 7
    assert plan.order_up_to.tolist() == [7]  # 0.9 + 6 -> 7


def test_top_up_and_sufficient_stock():
    # sigma = 0: ROP = 2 * 3 = 6, OUL = 2 * 10 = 20.
    plan = plan_replenishment(
        lines(mean_daily_demand=[2.0, 2.0, 2.0], on_hand=[10, 20, 25], lead_time_days=[3, 3, 3],
              review_period_days=[7, 7, 7]),
        ReplenishmentPolicy(0.95, NO_LIMIT),
    )
    assert plan.order_up_to.tolist() == [20, 20, 20]
    assert plan.reorder_point.tolist() == [6, 6, 6]
    assert plan.quantity.tolist() == [10, 0, 0]
    assert plan.reason.tolist() == ["top_up", "stock_sufficient", "stock_sufficient"]
    assert plan.days_of_cover.tolist() == [5.0, 10.0, 12.5]


def test_case_pack_moq_and_max_rounding():
    # Every line: mu = 1, sigma = 0, L = R = 5 -> OUL = 10, position 0 unless stated.
    plan = plan_replenishment(
        lines(
            mean_daily_demand=[1.0, 1.0, 1.0, 10.0, 1.0, 1.0],
            lead_time_days=[5] * 6,
            on_hand=[3, 5, 0, 0, 0, 0],
            case_pack=[4, 6, 1, 12, 12, 5],
            min_order_qty=[0, 20, 0, 0, 50, 7],
            max_order_qty=[100, 100, 100, 100, 50, 100],
        ),
        ReplenishmentPolicy(0.9, NO_LIMIT),
    )
    assert plan.raw_need.tolist() == [7, 5, 10, 100, 10, 10]
    assert plan.quantity.tolist() == [
        8,  # 7 -> two cases of 4
        24,  # 5 -> one case of 6 -> MOQ 20 rounded up to whole cases: 24
        10,
        96,  # 100 -> 108 in cases of 12, capped at max 100 rounded down to cases: 96
        0,  # MOQ 50 in cases of 12 is 60, above max 50 rounded down to 48: nothing orderable
        10,  # MOQ 7 in cases of 5 is 10, and the need is 10
    ]
    assert plan.reason.tolist() == [
        "reorder_point_reached", "raised_to_moq", "reorder_point_reached", "capped_at_max",
        "terms_infeasible", "reorder_point_reached",
    ]


def _budget_lines(min_order_qty):
    # mu = 10, sigma = 0, L = R = 5: OUL = 100. Positions 50, 0, 20 -> days of cover 5, 0, 2.
    # Needs 50, 100, 80 in cases of 10 at 100 per unit: costs 5000, 10000, 8000 (23000).
    return lines(
        mean_daily_demand=[10.0] * 3, on_hand=[50, 0, 20], case_pack=[10] * 3, min_order_qty=min_order_qty,
    )


def test_budget_funds_lowest_days_of_cover_first():
    plan = plan_replenishment(_budget_lines([30, 30, 30]), ReplenishmentPolicy(0.95, 15_000))
    # Line 1 (0 days) in full: 10000 left 5000; line 2 (2 days) gets 5000 / 1000 = 5 cases; line 0 nothing.
    assert plan.days_of_cover.tolist() == [5.0, 0.0, 2.0]
    assert plan.quantity.tolist() == [0, 100, 50]
    assert plan.reason.tolist() == ["budget_excluded", "reorder_point_reached", "budget_reduced"]
    assert plan.total_cost == 15_000
    assert plan.urgency.tolist() == pytest.approx([1 / 6, 1.0, 1 / 3])


def test_budget_cut_never_goes_below_moq():
    plan = plan_replenishment(_budget_lines([30, 30, 30]), ReplenishmentPolicy(0.95, 12_500))
    # After line 1, 2500 is left: 2 cases for line 2 and 3000 for line 0's MOQ are both out of reach.
    assert plan.quantity.tolist() == [0, 100, 0]
    assert plan.reason.tolist() == ["budget_excluded", "reorder_point_reached", "budget_excluded"]
    assert plan.total_cost == 10_000


def test_budget_left_by_an_unaffordable_moq_goes_to_the_next_line():
    plan = plan_replenishment(_budget_lines([30, 30, 60]), ReplenishmentPolicy(0.95, 13_500))
    # Line 1: 10000, 3500 left. Line 2 could get 3 cases, below its MOQ 60: nothing.
    # Line 0 (MOQ 30, 3000) still fits: 3 cases.
    assert plan.quantity.tolist() == [30, 100, 0]
    assert plan.reason.tolist() == ["budget_reduced", "reorder_point_reached", "budget_excluded"]
    assert plan.total_cost == 13_000


def test_budget_that_covers_everything_changes_nothing():
    plan = plan_replenishment(_budget_lines([30, 30, 30]), ReplenishmentPolicy(0.95, 23_000))
    assert plan.quantity.tolist() == [50, 100, 80]
    assert plan.total_cost == 23_000
    assert "budget_reduced" not in plan.reason.tolist()


def test_zero_demand_and_backorders():
    plan = plan_replenishment(
        lines(mean_daily_demand=[0.0, 0.0, 1.0], on_hand=[0, -3, 100], case_pack=[1, 2, 1]),
        ReplenishmentPolicy(0.95, NO_LIMIT),
    )
    # No demand and no stock: nothing. A backorder of 3 with no forecast: cover -inf, order 2 cases.
    assert plan.quantity.tolist() == [0, 4, 0]
    assert plan.days_of_cover.tolist() == [math.inf, -math.inf, 100.0]
    assert plan.urgency.tolist() == [0.0, 1.0, pytest.approx(1 / 101)]
    # The backorder is the most urgent line: with budget for one case only it is funded.
    tight = plan_replenishment(
        lines(mean_daily_demand=[5.0, 0.0], on_hand=[1, -3], case_pack=[2, 2]), ReplenishmentPolicy(0.95, 400)
    )
    assert tight.quantity.tolist() == [0, 4]


def test_empty_input():
    plan = plan_replenishment(lines(mean_daily_demand=[]), ReplenishmentPolicy(0.95, 0))
    assert plan.quantity.size == 0 and plan.total_cost == 0


@pytest.mark.parametrize(
    "columns, policy",
    [
        ({"mean_daily_demand": [1.0, 2.0], "case_pack": [1]}, ReplenishmentPolicy(0.95, 0)),
        ({"mean_daily_demand": [1.0], "case_pack": [0]}, ReplenishmentPolicy(0.95, 0)),
        ({"mean_daily_demand": [-1.0]}, ReplenishmentPolicy(0.95, 0)),
        ({"mean_daily_demand": [1.0], "on_order": [-1]}, ReplenishmentPolicy(0.95, 0)),
        ({"mean_daily_demand": [1.0], "unit_cost": [1.5]}, ReplenishmentPolicy(0.95, 0)),
        ({"mean_daily_demand": [1.0]}, ReplenishmentPolicy(1.0, 0)),
        ({"mean_daily_demand": [1.0]}, ReplenishmentPolicy(0.95, -1)),
    ],
)
def test_bad_input_is_rejected(columns, policy):
    with pytest.raises(ValueError):
        plan_replenishment(lines(**columns), policy)


def _random_lines(rng: np.random.Generator, n: int) -> ReplenishmentLines:
    mu = np.where(rng.random(n) < 0.15, 0.0, rng.gamma(1.0, 4.0, n))
    return ReplenishmentLines(
        mean_daily_demand=mu,
        demand_sigma=rng.random(n) * (mu + 1.0),
        on_hand=rng.integers(-10, 150, n),
        on_order=rng.integers(0, 40, n),
        lead_time_days=rng.integers(0, 30, n),
        review_period_days=rng.integers(0, 14, n),
        unit_cost=rng.integers(0, 5_000, n),
        min_order_qty=rng.integers(0, 80, n),
        case_pack=rng.integers(1, 30, n),
        max_order_qty=rng.integers(0, 1_500, n),
    )


@pytest.mark.parametrize("seed", range(25))
def test_invariants_on_random_lines(seed):
    rng = np.random.default_rng(seed)
    data = _random_lines(rng, int(rng.integers(1, 400)))
    level = float(rng.uniform(0.5, 0.999))
    free = plan_replenishment(data, ReplenishmentPolicy(level, NO_LIMIT))
    budget = int(rng.integers(0, max(free.total_cost, 1) + 1))
    plan = plan_replenishment(data, ReplenishmentPolicy(level, budget))

    q = plan.quantity
    case = data.case_pack
    min_qty = np.maximum(-(-data.min_order_qty // case), 1) * case  # smallest orderable: whole cases
    assert q.dtype == np.int64
    assert np.all(q % case == 0)
    assert np.all((q == 0) | (q >= data.min_order_qty))
    assert np.all(q <= data.max_order_qty)
    assert np.all(q <= free.quantity)
    assert np.array_equal(plan.line_cost, q * data.unit_cost)
    assert plan.total_cost == int(plan.line_cost.sum()) <= budget
    # Unconstrained: at least the need unless capped or infeasible, and less than one case (or the MOQ) more.
    plain = np.isin(free.reason, ["reorder_point_reached", "top_up"])
    assert np.all(free.quantity[plain] >= free.raw_need[plain])
    assert np.all(free.quantity[plain] - free.raw_need[plain] < case[plain])
    assert np.all(free.order_up_to >= free.reorder_point)
    assert np.all(free.reorder_point >= free.safety_stock)
    # A line was cut only when the money left could not pay its next step (one more case, or its MOQ).
    left = budget - plan.total_cost
    reduced = plan.reason == "budget_reduced"
    excluded = plan.reason == "budget_excluded"
    assert np.all(left < (case * data.unit_cost)[reduced])
    assert np.all(left < (min_qty * data.unit_cost)[excluded])
    assert np.all(q[~(reduced | excluded)] == free.quantity[~(reduced | excluded)])
    # The most urgent line with an order is funded in full whenever the budget pays for it.
    wanted = np.flatnonzero(free.quantity > 0)
    if wanted.size:
        first = wanted[np.argmin(free.days_of_cover[wanted])]
        if free.line_cost[first] <= budget:
            assert q[first] == free.quantity[first]
