"""`shelfproof bench verify`: consumer verifications per second, JSON form with the proof check.

The stack (PostgreSQL, ledger, registry, verify) runs as separate processes on loopback. The load
generator (infra/loadgen, Go, so that the load costs little CPU) plays ``--clients`` consumers, each
on its own loopback address (so the per-client rate limiter sees real distinct clients) opening a new
connection per scan as phones do (``--connections keep-alive``: one kept per consumer), sending at a fixed offered rate in total (open loop: latency counts from the
moment a request was due, so a slow server cannot hide behind a slowed-down client). Meanwhile the
ledger keeps committing: the verifier's scan records and a stream of price changes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time

from shelfproof.bench import Benchmark, loadgen
from shelfproof.bench.registry_bench import _valid, add_engine
from shelfproof.bench.registry_stack import RegistryStack
from shelfproof.bench.stats import percentile
from shelfproof.cli.health import http_health
from shelfproof.gs1.labels import sign_label
from shelfproof.ledger.client import LedgerClient
from shelfproof.ledger.genesis import DEMO_BRAND_GLN, DEMO_RETAILER_GLN, DEMO_RETAILER_STORE_GLN
from shelfproof.ledger.v1 import ledger_pb2 as lpb
from shelfproof.ledger.v1 import ledger_pb2_grpc
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.product.v1 import product_pb2 as pb
from shelfproof.product.v1 import product_pb2_grpc
from shelfproof.runtime.client import call, insecure_channel
from shelfproof.runtime.processes import descendants, free_port, process_cpu_seconds

ORIGIN = "http://127.0.0.1"
def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_engine(parser)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds (after a warm-up)")
    parser.add_argument("--rate", type=float, default=2000.0, help="offered verifications per second, in total")
    parser.add_argument("--clients", type=int, default=2000, help="simulated consumers (distinct addresses)")
    parser.add_argument("--items", type=int, default=10_000, help="distinct items scanned")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=1, help="verify processes sharing the port")
    parser.add_argument(
        "--connections", choices=["per-scan", "keep-alive"], default="per-scan",
        help="a new TCP connection for every scan (as phones opening a QR link do) or one kept per consumer",
    )


# --- the benchmark -------------------------------------------------------------------------------------


def _tree_cpu(pid: int) -> float:
    return sum((process_cpu_seconds(p) or ("", 0.0))[1] for p in [pid, *descendants(pid)])


async def _keep_committing(client: LedgerClient, stop: asyncio.Event, per_s: float = 20.0) -> int:
    """Price changes at a steady rate, so blocks keep coming while consumers verify."""
    committed, cents = 0, 100
    while not stop.is_set():
        bodies = [
            txpb.TransactionBody(change_price=txpb.ChangePrice(
                gtin=_valid("0061414199990"), location_gln=DEMO_RETAILER_STORE_GLN,
                price=txpb.Money(currency_code="EUR", amount_minor=cents + i), unit_cost=txpb.Money(currency_code="EUR", amount_minor=50),
            ))
            for i in range(int(per_s))
        ]
        cents += 1
        results = await client.submit_many(bodies)
        committed += sum(1 for r in results if not isinstance(r, Exception))
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except asyncio.TimeoutError:
            pass
    return committed


async def run(args: argparse.Namespace) -> dict:
    binary = await asyncio.to_thread(loadgen.build, "loadgen")
    async with RegistryStack(args.engine) as stack, insecure_channel(stack.address) as channel:
        registry = product_pb2_grpc.ProductServiceStub(channel)
        ledger = ledger_pb2_grpc.LedgerServiceStub(insecure_channel(stack.ledger.address))
        gtin = _valid("0061414199991")
        for g in (gtin, _valid("0061414199990")):
            await registry.CreateProduct(pb.CreateProductRequest(product=pb.Product(gtin=g, name="bench")), timeout=30)
        batch = None
        async for reply in registry.CommissionItems(pb.CommissionItemsRequest(gtin=gtin, lot="VB1", count=args.items), timeout=300):
            batch = reply.batch if reply.HasField("batch") else batch
        content = await call(ledger.GetContent, lpb.GetContentRequest(sha256=batch.serials_sha256), idempotent=True, deadline_s=60)
        serials = content.content.decode().split("\n")
        brand = stack.genesis.accounts[f"{DEMO_BRAND_GLN}/admin-0"].signer(stack.genesis.chain_id).signing_key
        uris = [sign_label(brand, gtin, s, ORIGIN).to_uri() for s in serials]
        paths = [u[len(ORIGIN):] for u in uris]

        port = free_port()
        env = {
            **os.environ,
            "SHELFPROOF_PG_DSN": stack.dsn,
            "SHELFPROOF_VERIFY_PORT": str(port),
            "SHELFPROOF_VERIFY_METRICS_PORT": "0",  # any free port for each worker
            "SHELFPROOF_VERIFY_LEDGER_ADDRESS": stack.ledger.address,
            "SHELFPROOF_VERIFY_LEDGER_HOME": str(stack.tmp / "ledger"),
            "SHELFPROOF_VERIFY_PUBLIC_ORIGIN": ORIGIN,
            "SHELFPROOF_VERIFY_WORKERS": str(args.workers),
            "SHELFPROOF_LOG_LEVEL": "WARNING",
            "SHELFPROOF_LOG_FORMAT": "json",
        }
        with open(stack.tmp / "verify.log", "ab") as log:
            verify = subprocess.Popen(
                [sys.executable, "-m", "shelfproof.verify"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            deadline = time.monotonic() + 60
            while await http_health(f"127.0.0.1:{port}") != "SERVING":
                if verify.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"verify did not start; see {stack.tmp / 'verify.log'}")
                await asyncio.sleep(0.2)
            retailer = LedgerClient(ledger, stack.genesis.accounts[f"{DEMO_RETAILER_GLN}/admin-0"].signer(stack.genesis.chain_id))
            stop = asyncio.Event()
            committer = asyncio.create_task(_keep_committing(retailer, stop))
            height_before = (await ledger.GetLedgerStatus(lpb.GetLedgerStatusRequest(), timeout=5)).latest_height
            cpu_before = {"verify": _tree_cpu(verify.pid), **stack.ledger.cpu_seconds()}
            spec = {
                "port": port, "paths": paths, "rate": args.rate, "clients": args.clients, "seconds": args.seconds,
                "warmup": args.warmup, "connection_per_scan": args.connections == "per-scan",
            }
            result = await loadgen.run(binary, spec, args.warmup + args.seconds + 300)
            cpu_after = {"verify": _tree_cpu(verify.pid), **stack.ledger.cpu_seconds()}
            height_after = (await ledger.GetLedgerStatus(lpb.GetLedgerStatusRequest(), timeout=5)).latest_height
            stop.set()
            prices = await committer
        finally:
            verify.send_signal(signal.SIGTERM)
            await asyncio.to_thread(verify.wait, 30)
    samples = result["samples"]
    ok = [s for s in samples if s[1] == 200]
    latencies = [s[0] for s in ok]
    verdicts: dict[str, int] = {}
    for s in ok:
        verdicts[s[2]] = verdicts.get(s[2], 0) + 1
    return {
        "benchmark": "verify",
        "engine": args.engine,
        "connections": args.connections,
        "offered_rate": args.rate,
        "clients": args.clients,
        "items": args.items,
        # Completed verifications over the time it took to complete them (not the offered rate).
        "verifications_per_s": round(len(ok) / max(result["measured_s"], max((s[3] for s in ok), default=0.0)), 1),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "rate_limited": sum(1 for s in samples if s[1] == 429),
        "errors": sum(1 for s in samples if s[1] not in (200, 429)),
        "verdicts": verdicts,
        "ledger_blocks_during_run": height_after - height_before,
        "price_changes_committed": prices,
        # CPU seconds each process spent from the start of the load to its end (warm-up included).
        "cpu_s": {
            **{k: round(v - cpu_before.get(k, 0.0), 2) for k, v in cpu_after.items() if k != "load generator"},
            "load": round(result["cpu_s"], 2),
        },
        "measured_s": round(result["measured_s"], 2),
    }


BENCHMARK = Benchmark("consumer verifications per second (JSON form, proofs checked)", add_arguments, run)
