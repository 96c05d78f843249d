"""Nixtla statsforecast's TSB and Croston-SBA over a demand matrix, timed: the reference side of
`shelfproof bench forecast-reference`. Runs in an environment of its own (``uv run --with
statsforecast``: statsforecast needs pandas below 3, which the project's lock, with the console's
pandas 3, cannot hold), so it imports nothing of shelfproof but numpy and statsforecast.

    python forecast_reference_worker.py DEMAND.npy ALPHA BETA OUT.json
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def main() -> None:
    import statsforecast
    from statsforecast.models import TSB, CrostonSBA

    demand_path, alpha, beta, out_path = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    train = np.load(demand_path).astype(np.float64)
    models = {"tsb": lambda: TSB(alpha_d=alpha, alpha_p=beta), "croston_sba": CrostonSBA}
    result = {"statsforecast_version": statsforecast.__version__}
    for name, build in models.items():
        build().forecast(y=train[0], h=1)  # compiles numba's kernels before the clock starts
        began = time.perf_counter()
        mean = [float(build().forecast(y=series, h=1)["mean"][0]) for series in train]
        result[name] = {"mean": mean, "seconds": time.perf_counter() - began}
    with open(out_path, "w") as out:
        json.dump(result, out)


if __name__ == "__main__":
    main()
