"""Baseline: unary gRPC round trips (health Check) through our server bootstrap and interceptor.

Every service's RPC rate is bounded by this; a regression here shows up everywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from grpc_health.v1 import health_pb2, health_pb2_grpc

from shelfproof.bench import Benchmark
from shelfproof.bench.stats import cpu_seconds_self_and_children, machine, percentile
from shelfproof.runtime.client import insecure_channel
from shelfproof.runtime.server import GrpcServer
from shelfproof.runtime.settings import GrpcServerSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)


async def run(args: argparse.Namespace) -> dict:
    server = GrpcServer(GrpcServerSettings(port=0, shutdown_grace_s=1), [])
    port = await server.start()
    latencies: list[float] = []
    try:
        async with insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest()
            await stub.Check(request, timeout=5)
            stop_at = time.perf_counter() + args.seconds

            async def client() -> None:
                while time.perf_counter() < stop_at:
                    started = time.perf_counter()
                    await stub.Check(request, timeout=5)
                    latencies.append(time.perf_counter() - started)

            began = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(args.concurrency)))
            elapsed = time.perf_counter() - began
    finally:
        await server.stop()
    return {
        "benchmark": "grpc",
        "rpcs": len(latencies),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
        "concurrency": args.concurrency,
        "note": "client and server share one process and one event loop",
        "cpu_s": cpu_seconds_self_and_children(),
        "machine": machine(),
    }


BENCHMARK = Benchmark("unary gRPC round trips through the shared server bootstrap", add_arguments, run)
