"""Benchmarks behind `shelfproof bench NAME --json`.

Each benchmark starts what it needs on loopback, measures, tears it down, and returns one JSON-ready
dict; the command adds a ``calibration`` object (this machine's CPU and per-core speed, measured in the
same run: ``shelfproof.runtime.machine.calibration``) so results from different machines compare.
Register a new one in ``BENCHMARKS``: its name, summary and the module attribute holding its
``Benchmark``. A benchmark's module is imported only when that benchmark is asked for (the `shelfproof`
command's other subcommands stay fast).
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from typing import Awaitable, Callable


@dataclass(frozen=True)
class Benchmark:
    summary: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], Awaitable[dict]]


# name -> (summary, "module:attribute" under shelfproof.bench)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "grpc": ("unary gRPC calls/s of one server process: our bootstrap and bare grpc.aio", "grpc_roundtrip:BENCHMARK"),
    "ledger": ("committed signed transactions per second and commit latency", "ledger_throughput:BENCHMARK"),
    "commission": ("commission N serialized items end to end", "registry_bench:COMMISSION"),
    "registry": ("GetProduct requests per second on one registry process", "registry_bench:REGISTRY"),
    "epcis": ("capture an EPCIS document of 10,000 events end to end", "epcis_bench:BENCHMARK"),
    "epcis-rest": ("EPCIS REST binding: query latency p50/p99 over a 10,000-event store", "epcis_rest_bench:BENCHMARK"),
    "verify": ("consumer verifications per second (JSON form, proofs checked)", "verify_bench:BENCHMARK"),
    "clones": ("planted-clone simulation: detection, false positives and verdict latency", "clones_bench:BENCHMARK"),
    "pricing": ("GetPrice lookups/s and p99, basket lines/s, one change's fan-out to 100 streams", "pricing_bench:BENCHMARK"),
    "state": ("CPU time and RSS to commit 1,000 changed keys over N keys in state", "state_bench:BENCHMARK"),
    "planner": ("the planner's model bare vs. on Ray Serve, schema validity, and a 1,000-product restock draft", "planner_bench:BENCHMARK"),
    "forecast-reference": ("our TSB and Croston-SBA vs. Nixtla statsforecast's: accuracy (MASE) and time", "forecast_reference:BENCHMARK"),
    "restock-loop": ("the autonomous restock loop on the ledger vs. order-up-to alone, 90 simulated days", "restock_loop:BENCHMARK"),
}


def load(name: str) -> Benchmark:
    module, attribute = BENCHMARKS[name][1].split(":")
    return getattr(importlib.import_module(f"shelfproof.bench.{module}"), attribute)
