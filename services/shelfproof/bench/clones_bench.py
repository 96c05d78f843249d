"""`shelfproof bench clones`: planted clones against the real stack, detection measured.

The scenario (seeded, so two runs with one seed scan the same codes at the same places):
- one product (category "Fragrance": 5 expected scans per item) and one lot of ``--items`` items,
  declared as sold in western Europe; genuine items are scanned 1-4 times each (mean about 2.2, every
  scan by a distinct phone) within 40 km of Paris, over up to three days per item, in a window that
  ended weeks ago;
- ``--share`` of all scans (60%) share a coarse cell, the rest share none; of those, ``--tz-share``
  (90%: the page's script ran) send the phone's time zone, which the verifier turns into the coarse
  region around the zone's principal city (Europe/Paris, Asia/Shanghai, Africa/Lagos,
  America/Sao_Paulo); drawn from a generator of its own, so ``--tz-share 0`` is the same scenario
  without time zones;
- ``--copy-rate`` of the codes (5%) are copied: each copy is scanned 2-5 times in one of Shanghai,
  Lagos or São Paulo (20 km jitter), the first copy scan minutes, hours, days or weeks (a quarter
  each) after the code's last genuine scan, the next ones 10 minutes to 2 days apart;
- ``--sold`` of the genuine items (1-3 looks before) are sold at the Paris store now; the buyer's first look (its claim)
  shares no cell half the time; then half of them are looked at from the neighbouring cell (must stay
  GENUINE) and the other half turn up 300-900 km away (must be flagged);
- ``--forgeries`` codes are forged: a wrong signature, a key the ledger does not know, or a brand-signed
  serial that was never commissioned (a third each).
Scans run through the verifier's own code (``Verifier.verify``: query model, the ledger's proofs,
the ledger's clone rules) with the simulated scan time, in per-code order: every round verifies the
next scan of each code, records it on the ledger, and waits until that state is provable, so each
verdict rests on every earlier scan of its code. Latency is that of ``Verifier.verify`` under up to
``--concurrency`` concurrent scans (the HTTP hop is ``bench verify``'s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import time
from dataclasses import dataclass, field

from nacl.signing import SigningKey
from psycopg_pool import AsyncConnectionPool

from shelfproof.bench import Benchmark
from shelfproof.bench.registry_bench import _valid, add_engine
from shelfproof.bench.registry_stack import RegistryStack
from shelfproof.bench.stats import percentile
from shelfproof.gs1.digital_link import parse_digital_link
from shelfproof.gs1.labels import sign_label
from shelfproof.ledger.client import LedgerClient
from shelfproof.ledger.genesis import CONSORTIUM_GLN, DEMO_BRAND_GLN
from shelfproof.ledger.v1 import ledger_pb2 as lpb
from shelfproof.ledger.v1 import ledger_pb2_grpc
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.product.v1 import alerts_pb2 as apb
from shelfproof.product.v1 import alerts_pb2_grpc
from shelfproof.product.v1 import events_pb2 as epb
from shelfproof.product.v1 import events_pb2_grpc
from shelfproof.product.v1 import product_pb2 as pb
from shelfproof.product.v1 import product_pb2_grpc
from shelfproof.runtime.client import call, insecure_channel
from shelfproof.verify import geo
from shelfproof.verify.service import LedgerReader, QueryModel, ScanRecorder, Verifier
from shelfproof.verify.trust import local_trusted_hashes
from shelfproof.verify.verdict import CloneRules

ORIGIN = "https://id.shelfproof.example"
PARIS = (48.8566, 2.3522)
COPY_CITIES = {"Shanghai": (31.2304, 121.4737), "Lagos": (6.5244, 3.3792), "São Paulo": (-23.5505, -46.6333)}
# The time zone a phone in each place reports (the sold items' other cities are in Europe/Paris's
# neighbours; they share a cell in this scenario).
TIME_ZONES = {"Paris": "Europe/Paris", "Shanghai": "Asia/Shanghai", "Lagos": "Africa/Lagos", "São Paulo": "America/Sao_Paulo"}
# Cities 300-900 km from Paris where a sold item's code turns up.
ELSEWHERE = {"Lyon": (45.764, 4.8357), "Brussels": (50.8503, 4.3517), "Strasbourg": (48.5734, 7.7521), "Bordeaux": (44.8378, -0.5792)}
MARKETS = ["u0", "u1", "u2", "u3", "u4", "u6", "u8", "u9", "uc", "ud", "gb", "gc", "gf", "ez", "sp", "sr"]
STORE = "0614141000036"
MINUTE, HOUR, DAY = 60, 3600, 86_400
DELAYS = {"minutes": (5 * MINUTE, HOUR), "hours": (HOUR, 12 * HOUR), "days": (DAY, 6 * DAY), "weeks": (7 * DAY, 28 * DAY)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_engine(parser)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--copy-rate", type=float, default=0.05)
    parser.add_argument("--share", type=float, default=0.6, help="fraction of scans that share a cell")
    parser.add_argument("--tz-share", type=float, default=0.9, help="fraction of the scans without a cell that send a time zone")
    parser.add_argument("--sold", type=int, default=60)
    parser.add_argument("--forgeries", type=int, default=90)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=32)


@dataclass
class PlannedScan:
    unix_s: float
    cell: str
    kind: str  # "genuine", "copy", "neighbour", "elsewhere"
    tz: str = ""  # the phone's time zone, sent when it shares no cell
    verdict: str = ""
    reason: str = ""
    latency_s: float = 0.0


@dataclass
class Code:
    serial: str
    scans: list[PlannedScan] = field(default_factory=list)
    copy_city: str = ""
    copy_delay: str = ""


def _near(rng: random.Random, center: tuple[float, float], km: float) -> tuple[float, float]:
    r, a = km * math.sqrt(rng.random()), rng.random() * 2 * math.pi
    return center[0] + r * math.cos(a) / 111.0, center[1] + r * math.sin(a) / (111.0 * math.cos(math.radians(center[0])))


def plan(rng: random.Random, serials: list[str], args: argparse.Namespace, now: float) -> tuple[list[Code], list[Code]]:
    """(every scanned code, the ones sold later) with each genuine or copy scan's time, cell and kind."""
    start = now - 60 * DAY
    codes = [Code(s) for s in serials]
    copied = set(rng.sample(range(args.sold, len(codes)), round(len(codes) * args.copy_rate)))
    tz_rng = random.Random(args.seed + 1)

    def cell(center: tuple[float, float], km: float) -> str:
        return geo.encode(*_near(rng, center, km)) if rng.random() < args.share else ""

    def scan(t: float, city: str, km: float, kind: str) -> PlannedScan:
        c = cell(COPY_CITIES.get(city, PARIS), km)
        return PlannedScan(t, c, kind, "" if c or tz_rng.random() >= args.tz_share else TIME_ZONES[city])

    for n, code in enumerate(codes):
        t = start + rng.uniform(0, 10 * DAY)
        # Items sold later get 1-3 looks before the sale (the buyer adds two): at most 5 in all, as the rest.
        looks = rng.choices([1, 2, 3], weights=[35, 35, 30])[0] if n < args.sold else rng.choices([1, 2, 3, 4], weights=[30, 30, 25, 15])[0]
        for _ in range(looks):
            code.scans.append(scan(t, "Paris", 40, "genuine"))
            t += rng.uniform(10 * MINUTE, DAY)
        if n in copied:
            code.copy_city = rng.choice(sorted(COPY_CITIES))
            code.copy_delay = rng.choice(sorted(DELAYS))
            t = code.scans[-1].unix_s + rng.uniform(*DELAYS[code.copy_delay])
            for _ in range(rng.randint(2, 5)):
                code.scans.append(scan(t, code.copy_city, 20, "copy"))
                t += rng.uniform(10 * MINUTE, 2 * DAY)
    return codes, codes[: args.sold]


async def _rounds(codes: list[Code], verifier: Verifier, links: dict[str, object], ledger, probe, concurrency: int) -> None:
    """Each code's scans in order: round r verifies the r-th scan of every code, then commits them."""
    gate = asyncio.Semaphore(concurrency)

    async def one(code: Code, scan: PlannedScan) -> None:
        async with gate:
            began = time.perf_counter()
            # A distinct phone per scan (the verifier counts one phone once per 10 minutes).
            report = await verifier.verify(
                links[code.serial], client=f"{code.serial}@{scan.unix_s}", cell=scan.cell,
                region=geo.region_of_time_zone(scan.tz) if scan.tz else "", now=scan.unix_s,
            )
            scan.latency_s = time.perf_counter() - began
            scan.verdict, scan.reason = report["verdict"], (report["reasons"] or [""])[0]

    for r in range(max((len(c.scans) for c in codes), default=0)):
        await asyncio.gather(*(one(c, c.scans[r]) for c in codes if r < len(c.scans)))
        await verifier.scans.flush()
        await _provable(ledger, probe)


async def _provable(ledger, probe: lpb.StoreKey) -> None:
    """Wait until what is committed now is what a proven read answers (the verifier's next reads rest
    on it): a QueryMany with proofs at or above the latest height seen now."""
    status = await call(ledger.GetLedgerStatus, lpb.GetLedgerStatusRequest(), idempotent=True, deadline_s=10)
    while True:
        # Idempotent: retried while the engine is briefly UNAVAILABLE (CometBFT between blocks).
        reply = await call(ledger.QueryMany, lpb.QueryManyRequest(keys=[probe], prove=True), idempotent=True, deadline_s=10)
        if reply.height >= status.latest_height:
            return
        await asyncio.sleep(0.05)


async def _projected(pool: AsyncConnectionPool, batch_id: str, count: int, timeout_s: float = 120) -> None:
    """Wait until the registry's query model holds every item of the batch (the verifier maps a
    serial to its batch there; an item it does not know yet reads as never commissioned)."""
    deadline = time.monotonic() + timeout_s
    while True:
        async with pool.connection() as conn:
            row = await (await conn.execute("SELECT count(*) FROM items WHERE batch_id = %s", (batch_id,))).fetchone()
        if row[0] >= count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the query model holds {row[0]} of {count} items after {timeout_s} s")
        await asyncio.sleep(0.2)


def _sale_document(gtin: str, serials: list[str]) -> bytes:
    event = {
        "type": "ObjectEvent", "eventTime": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), "eventTimeZoneOffset": "+00:00",
        "action": "OBSERVE", "epcList": [f"https://id.gs1.org/01/{gtin}/21/{s}" for s in serials],
        "bizStep": "retail_selling", "disposition": "retail_sold",
        "bizLocation": {"id": f"https://id.gs1.org/414/{STORE}"}, "readPoint": {"id": f"https://id.gs1.org/414/{STORE}"},
    }
    return json.dumps({
        "@context": ["https://ref.gs1.org/standards/epcis/epcis-context.jsonld"], "type": "EPCISDocument",
        "schemaVersion": "2.0", "creationDate": event["eventTime"], "epcisBody": {"eventList": [event]},
    }).encode()


def _fraction(hits: int, total: int) -> float | None:
    return round(hits / total, 4) if total else None


async def run(args: argparse.Namespace) -> dict:
    rng = random.Random(args.seed)
    async with RegistryStack(args.engine) as stack, insecure_channel(stack.address) as channel:
        registry = product_pb2_grpc.ProductServiceStub(channel)
        ledger = ledger_pb2_grpc.LedgerServiceStub(insecure_channel(stack.ledger.address))
        gtin = _valid("0061414199992")
        await registry.CreateProduct(pb.CreateProductRequest(product=pb.Product(gtin=gtin, name="Eau de parfum 50 ml", category="Fragrance")), timeout=30)
        await registry.CreateLocation(pb.CreateLocationRequest(location=pb.Location(gln=STORE, name="Paris store", country_code="FR")), timeout=30)
        await alerts_pb2_grpc.AlertServiceStub(channel).DeclareMarkets(apb.DeclareMarketsRequest(gtin=gtin, cells=MARKETS), timeout=30)
        batch = None
        async for reply in registry.CommissionItems(pb.CommissionItemsRequest(gtin=gtin, lot="CL1", count=args.items), timeout=300):
            batch = reply.batch if reply.HasField("batch") else batch
        content = await call(ledger.GetContent, lpb.GetContentRequest(sha256=batch.serials_sha256), idempotent=True, deadline_s=60)
        serials = content.content.decode().split("\n")
        brand_key = stack.genesis.accounts[f"{DEMO_BRAND_GLN}/admin-0"].signer(stack.genesis.chain_id).signing_key
        links = {s: sign_label(brand_key, gtin, s, ORIGIN) for s in serials}

        pool = AsyncConnectionPool(stack.dsn, min_size=2, max_size=8, open=False)
        await pool.open(wait=True)
        await _projected(pool, batch.batch_id, args.items)
        verifier_account = stack.genesis.accounts[f"{CONSORTIUM_GLN}/verifier-0"].signer(stack.genesis.chain_id)
        recorder = ScanRecorder(LedgerClient(ledger, verifier_account), flush_interval_s=3600)  # flushed per round
        reader = LedgerReader(ledger, stack.genesis.chain_id, local_trusted_hashes(stack.tmp / "ledger"))
        verifier = Verifier(QueryModel(pool), reader, recorder, CloneRules())
        try:
            probe = lpb.StoreKey(store="batches", key=batch.batch_id.encode())
            await _provable(ledger, probe)
            scanned, sold = plan(rng, serials, args, time.time())
            await _rounds(scanned, verifier, links, ledger, probe, args.concurrency)
            sold_results = await _sold_then_elsewhere(rng, sold, gtin, channel, verifier, links, ledger, probe, args)
            forged = await _forgeries(rng, gtin, serials, brand_key, verifier, args.forgeries)
            compromised_on_ledger = 0
            for code in (c for c in scanned if c.copy_city):
                reply = await ledger.Query(lpb.QueryRequest(store="scans", key=f"{gtin}/{code.serial}".encode()), timeout=10)
                compromised_on_ledger += st.ScanRecord.FromString(reply.value).HasField("compromise")
        finally:
            await pool.close()
    return _summary(args, scanned, sold, sold_results, forged, compromised_on_ledger)


async def _sold_then_elsewhere(rng, sold: list[Code], gtin: str, channel, verifier: Verifier, links, ledger, probe, args) -> list[PlannedScan]:
    """Items shoppers looked at weeks ago are sold now at the Paris store. The buyer's first look (its
    claim) shares no cell half the time; then half of the buyers look again from the neighbouring cell
    (about 33 km: must stay GENUINE) and the other half's code turns up 300-900 km away. All within
    minutes, real time: a sale's time is its block's, and a scan is at most 300 s after its block."""
    if not sold:
        return []
    await events_pb2_grpc.EventServiceStub(channel).CaptureEvents(
        epb.CaptureEventsRequest(epcis_document=_sale_document(gtin, [c.serial for c in sold])), timeout=60)
    await _provable(ledger, probe)
    t0 = time.time()
    elsewhere = []
    tz_rng = random.Random(args.seed + 2)
    for n, code in enumerate(sold):
        home = _near(rng, PARIS, 30)
        claim = geo.encode(*home) if rng.random() < 0.5 else ""
        tz = "" if claim or tz_rng.random() >= args.tz_share else TIME_ZONES["Paris"]
        code.scans.append(PlannedScan(t0, claim, "genuine", tz))
        if n % 2 == 0:
            code.scans.append(PlannedScan(t0 + 2, geo.encode(home[0] + 0.3, home[1]), "neighbour"))
        else:
            city = ELSEWHERE[sorted(ELSEWHERE)[n // 2 % len(ELSEWHERE)]]
            code.scans.append(PlannedScan(t0 + 2, geo.encode(*_near(rng, city, 20)), "elsewhere"))
            elsewhere.append(code.scans[-1])
    await _rounds([Code(c.serial, [s for s in c.scans if s.unix_s >= t0]) for c in sold], verifier, links, ledger, probe, args.concurrency)
    return elsewhere


async def _forgeries(rng, gtin: str, serials: list[str], brand_key, verifier: Verifier, count: int) -> list[str]:
    rogue = SigningKey.generate()
    verdicts = []
    for n in range(count):
        serial = rng.choice(serials)
        if n % 3 == 0:  # the brand's signature over another serial
            uri = sign_label(brand_key, gtin, serial, ORIGIN).to_uri()
            other = sign_label(brand_key, gtin, rng.choice(serials), ORIGIN).to_uri()
            uri = uri.split("?")[0] + "?" + other.split("?")[1]
        elif n % 3 == 1:  # signed with a key the ledger does not know
            uri = sign_label(rogue, gtin, serial, ORIGIN).to_uri()
        else:  # a serial the brand never commissioned, with the brand's real signature
            uri = sign_label(brand_key, gtin, f"FAKE{n:06d}", ORIGIN).to_uri()
        link = parse_digital_link(uri, max_length=4096)
        report = await verifier.verify(link, client=f"forger-{n}", cell="", now=time.time())
        verdicts.append(report["verdict"])
    return verdicts


def _summary(args, scanned: list[Code], sold: list[Code], elsewhere: list[PlannedScan], forged: list[str], on_ledger: int) -> dict:
    copied = [c for c in scanned if c.copy_city]
    genuine_codes = [c for c in scanned if not c.copy_city]
    detected, after_total, after_flagged = 0, 0, 0
    by_delay: dict[str, list[int]] = {}
    missed: list[dict] = []
    for code in copied:
        copies = [s for s in code.scans if s.kind == "copy"]
        first = next((i for i, s in enumerate(copies) if s.verdict == "SUSPICIOUS"), None)
        hit = by_delay.setdefault(code.copy_delay, [0, 0])
        hit[1] += 1
        if first is None:
            genuine = [s for s in code.scans if s.kind == "genuine"]
            missed.append({
                "first_copy_after": code.copy_delay, "genuine_scans": len(genuine), "genuine_with_cell": sum(bool(s.cell) for s in genuine),
                "copy_scans": len(copies), "copy_scans_with_cell": sum(bool(s.cell) for s in copies),
                "copy_scans_with_time_zone": sum(bool(s.tz) for s in copies),
            })
        else:
            detected += 1
            hit[0] += 1
            later = copies[first + 1 :]
            after_total += len(later)
            after_flagged += sum(s.verdict == "SUSPICIOUS" for s in later)
    flagged = [[s for s in c.scans if s.kind in ("genuine", "neighbour") and s.verdict != "GENUINE"] for c in genuine_codes]
    false_positive = sum(bool(f) for f in flagged)
    reasons: dict[str, int] = {}
    for c, scans in zip(genuine_codes, flagged):
        for s in scans[:1]:
            key = f"{s.kind}: {s.verdict}: {s.reason}".replace(c.serial, "<serial>")
            reasons[key] = reasons.get(key, 0) + 1
    latencies = [s.latency_s for c in scanned for s in c.scans if s.verdict]
    all_scans = [s for c in scanned for s in c.scans]
    return {
        "benchmark": "clones",
        "engine": args.engine,
        "scenario": {
            "items": args.items, "seed": args.seed, "copy_rate": args.copy_rate, "share_rate": args.share,
            "time_zone_share_of_scans_without_cell": args.tz_share,
            "genuine_scans_per_item": "1-4 (30/30/25/15%), within 40 km of Paris, up to 3 days apart",
            "copy_scans_per_copied_code": "2-5, Shanghai / Lagos / São Paulo (20 km jitter), 10 min-2 days apart",
            "first_copy_after_last_genuine": {k: f"{lo // 60} min-{hi // 60} min" if hi <= HOUR else f"{lo // 3600}-{hi // 3600} h"
                                              for k, (lo, hi) in DELAYS.items()},
            "declared_markets": MARKETS, "category": "Fragrance (5 expected scans per item)",
            "sold": len(sold), "sold_elsewhere_scans": len(elsewhere), "forgeries": len(forged),
        },
        "scans": len(all_scans),
        "copied_codes": len(copied),
        "clones_detected_fraction": _fraction(detected, len(copied)),
        "clones_detected_by_delay": {k: _fraction(v[0], v[1]) for k, v in sorted(by_delay.items())},
        "clones_compromised_on_ledger_fraction": _fraction(on_ledger, len(copied)),
        "clones_missed": missed,
        "copy_scans_flagged_fraction": _fraction(after_flagged, after_total),
        "genuine_false_positive_fraction": _fraction(false_positive, len(genuine_codes)),
        "false_positive_reasons": reasons,
        "forgeries_detected_fraction": _fraction(sum(v == "COUNTERFEIT" for v in forged), len(forged)),
        "sold_elsewhere_detected_fraction": _fraction(sum(s.verdict == "SUSPICIOUS" for s in elsewhere), len(elsewhere)),
        "verdict_latency_p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "verdict_latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
    }


BENCHMARK = Benchmark("planted-clone simulation: detection, false positives and verdict latency", add_arguments, run)
