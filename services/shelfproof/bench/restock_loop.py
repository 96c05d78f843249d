"""`shelfproof bench restock-loop`: the autonomous restock loop against a baseline, on a simulated demand.

Two stores of the retailer sell ``--products`` products for ``--days`` days under a known intermittent
demand process (per series: a sale day with probability ``p``, then ``1 + Poisson(size - 1)`` units;
``p`` and ``size`` drawn once per series from a seeded generator), with each product's real lead time
(1-5 days) between an order and its delivery. Sales beyond the stock on hand are lost.

**The planner.** Every simulated day, after the day's sales, the restock runner (``planner.runner``) runs
for each store over the real ledger (embedded engine behind its gRPC adapter), PostgreSQL and the
planner's projection: it forecasts from the committed-sales query model, counts what is on order from
the purchase orders on the ledger, drafts, and commits the draft with its decision record; below the
guardrail policy's auto-approval threshold the ledger approves it and issues the purchase order. The
supplier's person accepts each order and its shipping event is recorded; the buyer's receiving event
(at the ship-to store, naming the order) is recorded on the day the order arrives, which fills and
closes its lines. ``--mode policy-only`` (the only mode here: the real engine on two CPU cores would
take minutes per day) drafts without the model: every decision record says the model was not asked.

**The baseline.** The same demand, lead times, review period, service level and order-up-to formula,
with no planner run: levels fixed from the history before the first day (no re-forecast), what is on
order tracked by the simulation itself, nothing on the ledger.

The stores' sales and stock live in the query model the way the registry's projection writes them
(``events``/``event_items`` rows of ``retail_selling`` events, ``inventory_positions``), written by the
simulation directly: committing every simulated sale through the ledger is the epcis benchmark's job.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from statistics import NormalDist

import numpy as np
from psycopg_pool import AsyncConnectionPool

from shelfproof.bench import Benchmark
from shelfproof.bench.planner_stack import PlannerLedgerStack
from shelfproof.gs1.keys import check_digit
from shelfproof.ledger.client import LedgerClient
from shelfproof.ledger.genesis import DEMO_BRAND_GLN, DEMO_RETAILER_GLN, DEMO_RETAILER_STORE_GLN, development_genesis
from shelfproof.ledger.v1 import ledger_pb2 as lpb
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.runtime.errors import DependencyUnavailable

STORES = (DEMO_RETAILER_STORE_GLN, "4012345000023")  # the retailer's (its company prefix)
PLANT = "0614141000029"  # the brand's site: the supplier ships from here
HISTORY_DAYS = 56
SERVICE_LEVEL = 0.95
REVIEW_PERIOD_DAYS = 1
AUTO_APPROVE_BELOW_MINOR = 2_000_000  # EUR 20,000: most daily orders; bigger ones wait for people


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--products", type=int, default=200)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--mode", choices=["policy-only"], default="policy-only",
                        help="policy-only: the planner drafts without its model (the engine is not started)")


def _gtin(n: int) -> str:
    body = f"00614141{n:05d}"
    return body + str(check_digit(body))


@dataclass
class Demand:
    """The known process, one row per (store, product) series, and its draws for every day."""

    occurrence: np.ndarray
    size: np.ndarray
    draws: np.ndarray  # (series, HISTORY_DAYS + days) units demanded

    @classmethod
    def generate(cls, series: int, days: int, seed: int) -> "Demand":
        rng = np.random.default_rng(seed)
        occurrence = rng.uniform(0.1, 0.6, series)
        size = rng.uniform(1.0, 4.0, series)
        total = HISTORY_DAYS + days
        happens = rng.random((series, total)) < occurrence[:, None]
        units = 1 + rng.poisson(np.repeat((size - 1)[:, None], total, axis=1))
        return cls(occurrence, size, np.where(happens, units, 0).astype(np.int64))


@dataclass
class StoreQueryModel:
    """What the planner's run sees of the stores: their stock and sales in PostgreSQL."""

    pool: AsyncConnectionPool
    first_day: date
    serial: int = 0

    async def write_sales(self, day: date, sold: dict[tuple[str, str], int]) -> None:
        events, items = io.StringIO(), io.StringIO()
        when = datetime.combine(day, datetime.min.time(), timezone.utc).replace(hour=15).isoformat()
        for (store, gtin), units in sold.items():
            if units <= 0:
                continue
            self.serial += 1
            event_hash = f"ni:///sha-256;{self.serial:064x}?ver=CBV2.0"
            events.write(f"{event_hash}\tObjectEvent\t{when}\tOBSERVE\tretail_selling\tretail_sold\t{store}\t{{}}\tbench\t1\t0\t\\\\x00\n")
            for k in range(units):
                items.write(f"{event_hash}\t{gtin}\tB{self.serial}x{k}\n")
        async with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            for table, columns, data in (
                ("events", "event_hash, event_type, event_time, action, biz_step, disposition, biz_location_gln, document, recorded_by, ledger_height, tx_index, tx_hash", events),
                ("event_items", "event_hash, gtin, serial", items),
            ):
                async with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    await copy.write(data.getvalue())

    async def write_stock(self, on_hand: dict[tuple[str, str], int]) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("DELETE FROM inventory_positions")
            async with conn.cursor() as cur, cur.copy("COPY inventory_positions (gtin, location_gln, quantity, ledger_height) FROM STDIN") as copy:
                await copy.write("".join(f"{g}\t{s}\t{q}\t1\n" for (s, g), q in on_hand.items()))


class PolicyOnly:
    """The drafting backend of ``--mode policy-only``: the model is not started, so every run goes on
    with the policy's quantities and says so in its decision record."""

    async def restock(self, *args):
        raise DependencyUnavailable("policy-only benchmark mode: the model is not started")

    async def promotion(self, *args, **kwargs):
        raise DependencyUnavailable("policy-only benchmark mode: the model is not started")


@dataclass
class Tally:
    demanded: int = 0
    sold: int = 0
    stockout_days: int = 0
    inventory_value_minor: list[int] = field(default_factory=list)

    def day(self, demanded: int, sold: int, stockouts: int, value_minor: int) -> None:
        self.demanded += demanded
        self.sold += sold
        self.stockout_days += stockouts
        self.inventory_value_minor.append(value_minor)

    def summary(self, prefix: str = "") -> dict:
        return {
            f"{prefix}fill_rate": round(self.sold / self.demanded, 4) if self.demanded else 1.0,
            f"{prefix}stockout_days": self.stockout_days,
            f"{prefix}avg_inventory_value": round(sum(self.inventory_value_minor) / len(self.inventory_value_minor) / 100, 2),
        }


def _sell(on_hand: np.ndarray, demand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sold = np.minimum(on_hand, demand)
    return sold, on_hand - sold


def baseline(demand: Demand, lead: np.ndarray, cost: np.ndarray, start_stock: np.ndarray, days: int) -> Tally:
    """Order-up-to with levels fixed from the history, reviewed daily, on-order tracked here."""
    history = demand.draws[:, :HISTORY_DAYS].astype(np.float64)
    mu, sigma = history.mean(axis=1), history.std(axis=1)
    z = NormalDist().inv_cdf(SERVICE_LEVEL)
    protection = lead + REVIEW_PERIOD_DAYS
    level = np.ceil(mu * protection + z * sigma * np.sqrt(protection)).astype(np.int64)
    on_hand = start_stock.copy()
    arrivals = np.zeros((len(lead), days + 10), dtype=np.int64)
    tally = Tally()
    for d in range(days):
        on_hand += arrivals[:, d]
        wanted = demand.draws[:, HISTORY_DAYS + d]
        sold, on_hand = _sell(on_hand, wanted)
        tally.day(int(wanted.sum()), int(sold.sum()), int((wanted > sold).sum()), int((on_hand * cost).sum()))
        on_order = arrivals[:, d + 1 :].sum(axis=1)
        quantity = np.maximum(level - on_hand - on_order, 0)
        arrivals[np.arange(len(lead)), d + lead] += quantity
    return tally


async def run(args: argparse.Namespace) -> dict:
    from shelfproof.planner.runner import DRAFTED, RestockRunner
    from shelfproof.planner.service import PlannerService

    began = time.monotonic()
    products, days = args.products, args.days
    gtins = [_gtin(n) for n in range(1, products + 1)]
    series = [(store, g) for store in STORES for g in gtins]
    demand = Demand.generate(len(series), days, args.seed)
    lead = np.array([1 + n % 5 for n in range(products)] * len(STORES), dtype=np.int64)
    cost = np.array([100 + (n * 37) % 500 for n in range(products)] * len(STORES), dtype=np.int64)
    mean = demand.draws[:, :HISTORY_DAYS].mean(axis=1)
    start_stock = np.ceil(mean * (lead + REVIEW_PERIOD_DAYS + 2)).astype(np.int64)
    first_day = datetime.now(timezone.utc).date() - timedelta(days=days + 1)
    today = {"day": first_day}

    genesis = development_genesis("shelfproof-bench-loop")
    chain = genesis.chain_id
    async with PlannerLedgerStack(genesis, "sp-bench-loop-") as stack:
        ledger, pool, projector = stack.ledger, stack.pool, stack.projector
        signer = lambda agent: LedgerClient(ledger, genesis.accounts[agent].signer(chain))  # noqa: E731
        brand, retailer = signer(f"{DEMO_BRAND_GLN}/admin-0"), signer(f"{DEMO_RETAILER_GLN}/admin-0")
        supplier_person = signer(f"{DEMO_BRAND_GLN}/person-0")
        await _set_up(brand, retailer, gtins, lead[:products], cost[:products])
        service = PlannerService(
            pool, signer(f"{DEMO_RETAILER_GLN}/admin-1"), PolicyOnly(), projector, service_level=SERVICE_LEVEL,
            review_period_days=REVIEW_PERIOD_DAYS, history_days=HISTORY_DAYS, today=lambda: today["day"],
        )
        runner = RestockRunner(service, pool, list(STORES), cadence_s=86_400, clock=lambda: time.time())
        sim = StoreQueryModel(pool, first_day)
        index = {key: k for k, key in enumerate(series)}
        # The history before the first day: what the forecasts start from.
        for h in range(HISTORY_DAYS):
            day = first_day - timedelta(days=HISTORY_DAYS - h)
            await sim.write_sales(day, {key: int(demand.draws[k, h]) for key, k in index.items()})
        on_hand = start_stock.copy()
        # Day -> order id -> (store, the order, the lines due that day): each line comes after its own lead time.
        arrivals: dict[int, dict[str, tuple[str, st.PurchaseOrderRecord, list[st.PurchaseOrderLine]]]] = {}
        tally, drafts, held, issued, run_seconds = Tally(), 0, 0, [], []
        for d in range(days):
            today["day"] = first_day + timedelta(days=d)
            for store, order, lines in arrivals.pop(d, {}).values():
                await _receive(retailer, order, lines)
                for line in lines:
                    on_hand[index[(store, line.gtin)]] += line.confirmed_quantity
            wanted = demand.draws[:, HISTORY_DAYS + d]
            sold, on_hand = _sell(on_hand, wanted)
            tally.day(int(wanted.sum()), int(sold.sum()), int((wanted > sold).sum()), int((on_hand * cost).sum()))
            await sim.write_sales(today["day"], {key: int(sold[k]) for key, k in index.items()})
            await sim.write_stock({key: int(on_hand[k]) for key, k in index.items()})
            for store in STORES:
                started = time.perf_counter()
                outcome = await runner.run(store, "cadence", d)
                run_seconds.append(time.perf_counter() - started)
                if outcome is None or outcome.outcome != DRAFTED:
                    continue
                drafts += 1
                record = await _value(ledger, "drafts", outcome.draft_id, st.DraftRecord)
                if record.status != st.DRAFT_STATUS_APPROVED:
                    held += 1  # waits for people; the simulation's people do not come
                    continue
                index_record = await _value(ledger, "orders", f"@draft/{outcome.draft_id}", st.PurchaseOrderIndex)
                for order_id in index_record.order_ids:
                    order = await _value(ledger, "orders", order_id, st.PurchaseOrderRecord)
                    await supplier_person.submit(txpb.TransactionBody(acknowledge_purchase_order=txpb.AcknowledgePurchaseOrder(
                        order_id=order_id, status=txpb.ORDER_RESPONSE_STATUS_ACCEPTED)))
                    await _ship(brand, order)
                    for line in order.lines:
                        due = arrivals.setdefault(d + int(lead[index[(store, line.gtin)]]), {})
                        due.setdefault(order_id, (store, order, []))[2].append(line)
                    issued.append(order_id)
        with_record = 0
        for order_id in issued:
            order = await _value(ledger, "orders", order_id, st.PurchaseOrderRecord)
            draft = await _value(ledger, "drafts", order.draft_id, st.DraftRecord)
            decision = draft.draft.decision_record if draft is not None else None
            if decision is not None and decision.output_sha256 and order.decision_record_sha256:
                with_record += 1
    reference = baseline(demand, lead, cost, start_stock, days)
    return {
        "benchmark": "restock-loop",
        "mode": args.mode,
        "stores": len(STORES), "products": products, "days": days, "seed": args.seed,
        **tally.summary(),
        "orders": len(issued),
        "drafts": drafts,
        "auto_approved_fraction": round((drafts - held) / drafts, 4) if drafts else 0.0,
        "held_for_people": held,
        "orders_on_ledger_with_record": with_record,
        **reference.summary("baseline_"),
        "service_level": SERVICE_LEVEL,
        "run_s_median": round(float(np.median(run_seconds)), 3) if run_seconds else None,
        "wall_s": round(time.monotonic() - began, 1),
        "scaled": "policy-only: the drafter's model is not started (the CPU engine would take minutes per simulated day)",
    }


async def _value(ledger, store: str, key: str, message):
    reply = await ledger.QueryMany(lpb.QueryManyRequest(keys=[lpb.StoreKey(store=store, key=key.encode())]), timeout=10)
    value = reply.values[0]
    return message.FromString(value.value) if value.found else None


def _event(step: str, order: st.PurchaseOrderRecord, lines, *, location: str = "", read_point: str = "") -> txpb.TransactionBody:
    """A class-level EPCIS event naming the order, as the registry's capture would record it."""
    from shelfproof.registry.events import plan_capture

    event = {
        "type": "ObjectEvent", "eventTime": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "eventTimeZoneOffset": "+00:00", "epcList": [], "action": "OBSERVE", "bizStep": step,
        "disposition": "in_transit" if step == "shipping" else "in_progress",
        "bizTransactionList": [{"type": "po", "bizTransaction": order.biz_transaction}],
        "quantityList": [{"epcClass": f"https://id.gs1.org/01/{line.gtin}", "quantity": line.confirmed_quantity}
                         for line in lines if line.confirmed_quantity > 0],
    }
    if location:
        event["bizLocation"] = {"id": f"https://id.gs1.org/414/{location}"}
    if read_point:
        event["readPoint"] = {"id": f"https://id.gs1.org/414/{read_point}"}
    document = {"@context": ["https://ref.gs1.org/standards/epcis/epcis-context.jsonld"], "type": "EPCISDocument",
                "schemaVersion": "2.0", "creationDate": event["eventTime"], "epcisBody": {"eventList": [event]}}
    planned, = plan_capture(json.dumps(document).encode())
    return planned.body


async def _ship(brand: LedgerClient, order: st.PurchaseOrderRecord) -> None:
    await brand.submit(_event("shipping", order, order.lines, read_point=PLANT))


async def _receive(retailer: LedgerClient, order: st.PurchaseOrderRecord, lines: list[st.PurchaseOrderLine]) -> None:
    """The lines due today, received at the order's store (a partial delivery until the last comes)."""
    await retailer.submit(_event("receiving", order, lines, location=order.ship_to_gln, read_point=order.ship_to_gln))


async def _set_up(brand: LedgerClient, retailer: LedgerClient, gtins: list[str], lead: np.ndarray, cost: np.ndarray) -> None:
    await brand.submit_many([
        txpb.TransactionBody(register_product=txpb.RegisterProduct(gtin=g, name=f"Product {n}", brand="Bench"))
        for n, g in enumerate(gtins)
    ], deadline_s=120)
    eur = lambda amount: txpb.Money(currency_code="EUR", amount_minor=int(amount))  # noqa: E731
    bodies = [
        txpb.TransactionBody(set_guardrail_policy=txpb.SetGuardrailPolicy(policy=txpb.GuardrailPolicy(
            organization_gln=DEMO_RETAILER_GLN, currency_code="EUR", budget_minor=10**13, budget_period_s=30 * 86_400,
            quorum_threshold_minor=10**12, approval_quorum=2, auto_approve_below_minor=AUTO_APPROVE_BELOW_MINOR,
            margin_floor_bps=1_000, max_discount_bps=3_000, max_price_change_bps_per_day=2_000, draft_ttl_s=7 * 86_400,
        ))),
    ]
    for store in STORES:
        bodies.append(txpb.TransactionBody(register_location=txpb.RegisterLocation(gln=store, organization_gln=DEMO_RETAILER_GLN, name=f"Store {store}")))
        bodies.append(txpb.TransactionBody(set_replenishment_policy=txpb.SetReplenishmentPolicy(policy=txpb.ReplenishmentPolicy(
            organization_gln=DEMO_RETAILER_GLN, location_gln=store, items=[
                txpb.ItemBounds(gtin=g, min_order_quantity=1, max_order_quantity=1_000, case_pack=1, unit_cost=eur(cost[n]),
                                lead_time_days=int(lead[n]), supplier_gln=DEMO_BRAND_GLN)
                for n, g in enumerate(gtins)
            ]))))
    await retailer.submit_many(bodies, deadline_s=120)


BENCHMARK = Benchmark("the autonomous restock loop vs. order-up-to alone on simulated demand", add_arguments, run)
