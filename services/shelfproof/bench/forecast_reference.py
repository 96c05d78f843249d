"""`shelfproof bench forecast-reference`: our TSB and Croston-SBA (``planner.forecast``) against Nixtla's
``statsforecast`` implementations of the same methods, on the same series, accuracy and time side by side.

The series are the restock loop's demand process (``bench.restock_loop.Demand``: intermittent, seeded);
each method forecasts from the first ``--days`` days and is scored on the next ``--holdout`` by the mean
absolute scaled error against the in-sample naive forecast (below 1 beats naive), the measure the
planner records per run. Both use the same smoothing constants (TSB: size 0.1, occurrence 0.05;
statsforecast's Croston-SBA has its fixed 0.1). statsforecast runs in an environment of its own, made by
``uv run --with statsforecast==2.1.1`` (it needs pandas below 3, which the project's lock does not hold),
so the first run needs the package index or uv's cache.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from shelfproof.bench import Benchmark
from shelfproof.bench.restock_loop import Demand
from shelfproof.planner.forecast import DEFAULT_ALPHA, DEFAULT_BETA, forecast_adaptive, forecast_croston_sba, forecast_tsb

STATSFORECAST = "statsforecast==2.1.1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--series", type=int, default=2000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--holdout", type=int, default=7)
    parser.add_argument("--seed", type=int, default=5)


def mase(forecast: np.ndarray, train: np.ndarray, test: np.ndarray) -> float:
    """Mean over series with a naive error of |actual - flat forecast| / in-sample naive MAE."""
    scale = np.abs(np.diff(train, axis=1)).mean(axis=1)
    scored = scale > 0
    error = np.abs(test - forecast[:, None]).mean(axis=1)
    return round(float(np.mean(error[scored] / scale[scored])), 4)


async def _reference(train: np.ndarray) -> dict:
    uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    with tempfile.TemporaryDirectory(prefix="sp-forecast-ref-") as folder:
        demand, out = Path(folder) / "demand.npy", Path(folder) / "out.json"
        np.save(demand, train)
        worker = Path(__file__).with_name("forecast_reference_worker.py")
        process = await asyncio.create_subprocess_exec(
            uv, "run", "--quiet", "--isolated", "--no-project", "--python", sys.executable,
            "--with", STATSFORECAST, "--with", f"numpy=={np.__version__}",
            "python", str(worker), str(demand), str(DEFAULT_ALPHA), str(DEFAULT_BETA), str(out),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"the statsforecast worker failed ({process.returncode}): {output.decode()[-2000:]}")
        return json.loads(out.read_text())


async def run(args: argparse.Namespace) -> dict:
    total = args.days + args.holdout
    demand = Demand.generate(args.series, total, args.seed).draws[:, -total:].astype(np.float64)
    train, test = demand[:, : args.days], demand[:, args.days : args.days + args.holdout]
    ours = {}
    for name, method in (("tsb", forecast_tsb), ("croston_sba", forecast_croston_sba), ("adaptive", forecast_adaptive)):
        method(train[:2])  # the same warm start the reference gets
        began = time.perf_counter()
        mean = method(train).mean
        ours[name] = (mean, time.perf_counter() - began)
    reference = await _reference(train)
    result: dict = {"benchmark": "forecast-reference", "series": args.series, "days": args.days, "holdout": args.holdout,
                    "seed": args.seed, "statsforecast_version": reference["statsforecast_version"]}
    # The planner's adaptive forecast has no statsforecast counterpart: its accuracy beside the others'.
    adaptive_mean, adaptive_s = ours.pop("adaptive")
    result["adaptive"] = {"ours_mase": mase(adaptive_mean, train, test), "ours_s": round(adaptive_s, 4)}
    for name, (mean, seconds) in ours.items():
        theirs = np.array(reference[name]["mean"])
        ours_mase, their_mase = mase(mean, train, test), mase(theirs, train, test)
        result[name] = {
            "ours_mase": ours_mase, "statsforecast_mase": their_mase,
            "ours_s": round(seconds, 4), "statsforecast_s": round(reference[name]["seconds"], 4),
            "mean_abs_difference": round(float(np.abs(mean - theirs).mean()), 4),
            # Within half a percent of each other the two are as accurate (the seed moves them more).
            "more_accurate": "tie" if abs(ours_mase - their_mase) <= 0.005 * their_mase
            else "ours" if ours_mase < their_mase else "statsforecast",
        }
    return result


BENCHMARK = Benchmark("our TSB and Croston-SBA vs. statsforecast's on the same intermittent series, and the planner's adaptive forecast beside them", add_arguments, run)
