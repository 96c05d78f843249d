"""Benchmarks behind `shelfproof bench NAME --json`.

Each benchmark starts what it needs on loopback, measures, tears it down, and returns one JSON-ready
dict. Register a new one in ``BENCHMARKS`` with a function that adds its flags.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Awaitable, Callable


@dataclass(frozen=True)
class Benchmark:
    summary: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], Awaitable[dict]]


def _registry() -> dict[str, Benchmark]:
    from shelfproof.bench import epcis_bench, grpc_roundtrip, ledger_throughput, planner_bench, registry_bench, verify_bench

    return {
        "grpc": grpc_roundtrip.BENCHMARK,
        "ledger": ledger_throughput.BENCHMARK,
        "commission": registry_bench.COMMISSION,
        "registry": registry_bench.REGISTRY,
        "epcis": epcis_bench.BENCHMARK,
        "verify": verify_bench.BENCHMARK,
        "planner": planner_bench.BENCHMARK,
    }


BENCHMARKS = _registry()
