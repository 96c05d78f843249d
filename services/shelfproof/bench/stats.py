"""Small statistics shared by benchmarks (no numpy needed for percentiles of a few thousand samples)."""

from __future__ import annotations

import math
import os
import resource
from typing import Sequence


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile; ``fraction`` in [0, 1]."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def cpu_seconds_self_and_children() -> dict[str, float]:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "self": round(me.ru_utime + me.ru_stime, 3),
        "children": round(kids.ru_utime + kids.ru_stime, 3),
    }


def machine() -> dict:
    return {"cpus": os.cpu_count()}
