"""`shelfproof bench planner`: the planner's model (``planner.llm_bench``) and the drafting around it, on one
Ray Serve application started once:

1. bare-engine tokens/s for each dtype in ``--dtypes`` (the one this machine picks is measured in step 2);
2. the machine's dtype bare vs. through Serve (paired runs): tokens/s, ``serve_vs_bare``, schema validity;
3. ``--drafts`` varied drafter inputs through Serve at once: ``drafts_schema_valid_fraction``;
4. the time to draft a restock order for 1,000 products with the warm engine: quantities for all from the
   forecast and the inventory policy, a model-written rationale for the 50 most urgent lines, and the
   draft with its decision record committed on the ledger.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import shutil
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from psycopg_pool import AsyncConnectionPool

from shelfproof.bench import Benchmark
from shelfproof.bench.planner_stack import PlannerLedgerStack
from shelfproof.gs1.keys import check_digit
from shelfproof.ledger.client import LedgerClient
from shelfproof.ledger.genesis import DEMO_BRAND_GLN, DEMO_RETAILER_GLN, DEMO_RETAILER_STORE_GLN, development_genesis
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.runtime.client import insecure_channel
from shelfproof.runtime.server import GrpcServer
from shelfproof.runtime.settings import GrpcServerSettings

STORE = DEMO_RETAILER_STORE_GLN  # GLNs and GTINs carry their owner's company prefix


# Sized for a 2-core AVX2-only AMD EPYC (9,500-11,000 Ed25519 verifications/s per core), where the
# engine decodes 15-18 tokens/s on its one OpenMP thread and a batch takes as long as its longest answer:
# with --runs 3 --dtype-runs 2 --drafts 50 and whole answers as warm-ups that machine took 20.5 minutes
# (1,228 s), most of it the paired batches (6.8 min) and the emulated bf16 engine's (4 min). Pass those
# for tighter medians.
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--products", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=1, help="paired bare/served runs")
    parser.add_argument("--prompts-per-run", type=int, default=8)
    parser.add_argument("--dtypes", default="bfloat16,float32", help="bare-engine tokens/s for each (comma-separated)")
    parser.add_argument("--dtype-runs", type=int, default=1, help="runs per dtype other than the machine's")
    parser.add_argument("--drafts", type=int, default=16, help="varied drafter inputs checked for schema validity")


def _gtin(n: int) -> str:
    body = f"00614141{n:05d}"
    return body + str(check_digit(body))


async def _set_up(ledger, pool: AsyncConnectionPool, genesis, products: int) -> None:
    """Products, the retailer's policies, stock and eight weeks of intermittent sales."""
    chain = genesis.chain_id
    brand = LedgerClient(ledger, genesis.accounts[f"{DEMO_BRAND_GLN}/admin-0"].signer(chain))
    retailer = LedgerClient(ledger, genesis.accounts[f"{DEMO_RETAILER_GLN}/admin-0"].signer(chain))
    gtins = [_gtin(n) for n in range(1, products + 1)]
    for start in range(0, products, 500):
        await brand.submit_many([
            txpb.TransactionBody(register_product=txpb.RegisterProduct(gtin=g, name=f"Product {n}", brand="Bench"))
            for n, g in enumerate(gtins[start : start + 500], start)
        ], deadline_s=120)
    eur = lambda amount: txpb.Money(currency_code="EUR", amount_minor=amount)  # noqa: E731
    await retailer.submit_many([
        txpb.TransactionBody(register_location=txpb.RegisterLocation(gln=STORE, organization_gln=DEMO_RETAILER_GLN, name="Store")),
        txpb.TransactionBody(set_guardrail_policy=txpb.SetGuardrailPolicy(policy=txpb.GuardrailPolicy(
            organization_gln=DEMO_RETAILER_GLN, currency_code="EUR", budget_minor=50_000_000, budget_period_s=30 * 86_400,
            quorum_threshold_minor=1_000_000, approval_quorum=2, margin_floor_bps=1_000, max_discount_bps=3_000,
            max_price_change_bps_per_day=2_000, draft_ttl_s=86_400,
        ))),
        txpb.TransactionBody(set_replenishment_policy=txpb.SetReplenishmentPolicy(policy=txpb.ReplenishmentPolicy(
            organization_gln=DEMO_RETAILER_GLN, location_gln=STORE,
            items=[txpb.ItemBounds(gtin=g, min_order_quantity=6, max_order_quantity=600, case_pack=6, unit_cost=eur(200 + n % 300), lead_time_days=2 + n % 5)
                   for n, g in enumerate(gtins)],
        ))),
    ], deadline_s=120)
    today = datetime.now(timezone.utc).replace(hour=12, minute=0, second=0, microsecond=0)
    events, items, stock = io.StringIO(), io.StringIO(), io.StringIO()
    for n, g in enumerate(gtins):
        stock.write(f"{g}\t{STORE}\t{(n * 7) % 90}\t1\n")
        for day in range(56):
            sold = (n * 3 + day * 5) % 7 // 2  # 0-3 a day, many zero days
            if not sold:
                continue
            event_hash = f"ni:///sha-256;{n * 100 + day:064x}?ver=CBV2.0"
            when = (today - timedelta(days=day + 1)).isoformat()
            events.write(f"{event_hash}\tObjectEvent\t{when}\tOBSERVE\tretail_selling\tretail_sold\t{STORE}\t{{}}\tbench\t1\t0\t\\\\x00\n")
            for k in range(sold):
                items.write(f"{event_hash}\t{g}\tS{n}x{day}x{k}\n")
    async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        for table, columns, data in (
            ("inventory_positions", "gtin, location_gln, quantity, ledger_height", stock),
            ("events", "event_hash, event_type, event_time, action, biz_step, disposition, biz_location_gln, document, recorded_by, ledger_height, tx_index, tx_hash", events),
            ("event_items", "event_hash, gtin, serial", items),
        ):
            async with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                await copy.write(data.getvalue())


async def restock_timing(products: int, drafter) -> dict:
    """A warm DraftRestock over ``products`` products, through ``drafter`` (the Serve app already up)."""
    from shelfproof.planner.service import PlannerService
    from shelfproof.planner.v1 import planner_pb2 as pb
    from shelfproof.planner.v1 import planner_pb2_grpc

    genesis = development_genesis("shelfproof-bench")
    async with PlannerLedgerStack(genesis, "sp-bench-planner-") as stack:
        await _set_up(stack.ledger, stack.pool, genesis, products)
        service = PlannerService(
            stack.pool, LedgerClient(stack.ledger, genesis.accounts[f"{DEMO_RETAILER_GLN}/admin-1"].signer(genesis.chain_id)),
            drafter, stack.projector,
        )
        server = GrpcServer(GrpcServerSettings(port=0), [service.binding()])
        planner_channel = insecure_channel(f"127.0.0.1:{await server.start()}")
        try:
            stub = planner_pb2_grpc.PlannerServiceStub(planner_channel)
            # Warm: one small draft compiles the grammar and fills the caches the big one shares.
            await stub.DraftRestock(pb.DraftRestockRequest(location_gln=STORE, gtins=[_gtin(1)], request_id="warm"), timeout=300)
            began = time.perf_counter()
            reply = await stub.DraftRestock(pb.DraftRestockRequest(location_gln=STORE, request_id="bench"), timeout=600)
            elapsed = time.perf_counter() - began
        finally:
            await planner_channel.close()
            await server.stop()
    draft = reply.draft
    return {
        "restock_1000_s" if products == 1000 else f"restock_{products}_s": round(elapsed, 2),
        "restock_lines": len(draft.order_lines),
        "restock_products": products,
        "restock_committed_height": draft.ledger_ref.height,
    }


async def run(args: argparse.Namespace) -> dict:
    from shelfproof.planner import prompts
    from shelfproof.planner.app import start_drafter
    from shelfproof.planner.llm import LanguageEngine, LLMSettings, start_local_llm, stop_local_llm
    from shelfproof.planner.llm_bench import bare_tokens_per_s, bare_vs_serve, drafts_schema_validity

    started = time.monotonic()
    phases: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(name: str):
        began = time.monotonic()
        try:
            yield
        finally:
            phases[name] = round(time.monotonic() - began, 1)

    with phase("settings"):
        config = await asyncio.to_thread(LLMSettings().llm_config().resolved)
    sizes = {"prompts_per_run": args.prompts_per_run, "max_tokens": prompts.RESTOCK_MAX_TOKENS}
    by_dtype: dict[str, dict] = {}
    for dtype in [d.strip() for d in args.dtypes.split(",") if d.strip()]:
        if dtype != config.dtype:
            with phase(f"bare_{dtype}"):
                by_dtype[dtype] = await bare_tokens_per_s(config.model_copy(update={"dtype": dtype}), runs=args.dtype_runs, **sizes)
    tmp = Path(tempfile.mkdtemp(prefix="sp-bench-llm-"))
    with phase("bare_engine_start"):
        bare = await asyncio.to_thread(LanguageEngine, config)
    try:
        with phase("serve_start"):
            local = await asyncio.to_thread(start_local_llm, config, state_dir=tmp)
        try:
            with phase("bare_vs_serve"):
                serve = await bare_vs_serve(bare, local, runs=args.runs, **sizes)
            by_dtype[config.dtype] = {"tokens_per_s": serve["bare_tokens_per_s"], "engine_start_s": round(bare.start_s, 2)}
            info = bare.info()
            with phase("bare_shutdown"):
                bare.shutdown()  # its cores and memory go to the drafting parts
            with phase("drafter_start"):
                drafter = await asyncio.to_thread(start_drafter, 50)
            with phase("drafts"):
                sweep = await drafts_schema_validity(drafter, args.drafts)
            with phase("restock"):
                restock = await restock_timing(args.products, drafter)
        finally:
            with phase("serve_stop"):
                await asyncio.to_thread(stop_local_llm)
    finally:
        bare.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "benchmark": "planner",
        "engine": info["engine"], "engine_version": info["engine_version"], "model": info["model"],
        "weights_digest": info["weights_digest"], "dtype": config.dtype, "dtype_reason": config.dtype_reason,
        "omp_threads": config.omp_threads, "cpu_kv_cache_gib": config.cpu_kv_cache_gib,
        "tokens_per_s_by_dtype": {d: v["tokens_per_s"] for d, v in by_dtype.items()},
        "engine_start_s_by_dtype": {d: v["engine_start_s"] for d, v in by_dtype.items()},
        "serve_start_s": round(local.serve_start_s, 2),
        **serve, **sweep, **restock,
        "phases_s": phases,
        "total_s": round(time.monotonic() - started, 1),
    }


BENCHMARK = Benchmark("the planner's model per dtype, bare vs. on Ray Serve, drafts' schema validity, and a 1,000-product restock draft", add_arguments, run)
