"""Demand forecasts: hand-computed TSB and Croston-SBA values, edge cases, and a per-series reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shelfproof.planner.forecast import (
    PLANNER_METHOD,
    ForecastMethod,
    forecast_adaptive,
    forecast_croston_sba,
    forecast_demand,
    forecast_tsb,
    tracking_signal,
)

HALF = {"gamma": 0.5, "poisson_floor": False}


def test_tsb_known_answer():
    # y = 0, 2, 0, 4 with alpha = beta = gamma = 0.5. Start: p = 2/4 = 0.5, z = (2+4)/2 = 3,
    # mse = var(y) = 2.75.
    #   day 0, y=0: f = 1.5,     mse = 2.75 + .5(2.25 - 2.75)            = 2.5;       p = .25
    #   day 1, y=2: f = .75,     mse = 2.5 + .5(1.5625 - 2.5)            = 2.03125;   p = .625,  z = 2.5
    #   day 2, y=0: f = 1.5625,  mse = 2.03125 + .5(2.44140625 - 2.03125) = 2.236328125; p = .3125
    #   day 3, y=4: f = .78125,  mse = 2.236328125 + .5(10.3603515625 - 2.236328125) = 6.29833984375;
    #               p = .65625, z = 3.25
    # forecast = .65625 * 3.25 = 2.1328125
    result = forecast_tsb(np.array([[0, 2, 0, 4]]), alpha=0.5, beta=0.5, **HALF)
    assert result.mean[0] == pytest.approx(2.1328125, abs=1e-12)
    assert result.sigma[0] == pytest.approx(math.sqrt(6.29833984375), abs=1e-12)
    assert result.demand_days.tolist() == [2]
    assert result.history_days == 4
    assert result.method is ForecastMethod.TSB


def test_croston_sba_known_answer():
    # y = 0, 0, 3, 1 with alpha = alpha_interval = gamma = 0.5; SBA factor 1 - .5/2 = .75.
    # Start: z = 2, x = 4/2 = 2, mse = var(y) = 1.5; every forecast before day 3 is .75 * 2/2 = .75.
    #   day 0, y=0: mse = 1.5 + .5(.5625 - 1.5)        = 1.03125;   2 days since the last demand
    #   day 1, y=0: mse = 1.03125 + .5(.5625 - 1.03125) = .796875;  3 days
    #   day 2, y=3: mse = .796875 + .5(5.0625 - .796875) = 2.9296875; z = 2.5, x = 2 + .5(3 - 2) = 2.5
    #   day 3, y=1: f = .75 * 2.5/2.5 = .75, mse = 2.9296875 + .5(.0625 - 2.9296875) = 1.49609375;
    #               z = 2.5 + .5(1 - 2.5) = 1.75, x = 2.5 + .5(1 - 2.5) = 1.75
    # forecast = .75 * 1.75 / 1.75 = .75
    result = forecast_croston_sba(np.array([[0, 0, 3, 1]]), alpha=0.5, alpha_interval=0.5, **HALF)
    assert result.mean[0] == pytest.approx(0.75, abs=1e-12)
    assert result.sigma[0] == pytest.approx(math.sqrt(1.49609375), abs=1e-12)
    assert result.method is ForecastMethod.CROSTON_SBA


def test_sba_factor_on_steady_demand():
    # Demand every day: interval 1, size 5, so Croston says 5 and SBA 5 * (1 - 0.2/2) = 4.5.
    result = forecast_croston_sba(np.full((1, 30), 5.0), alpha=0.3, alpha_interval=0.2, poisson_floor=False)
    assert result.mean[0] == pytest.approx(4.5)
    tsb = forecast_tsb(np.full((1, 30), 5.0), poisson_floor=False)
    assert tsb.mean[0] == pytest.approx(5.0)
    assert tsb.sigma[0] == pytest.approx(0.0)


@pytest.mark.parametrize("forecast", [forecast_tsb, forecast_croston_sba])
def test_zero_series_and_no_history(forecast):
    result = forecast(np.zeros((3, 20)))
    assert result.mean.tolist() == [0.0, 0.0, 0.0]
    assert result.sigma.tolist() == [0.0, 0.0, 0.0]
    assert result.demand_days.tolist() == [0, 0, 0]
    empty = forecast(np.zeros((2, 0)))
    assert empty.mean.tolist() == [0.0, 0.0] and empty.sigma.tolist() == [0.0, 0.0]
    assert empty.history_days == 0


@pytest.mark.parametrize("forecast", [forecast_tsb, forecast_croston_sba])
def test_zero_series_next_to_selling_ones(forecast):
    result = forecast(np.array([[0, 0, 0, 0], [1, 0, 2, 0]]))
    assert result.mean[0] == 0.0 and result.sigma[0] == 0.0
    assert result.mean[1] > 0 and result.sigma[1] > 0


def test_short_history_single_day():
    # One day of 3 units: start p = 1, z = 3, mse = 0; the day confirms both; forecast 3.
    # The error variance is 0, so the Poisson floor gives sigma = sqrt(3).
    floored = forecast_tsb(np.array([[3.0]]))
    assert floored.mean[0] == pytest.approx(3.0)
    assert floored.sigma[0] == pytest.approx(math.sqrt(3.0))
    assert forecast_tsb(np.array([[3.0]]), poisson_floor=False).sigma[0] == 0.0
    croston = forecast_croston_sba(np.array([[3.0]]))
    assert croston.mean[0] == pytest.approx(3.0 * 0.95)


def test_tsb_decays_after_demand_stops_and_croston_does_not():
    history = np.concatenate([np.tile([2.0, 0.0], 30), np.zeros(60)])[None, :]
    tsb = forecast_tsb(history)
    croston = forecast_croston_sba(history)
    # 60 zero days multiply p by 0.95 ** 60 (about 0.046).
    assert tsb.mean[0] < 0.1
    assert croston.mean[0] > 0.5


def _tsb_reference(y, alpha, beta, gamma):
    days = len(y)
    nonzero = [v for v in y if v > 0]
    p = len(nonzero) / days
    z = sum(nonzero) / len(nonzero) if nonzero else 0.0
    mean = sum(y) / days
    mse = sum((v - mean) ** 2 for v in y) / days
    for v in y:
        e = v - p * z
        mse += gamma * (e * e - mse)
        p += beta * ((1.0 if v > 0 else 0.0) - p)
        if v > 0:
            z += alpha * (v - z)
    return p * z, math.sqrt(max(mse, p * z))


def _croston_reference(y, alpha, alpha_interval, gamma):
    days = len(y)
    nonzero = [v for v in y if v > 0]
    z = sum(nonzero) / len(nonzero) if nonzero else 0.0
    x = days / len(nonzero) if nonzero else 1.0
    mean = sum(y) / days
    mse = sum((v - mean) ** 2 for v in y) / days
    k = 1 - alpha_interval / 2
    q = 1
    for v in y:
        e = v - k * z / x
        mse += gamma * (e * e - mse)
        if v > 0:
            z += alpha * (v - z)
            x += alpha_interval * (q - x)
            q = 1
        else:
            q += 1
    return k * z / x, math.sqrt(max(mse, k * z / x))


def test_vectorized_forecasts_match_a_per_series_reference():
    rng = np.random.default_rng(11)
    sizes = rng.integers(1, 9, size=(40, 57))
    demand = np.where(rng.random((40, 57)) < rng.random((40, 1)), sizes, 0).astype(float)
    demand[3] = 0.0
    tsb = forecast_tsb(demand, alpha=0.2, beta=0.07, gamma=0.1)
    croston = forecast_croston_sba(demand, alpha=0.15, alpha_interval=0.25, gamma=0.1)
    for i, row in enumerate(demand.tolist()):
        assert (tsb.mean[i], tsb.sigma[i]) == pytest.approx(_tsb_reference(row, 0.2, 0.07, 0.1), abs=1e-9)
        assert (croston.mean[i], croston.sigma[i]) == pytest.approx(
            _croston_reference(row, 0.15, 0.25, 0.1), abs=1e-9
        )


def test_forecast_demand_dispatches_by_name():
    demand = np.array([[0, 2, 0, 4]])
    assert forecast_demand(demand, "croston_sba").mean[0] == forecast_croston_sba(demand).mean[0]
    assert forecast_demand(demand, "tsb").mean[0] == forecast_tsb(demand).mean[0]
    assert forecast_demand(demand).method is PLANNER_METHOD is ForecastMethod.ADAPTIVE
    with pytest.raises(ValueError):
        forecast_demand(demand, "naive")


@pytest.mark.parametrize(
    "demand, constants",
    [
        (np.array([1.0, 2.0]), {}),
        (np.array([[1.0, -1.0]]), {}),
        (np.array([[1.0, np.nan]]), {}),
        (np.array([[1.0, 2.0]]), {"alpha": 0.0}),
        (np.array([[1.0, 2.0]]), {"beta": 1.5}),
    ],
)
def test_bad_input_is_rejected(demand, constants):
    with pytest.raises(ValueError):
        forecast_tsb(demand, **constants)


def _intermittent(days: int, seed: int, rate: float = 0.4, size: float = 2.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(rng.random(days) < rate, 1 + rng.poisson(size - 1, days), 0).astype(np.float64)


def test_adaptive_keeps_the_history_mean_while_demand_holds_still():
    # A stationary series: the errors of TSB cancel out, the signal stays small, and the forecast is the
    # 56 days' own mean and variance (TSB's wanders with its short memory).
    rows = np.array([_intermittent(56, seed) for seed in range(40)])
    signal = tracking_signal(rows)
    assert np.all(np.abs(signal) <= 1.0)
    steady = np.abs(signal) <= 0.5
    assert steady.sum() >= 30  # most stationary series read as steady
    result = forecast_adaptive(rows)
    assert result.method is ForecastMethod.ADAPTIVE
    assert result.mean[steady] == pytest.approx(rows[steady].mean(axis=1))
    enough = steady & (np.count_nonzero(rows, axis=1) >= 10)
    assert result.sigma[enough] == pytest.approx(rows[enough].std(axis=1))


@pytest.mark.parametrize("change", ["stopped", "tripled"])
def test_adaptive_follows_tsb_once_demand_has_moved(change):
    # The last 20 of 56 days without a sale (delisted, or a competitor's shelf), or at three times
    # the rate: the errors take one sign, the signal passes the limit, and TSB's forecast is used,
    # far from the history's mean.
    row = _intermittent(56, 7)
    row[36:] = 0 if change == "stopped" else row[36:] * 3 + 2
    demand = row[None, :]
    assert abs(tracking_signal(demand)[0]) > 0.5
    adaptive, tsb = forecast_adaptive(demand), forecast_tsb(demand)
    assert adaptive.mean[0] == pytest.approx(tsb.mean[0]) and adaptive.sigma[0] == pytest.approx(tsb.sigma[0])
    window = row.mean()
    assert (adaptive.mean[0] < 0.6 * window) if change == "stopped" else (adaptive.mean[0] > 1.3 * window)


def test_adaptive_keeps_a_safety_floor_for_few_sale_days():
    # Three sales of one unit in 56 days: the sample variance is below the mean; with so few sale days
    # it is not trusted, and the Poisson floor (variance = mean) holds.
    row = np.zeros(56)
    row[[10, 30, 50]] = 1
    result = forecast_adaptive(row[None, :])
    assert result.sigma[0] ** 2 == pytest.approx(max(row.var(), result.mean[0]))
    assert result.sigma[0] ** 2 > row.var()
    assert forecast_adaptive(np.zeros((2, 0))).mean.tolist() == [0.0, 0.0]
