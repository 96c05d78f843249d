"""Daily demand forecasts per (product, location) series, built for intermittent retail demand.

The input is a demand matrix: one row per series, one column per day (oldest first), values the units
sold that day; zeros are normal (most items at most stores sell on few days). Three methods, all
vectorized over all series (the only Python loop is over days):

**TSB** (Teunter, Syntetos & Babai, 2011), the default. Two exponentially smoothed quantities per series,
updated every day:

- ``p``, the probability that a day has demand: ``p <- p + beta * (1[y > 0] - p)`` every day;
- ``z``, the size of demand on a day that has some: ``z <- z + alpha * (y - z)`` on demand days only.

The forecast of daily demand is ``p * z``. Because ``p`` decays on every zero day, the forecast of an
item that stopped selling falls towards zero instead of staying where it was, which matters for
replenishment (no orders for delisted or dead stock). TSB is unbiased for a stationary series.

**Croston with the Syntetos–Boylan approximation (SBA)** (Croston 1972; Syntetos & Boylan 2005). Two
smoothed quantities updated on demand days only: the size ``z`` (constant ``alpha``) and the interval
``x`` between demand days (constant ``alpha_interval``; the interval counts days since the previous
demand day, 1 for consecutive days). Croston's ratio ``z / x`` overestimates mean demand; SBA multiplies
it by ``1 - alpha_interval / 2``. Between demand days nothing moves, so the forecast of an item that
stopped selling stays at its last value: prefer TSB unless the assortment is stable.

**Adaptive** (the planner's method): per series, the history's own mean and variance while demand has
not moved, TSB once it has. Whether it moved is Trigg's tracking signal (Trigg 1964) over TSB's one-step
errors: the smoothed error divided by the smoothed absolute error (constant ``phi``), in [-1, 1]; near 0
the errors cancel out, near +-1 they have one sign (demand rose or fell, or stopped). On a stationary
series the history's mean is the better estimate: TSB's short memory makes its forecast wander, and a
daily order-up-to re-plan orders at once when a level rises but cannot return stock when it falls, so
the wandering is paid in stock. Measured with ``bench restock-loop`` (200 products x 2 stores, 90 days,
seeds 13-16, simulated offline with the same policy): average inventory 1.049-1.084 times the fixed-level
baseline's with TSB, 0.993-1.021 adaptive, at fill rates 0.972-0.976 against the baseline's
0.972-0.975. A series with fewer than ``min_demand_days`` sale days keeps the Poisson floor below.

Initialisation (all methods) uses the whole history, so that the first one-step forecast is the series'
mean: ``z0`` = the mean of the non-zero days, ``p0`` = the share of non-zero days (TSB) and ``x0`` = days
of history / number of non-zero days (Croston). A series with no demand starts, and stays, at zero.

Defaults, for daily data:

- ``alpha = 0.1`` (size): an exponential average whose weights' centre of mass is ``(1 - a) / a`` = 9
  demand days back, long enough to average out single large baskets, short enough to follow a season.
- ``beta = 0.05`` (TSB occurrence probability): occurrence moves slowly and is estimated from every day,
  so a smaller constant gives a comparable memory in calendar time; 14 days without a sale halve ``p``
  (``0.95 ** 14 ~ 0.49``), so obsolescence is recognised within weeks, not months.
- ``alpha_interval = 0.1`` (Croston interval): as ``alpha``; it also sets the SBA factor 0.95.
- ``gamma = 0.05`` (error variance): a variance needs more observations than a mean to settle, so its
  memory (centre of mass 19 days) is longer than the mean's.

The demand standard deviation returned for safety stock is the square root of an **exponentially smoothed
mean squared one-step-ahead forecast error** (``mse <- mse + gamma * (e**2 - mse)`` with ``e = y - f``, the
forecast ``f`` made before day ``y`` was seen), initialised with the population variance of the history.
Squared rather than absolute errors: the usual ``1.25 * MAD`` conversion assumes normal errors, which
intermittent demand (mostly zeros, occasional spikes) does not have, and would understate the spread.
With ``poisson_floor`` (the default) the variance is never below the forecast mean, the variance of
Poisson demand at that rate: a short or unusually steady history must not produce near-zero safety stock.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

DEFAULT_ALPHA = 0.1
DEFAULT_BETA = 0.05
DEFAULT_ALPHA_INTERVAL = 0.1
DEFAULT_GAMMA = 0.05
# Trigg's tracking signal: its smoothing constant, and the magnitude past which demand has moved.
DEFAULT_PHI = 0.1
DEFAULT_SIGNAL_LIMIT = 0.5
# Below this many sale days in the history a series' own variance is not trusted (Poisson floor).
DEFAULT_MIN_DEMAND_DAYS = 10


class ForecastMethod(str, Enum):
    TSB = "tsb"
    CROSTON_SBA = "croston_sba"
    ADAPTIVE = "adaptive"


# What the planner forecasts with (its restock and promotion drafts record it).
PLANNER_METHOD = ForecastMethod.ADAPTIVE


@dataclass(frozen=True)
class DemandForecast:
    """Per series (arrays of length ``n_series``), in units per day."""

    mean: np.ndarray  # float64: forecast of mean daily demand
    sigma: np.ndarray  # float64: standard deviation of one day's demand around the forecast
    demand_days: np.ndarray  # int64: days in the history with demand > 0
    history_days: int  # columns of the demand matrix
    method: ForecastMethod


def _check_matrix(demand: np.ndarray) -> np.ndarray:
    matrix = np.asarray(demand, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"demand must be a 2-D array (series x days), got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise ValueError("demand must be finite")
    if np.any(matrix < 0):
        raise ValueError("demand must not be negative")
    return matrix


def _check_constant(name: str, value: float) -> None:
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value}")


def _initial_state(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-zero day counts, mean size of non-zero days (0 without any) and the history's variance."""
    demand_days = np.count_nonzero(matrix, axis=1)
    totals = matrix.sum(axis=1)
    size = np.divide(totals, demand_days, out=np.zeros_like(totals), where=demand_days > 0)
    variance = matrix.var(axis=1)
    return demand_days, size, variance


def _result(
    mean: np.ndarray, mse: np.ndarray, demand_days: np.ndarray, days: int, method: ForecastMethod,
    poisson_floor: bool,
) -> DemandForecast:
    variance = np.maximum(mse, mean) if poisson_floor else mse
    return DemandForecast(
        mean=mean, sigma=np.sqrt(variance), demand_days=demand_days.astype(np.int64), history_days=days,
        method=method,
    )


def _empty(matrix: np.ndarray, method: ForecastMethod) -> DemandForecast:
    zeros = np.zeros(matrix.shape[0])
    return DemandForecast(zeros, zeros.copy(), np.zeros(matrix.shape[0], np.int64), 0, method)


def _tsb(
    matrix: np.ndarray, alpha: float, beta: float, gamma: float, phi: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """TSB over the days of ``matrix``: (mean, smoothed squared error, demand days, tracking signal)."""
    demand_days, size, mse = _initial_state(matrix)
    probability = demand_days / matrix.shape[1]
    smoothed, smoothed_abs = np.zeros(len(matrix)), np.zeros(len(matrix))
    for t in range(matrix.shape[1]):
        y = matrix[:, t]
        error = y - probability * size
        mse += gamma * (error * error - mse)
        smoothed += phi * (error - smoothed)
        smoothed_abs += phi * (np.abs(error) - smoothed_abs)
        sold = y > 0
        probability += beta * (sold - probability)
        size = np.where(sold, size + alpha * (y - size), size)
    signal = np.divide(smoothed, smoothed_abs, out=np.zeros_like(smoothed), where=smoothed_abs > 0)
    return probability * size, mse, demand_days, signal


def forecast_tsb(
    demand: np.ndarray,
    *,
    alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
    gamma: float = DEFAULT_GAMMA,
    poisson_floor: bool = True,
) -> DemandForecast:
    """TSB forecast of every row of ``demand`` (series x days, oldest day first)."""
    for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        _check_constant(name, value)
    matrix = _check_matrix(demand)
    if matrix.shape[1] == 0:
        return _empty(matrix, ForecastMethod.TSB)
    mean, mse, demand_days, _ = _tsb(matrix, alpha, beta, gamma, DEFAULT_PHI)
    return _result(mean, mse, demand_days, matrix.shape[1], ForecastMethod.TSB, poisson_floor)


def tracking_signal(demand: np.ndarray, *, phi: float = DEFAULT_PHI) -> np.ndarray:
    """Trigg's tracking signal of TSB's one-step errors over each row of ``demand``, in [-1, 1]."""
    _check_constant("phi", phi)
    matrix = _check_matrix(demand)
    if matrix.shape[1] == 0:
        return np.zeros(matrix.shape[0])
    return _tsb(matrix, DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_GAMMA, phi)[3]


def forecast_adaptive(
    demand: np.ndarray,
    *,
    alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
    gamma: float = DEFAULT_GAMMA,
    phi: float = DEFAULT_PHI,
    signal_limit: float = DEFAULT_SIGNAL_LIMIT,
    min_demand_days: int = DEFAULT_MIN_DEMAND_DAYS,
) -> DemandForecast:
    """The history's mean and variance per row of ``demand`` while its tracking signal stays within
    ``signal_limit``, TSB's forecast and error where it does not (see the module)."""
    for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma), ("phi", phi), ("signal_limit", signal_limit)):
        _check_constant(name, value)
    matrix = _check_matrix(demand)
    if matrix.shape[1] == 0:
        return _empty(matrix, ForecastMethod.ADAPTIVE)
    tsb_mean, tsb_mse, demand_days, signal = _tsb(matrix, alpha, beta, gamma, phi)
    moved = np.abs(signal) > signal_limit
    window_mean, window_var = matrix.mean(axis=1), matrix.var(axis=1)
    mean = np.where(moved, tsb_mean, window_mean)
    variance = np.where(moved, np.maximum(tsb_mse, tsb_mean), window_var)
    variance = np.where(demand_days < min_demand_days, np.maximum(variance, mean), variance)
    return DemandForecast(
        mean=mean, sigma=np.sqrt(variance), demand_days=demand_days.astype(np.int64), history_days=matrix.shape[1],
        method=ForecastMethod.ADAPTIVE,
    )


def forecast_croston_sba(
    demand: np.ndarray,
    *,
    alpha: float = DEFAULT_ALPHA,
    alpha_interval: float = DEFAULT_ALPHA_INTERVAL,
    gamma: float = DEFAULT_GAMMA,
    poisson_floor: bool = True,
) -> DemandForecast:
    """Croston's method with the SBA bias correction, for every row of ``demand`` (series x days)."""
    for name, value in (("alpha", alpha), ("alpha_interval", alpha_interval), ("gamma", gamma)):
        _check_constant(name, value)
    matrix = _check_matrix(demand)
    n, days = matrix.shape
    if days == 0:
        return _empty(matrix, ForecastMethod.CROSTON_SBA)
    demand_days, size, mse = _initial_state(matrix)
    # A series without demand keeps interval 1 and size 0: its forecast is 0, with no division by zero.
    interval = np.where(demand_days > 0, days / np.maximum(demand_days, 1), 1.0)
    factor = 1.0 - alpha_interval / 2.0
    since_last = np.ones(n)  # days since the previous demand day, counting today
    for t in range(days):
        y = matrix[:, t]
        error = y - factor * size / interval
        mse += gamma * (error * error - mse)
        sold = y > 0
        size = np.where(sold, size + alpha * (y - size), size)
        interval = np.where(sold, interval + alpha_interval * (since_last - interval), interval)
        since_last = np.where(sold, 1.0, since_last + 1.0)
    return _result(factor * size / interval, mse, demand_days, days, ForecastMethod.CROSTON_SBA, poisson_floor)


def forecast_demand(
    demand: np.ndarray, method: ForecastMethod | str = PLANNER_METHOD, **options: float | bool
) -> DemandForecast:
    """Forecast with the named method (default the planner's); ``options`` go to that method."""
    method = ForecastMethod(method)
    if method is ForecastMethod.TSB:
        return forecast_tsb(demand, **options)
    if method is ForecastMethod.CROSTON_SBA:
        return forecast_croston_sba(demand, **options)
    return forecast_adaptive(demand, **options)


def scaled_error(
    demand: np.ndarray, holdout_days: int = 7, method: ForecastMethod | str = PLANNER_METHOD
) -> float | None:
    """Mean absolute scaled error (Hyndman & Koehler, 2006) of the forecast on the last ``holdout_days``
    of the history: the forecast made from the days before them (flat over the horizon, as the policy
    uses it) against what sold, scaled by the in-sample mean absolute error of the one-day naive forecast
    (yesterday's sales). Below 1 the forecast beats naive. The mean over the series whose scale is not
    zero (a series that never changes has no naive error to scale by); None when no series has one or
    the history is shorter than the holdout plus two days."""
    matrix = _check_matrix(demand)
    if matrix.shape[1] < holdout_days + 2 or matrix.shape[0] == 0:
        return None
    train, test = matrix[:, :-holdout_days], matrix[:, -holdout_days:]
    mean = forecast_demand(train, method).mean
    error = np.abs(test - mean[:, None]).mean(axis=1)
    scale = np.abs(np.diff(train, axis=1)).mean(axis=1)
    scored = scale > 0
    if not scored.any():
        return None
    return round(float(np.mean(error[scored] / scale[scored])), 4)
