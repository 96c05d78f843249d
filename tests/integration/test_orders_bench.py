"""`shelfproof bench restock-loop` at a small size: the simulation runs the loop over the real ledger and
PostgreSQL, every order it counts is on the ledger with its decision record, and the baseline (the
same formula without the planner) is computed over the same demand."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from shelfproof.bench import restock_loop

pytestmark = pytest.mark.integration


async def test_a_short_loop_orders_on_the_ledger_and_reports_every_figure():
    result = await restock_loop.run(argparse.Namespace(products=12, days=8, seed=3, mode="policy-only"))
    assert result["orders"] > 0 and result["orders"] == result["orders_on_ledger_with_record"]
    assert result["drafts"] == result["orders"] + result["held_for_people"]
    for key in ("fill_rate", "baseline_fill_rate"):
        assert 0 < result[key] <= 1
    assert result["avg_inventory_value"] > 0 and result["baseline_avg_inventory_value"] > 0
    assert result["auto_approved_fraction"] == 1.0  # every daily order of 12 products is under the threshold


def test_the_baseline_orders_up_to_fixed_levels_and_loses_sales_beyond_stock():
    demand = restock_loop.Demand(np.ones(1), np.ones(1), np.full((1, restock_loop.HISTORY_DAYS + 4), 2, dtype=np.int64))
    tally = restock_loop.baseline(demand, np.array([1]), np.array([100]), np.array([0]), 4)
    # Day 0 sells nothing (no stock) and orders up to 2 * (1 + 1) = 4, which arrives on day 1.
    assert (tally.demanded, tally.sold, tally.stockout_days) == (8, 6, 1)
