"""`shelfproof bench pricing`: GetPrice lookups per second and p99 on one pricing process (warm),
basket lines per second (GetPrices), and the fan-out of one committed price change to 100 streams.

PostgreSQL, the ledger and the pricing service each run as their own process on free loopback ports;
the lookups come from the Go load generator (infra/grpcload), the rest from this process. The price book holds 200 products at one store, a third of them
under a promotion, so lookups compute a breakdown rather than read a number.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

from shelfproof.bench import Benchmark, loadgen
from shelfproof.bench.grpc_roundtrip import health_calls
from shelfproof.bench.registry_stack import ServiceStack
from shelfproof.bench.stats import percentile
from shelfproof.gs1.keys import check_digit
from shelfproof.ledger.client import LedgerClient
from shelfproof.ledger.genesis import DEMO_BRAND_GLN, DEMO_RETAILER_GLN, DEMO_RETAILER_STORE_GLN
from shelfproof.ledger.v1 import ledger_pb2 as lpb
from shelfproof.ledger.v1 import ledger_pb2_grpc
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.pricing.v1 import pricing_pb2 as pb
from shelfproof.pricing.v1 import pricing_pb2_grpc
from shelfproof.runtime.client import insecure_channel
from shelfproof.runtime.processes import process_cpu_seconds

PRODUCTS = 200
STREAMS = 100


def _gtin(n: int) -> str:
    body = f"0061414130{n:03d}"
    return body + str(check_digit(body))


def _body(**action) -> txpb.TransactionBody:
    return txpb.TransactionBody(created_unix_ms=int(time.time() * 1000), **action)


def _eur(amount: int) -> txpb.Money:
    return txpb.Money(currency_code="EUR", amount_minor=amount)


class PricingStack(ServiceStack):
    def __init__(self, engine: str) -> None:
        super().__init__(engine, "pricing", "shelfproof.pricing", "SHELFPROOF_PRICING_")


async def _seed(stack: PricingStack, ledger: ledger_pb2_grpc.LedgerServiceStub) -> tuple[list[str], LedgerClient]:
    chain = stack.genesis.chain_id
    brand = LedgerClient(ledger, stack.genesis.accounts[f"{DEMO_BRAND_GLN}/admin-0"].signer(chain))
    retailer = LedgerClient(ledger, stack.genesis.accounts[f"{DEMO_RETAILER_GLN}/admin-1"].signer(chain))
    gtins = [_gtin(n) for n in range(PRODUCTS)]
    store = DEMO_RETAILER_STORE_GLN
    now = int(time.time())
    await brand.submit_many([_body(register_product=txpb.RegisterProduct(gtin=g, name=f"bench {n}", category="pantry")) for n, g in enumerate(gtins)])
    policy = txpb.GuardrailPolicy(
        organization_gln=DEMO_RETAILER_GLN, currency_code="EUR", budget_minor=10**9, budget_period_s=86_400,
        quorum_threshold_minor=10**6, approval_quorum=1, margin_floor_bps=1_000, max_discount_bps=3_000,
        max_price_change_bps_per_day=10 * 10_000, draft_ttl_s=3_600,
    )
    setup = [
        _body(register_location=txpb.RegisterLocation(gln=store, organization_gln=DEMO_RETAILER_GLN, name="bench store")),
        _body(set_guardrail_policy=txpb.SetGuardrailPolicy(policy=policy)),
        *[_body(change_price=txpb.ChangePrice(gtin=g, location_gln=store, price=_eur(1_000 + n), unit_cost=_eur(500))) for n, g in enumerate(gtins)],
        _body(create_promotion=txpb.CreatePromotion(promotion_id="bench-pct", location_gln=store, gtins=gtins[: PRODUCTS // 3],
                                                    discount_bps=1_500, start_unix_s=now - 60, end_unix_s=now + 86_400)),
        _body(create_promotion=txpb.CreatePromotion(promotion_id="bench-3for2", location_gln=store, categories=["pantry"],
                                                    kind=txpb.PROMOTION_KIND_MULTI_BUY, buy_quantity=4, pay_quantity=3,
                                                    start_unix_s=now - 60, end_unix_s=now + 86_400)),
    ]
    results = await retailer.submit_many(setup)
    failed = [r for r in results if isinstance(r, Exception)]
    if failed:
        raise RuntimeError(f"seeding the price book failed: {failed[0]}")
    return gtins, retailer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=["embedded", "cometbft"], default="embedded")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64, help="lookups in flight")
    parser.add_argument("--connections", type=int, default=4, help="HTTP/2 connections the lookups share")
    parser.add_argument("--changes", type=int, default=20, help="committed changes timed through the 100 streams")


async def _closed_loop(seconds: float, concurrency: int, one) -> tuple[list[float], float]:
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def client(offset: int) -> None:
        i = offset
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            await one(i)
            latencies.append(time.perf_counter() - started)
            i += 1

    began = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(concurrency)))
    return latencies, time.perf_counter() - began


async def _lookups(address: str, store: str, picks: list[str], args: argparse.Namespace) -> tuple[list[float], dict]:
    """Closed-loop GetPrice from the Go load generator (a Python client costs as much CPU per call as the
    server it measures, and both share this machine's cores)."""
    requests = [pb.GetPriceRequest(gtin=g, location_gln=store, quantity=1 + i % 4).SerializeToString() for i, g in enumerate(picks)]
    result = await loadgen.grpc_closed_loop(
        address, "/shelfproof.pricing.v1.PricingService/GetPrice", requests,
        concurrency=args.concurrency, connections=args.connections, seconds=args.seconds, warmup=1.0,
    )
    return result["latencies"], result

async def run(args: argparse.Namespace) -> dict:
    async with PricingStack(args.engine) as stack:
        channels = [insecure_channel(stack.address) for _ in range(4)]
        ledger_channel = insecure_channel(stack.ledger.address)
        try:
            ledger = ledger_pb2_grpc.LedgerServiceStub(ledger_channel)
            gtins, retailer = await _seed(stack, ledger)
            stubs = [pricing_pb2_grpc.PricingServiceStub(c) for c in channels]
            store = DEMO_RETAILER_STORE_GLN
            # Warm: the book is projected and every code path ran once.
            deadline = time.monotonic() + 60
            while True:
                try:
                    await stubs[0].GetPrice(pb.GetPriceRequest(gtin=gtins[-1], location_gln=store), timeout=5)
                    break
                except Exception:  # noqa: BLE001 - not projected yet
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)
            rng = random.Random(7)
            picks = [rng.choice(gtins) for _ in range(4096)]

            cpu_before = process_cpu_seconds(stack.process.pid)
            lookups, load = await _lookups(stack.address, store, picks, args)
            lookup_s = args.seconds
            cpu_after = process_cpu_seconds(stack.process.pid)
            basket = pb.GetPricesRequest(location_gln=store, lines=[pb.PriceLine(gtin=g, quantity=1 + n % 5) for n, g in enumerate(gtins[:100])])

            async def basket_call(i: int) -> None:
                await stubs[i % len(stubs)].GetPrices(basket, timeout=10)

            baskets, basket_s = await _closed_loop(args.seconds / 2, 8, basket_call)

            # Fan-out: 100 streams on the store; each committed change timed to every stream's receipt.
            status = await ledger.GetLedgerStatus(lpb.GetLedgerStatusRequest(), timeout=5)
            received: list[dict[int, float]] = [dict() for _ in range(STREAMS)]

            async def follow(n: int) -> None:
                stream = stubs[n % len(stubs)].StreamPriceChanges(pb.StreamPriceChangesRequest(
                    from_height=status.latest_height + 1, location_glns=[store], gtins=[gtins[0]]))
                async for item in stream:
                    received[n][item.event.new_price.amount_minor] = time.perf_counter()

            followers = [asyncio.create_task(follow(n)) for n in range(STREAMS)]
            await asyncio.sleep(1.0)
            fanout: list[float] = []
            for k in range(args.changes):
                amount = 2_000 + k
                await retailer.submit(_body(change_price=txpb.ChangePrice(gtin=gtins[0], location_gln=store, price=_eur(amount), unit_cost=_eur(500))))
                committed = time.perf_counter()
                until = committed + 10
                while any(amount not in r for r in received) and time.perf_counter() < until:
                    await asyncio.sleep(0.002)
                fanout += [r[amount] - committed if amount in r else 10.0 for r in received]
            for task in followers:
                task.cancel()
            await asyncio.gather(*followers, return_exceptions=True)
        finally:
            for channel in channels:
                await channel.close()
            await ledger_channel.close()
    # The ceiling this machine sets for any unary call in one Python process (bare grpc.aio, no-op
    # health Check, same load generator), measured in the same run.
    ceiling = await health_calls("bare", args.seconds, args.concurrency, args.connections)
    lines = len(baskets) * len(basket.lines)
    lookups_per_s = len(lookups) / lookup_s
    return {
        "benchmark": "pricing",
        "engine": args.engine,
        "price_lookups_per_s": round(lookups_per_s, 1),
        "grpc_ceiling_calls_per_s": ceiling["rps"],
        "fraction_of_grpc_ceiling": round(lookups_per_s / ceiling["rps"], 3) if ceiling["rps"] else None,
        "p50_ms": round(percentile(lookups, 0.5) * 1000, 2),
        "p99_ms": round(percentile(lookups, 0.99) * 1000, 2),
        "concurrency": args.concurrency,
        "connections": args.connections,
        "lookup_codes": load["codes"],
        "load_cpu_s": round(load["cpu_s"], 2),
        "basket_lines_per_s": round(lines / basket_s, 1),
        "basket_p99_ms": round(percentile(baskets, 0.99) * 1000, 2),
        "stream_fanout_p50_ms": round(percentile(fanout, 0.5) * 1000, 2),
        "stream_fanout_p99_ms": round(percentile(fanout, 0.99) * 1000, 2),
        "streams": STREAMS,
        "changes": args.changes,
        "server_cpu_s_during_lookups": round(cpu_after[1] - cpu_before[1], 2) if cpu_before and cpu_after else None,
        "targets": {"price_lookups_per_s": 8_000, "stream_fanout_p99_ms": 100},
    }


BENCHMARK = Benchmark("GetPrice lookups and p99 on one pricing process, basket lines/s, stream fan-out to 100 streams", add_arguments, run)
