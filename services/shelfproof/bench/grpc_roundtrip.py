"""Baseline: unary gRPC calls (health Check) per second that one Python server process answers, through
our server bootstrap (interceptors, health, reflection) and through bare ``grpc.aio`` with nothing added,
both driven by the Go load generator (infra/grpcload) so that the load costs little of the machine.

Every service's RPC rate is bounded by this; a regression here shows up everywhere, and the bare figure
is the ceiling a service's own benchmark is read against (``shelfproof bench pricing`` reports its
lookups as a fraction of it).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys

from grpc_health.v1 import health_pb2

from shelfproof.bench import Benchmark, loadgen
from shelfproof.bench.stats import machine, percentile
from shelfproof.runtime.processes import process_cpu_seconds

# The server under test runs in a process of its own (this one only drives the load).
SERVER = """
import asyncio, sys
import grpc
from grpc_health.v1 import health, health_pb2_grpc

async def main(kind):
    if kind == "bare":
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
    else:
        from shelfproof.runtime.server import GrpcServer
        from shelfproof.runtime.settings import GrpcServerSettings
        server = GrpcServer(GrpcServerSettings(port=0, shutdown_grace_s=1), [])
        port = await server.start()
    print(port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the driver closes stdin

asyncio.run(main(sys.argv[1]))
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--connections", type=int, default=4)


async def health_calls(kind: str, seconds: float, concurrency: int = 64, connections: int = 4) -> dict:
    """Health Check calls/s of a server process: ``bare`` grpc.aio or ``ours`` (GrpcServer), with the
    server's CPU seconds per call."""
    server = subprocess.Popen([sys.executable, "-c", SERVER, kind], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = int(await asyncio.wait_for(asyncio.to_thread(server.stdout.readline), 60))
        cpu_before = process_cpu_seconds(server.pid)
        result = await loadgen.grpc_closed_loop(
            f"127.0.0.1:{port}", "/grpc.health.v1.Health/Check", [health_pb2.HealthCheckRequest().SerializeToString()],
            concurrency=concurrency, connections=connections, seconds=seconds, warmup=1.0,
        )
        cpu_after = process_cpu_seconds(server.pid)
    finally:
        server.stdin.close()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
    latencies = result["latencies"]
    cpu = cpu_after[1] - cpu_before[1] if cpu_before and cpu_after else None
    return {
        "rps": round(len(latencies) / seconds, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
        "codes": result["codes"],
        # over the warm-up and the measured window, in which the server answered about rps per second
        "server_cpu_us_per_call": round(cpu / (len(latencies) * (seconds + 1.0) / seconds) * 1e6, 1) if cpu and latencies else None,
        "load_cpu_s": round(result["cpu_s"], 2),
    }


async def run(args: argparse.Namespace) -> dict:
    ours = await health_calls("ours", args.seconds, args.concurrency, args.connections)
    bare = await health_calls("bare", args.seconds, args.concurrency, args.connections)
    return {
        "benchmark": "grpc",
        **ours,
        "bare_grpc_aio": bare,
        "ours_vs_bare": round(ours["rps"] / bare["rps"], 3) if bare["rps"] else None,
        "concurrency": args.concurrency,
        "connections": args.connections,
        "machine": machine(),
    }


BENCHMARK = Benchmark("unary gRPC calls/s of one server process: our bootstrap and bare grpc.aio", add_arguments, run)
