"""`shelfproof bench commission` and `shelfproof bench registry` (see README, Benchmarks)."""

from __future__ import annotations

import argparse
import asyncio
import time

from shelfproof.bench import Benchmark
from shelfproof.bench.registry_stack import RegistryStack
from shelfproof.bench.stats import cpu_seconds_self_and_children, percentile
from shelfproof.product.v1 import product_pb2 as pb
from shelfproof.product.v1 import product_pb2_grpc
from shelfproof.runtime.client import insecure_channel

def _valid(body: str) -> str:
    from shelfproof.gs1.keys import check_digit

    return body + str(check_digit(body))


def add_engine(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=["embedded", "cometbft"], default="cometbft")


def add_commission_arguments(parser: argparse.ArgumentParser) -> None:
    add_engine(parser)
    parser.add_argument("--count", type=int, default=1_000_000)


async def run_commission(args: argparse.Namespace) -> dict:
    async with RegistryStack(args.engine) as stack, insecure_channel(stack.address) as channel:
        stub = product_pb2_grpc.ProductServiceStub(channel)
        gtin = _valid("0061414199999")
        await stub.CreateProduct(pb.CreateProductRequest(product=pb.Product(gtin=gtin, name="bench")), timeout=30)
        began = time.perf_counter()
        stages = {}
        async for reply in stub.CommissionItems(
            pb.CommissionItemsRequest(gtin=gtin, lot="BENCH1", count=args.count), timeout=600
        ):
            if reply.HasField("progress"):
                stages[pb.CommissionProgress.Stage.Name(reply.progress.stage)] = round(time.perf_counter() - began, 3)
            else:
                batch = reply.batch
        elapsed = time.perf_counter() - began
    return {
        "benchmark": "commission",
        "engine": args.engine,
        "count": batch.count,
        "seconds": round(elapsed, 3),
        "items_per_s": round(batch.count / elapsed),
        "stage_seconds": stages,
        "postgres": "durable defaults (fsync on, synchronous_commit on)",
    }


def add_registry_arguments(parser: argparse.ArgumentParser) -> None:
    add_engine(parser)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)


async def run_registry(args: argparse.Namespace) -> dict:
    async with RegistryStack(args.engine) as stack, insecure_channel(stack.address) as channel:
        stub = product_pb2_grpc.ProductServiceStub(channel)
        gtins = [_valid(f"00614141200{n:02d}") for n in range(20)]  # GTIN-14s of the demo brand's prefix
        for gtin in gtins:
            await stub.CreateProduct(pb.CreateProductRequest(product=pb.Product(gtin=gtin, name=f"p{gtin}")), timeout=30)
        latencies: list[float] = []
        stop_at = time.perf_counter() + args.seconds

        async def client(offset: int) -> None:
            i = offset
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                await stub.GetProduct(pb.GetProductRequest(gtin=gtins[i % len(gtins)]), timeout=5)
                latencies.append(time.perf_counter() - started)
                i += 1

        began = time.perf_counter()
        await asyncio.gather(*(client(n) for n in range(args.concurrency)))
        elapsed = time.perf_counter() - began
        server_cpu = None
        from shelfproof.runtime.processes import process_cpu_seconds

        found = process_cpu_seconds(stack.process.pid)
        server_cpu = found[1] if found else None
    return {
        "benchmark": "registry",
        "engine": args.engine,
        "get_product_rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "concurrency": args.concurrency,
        "server_cpu_s": server_cpu,
        "client_cpu_s": cpu_seconds_self_and_children()["self"],
    }


COMMISSION = Benchmark("commission N serialized items end to end", add_commission_arguments, run_commission)
REGISTRY = Benchmark("GetProduct requests per second on one registry process", add_registry_arguments, run_registry)
