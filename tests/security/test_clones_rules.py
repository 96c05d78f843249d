"""The clone rules on the real ledger application (ABCI, real signing): sticky compromise from
travel against every cell, from the count and from the declared markets; sold-then-elsewhere; the
brand clearing a false alarm; derived alerts; and what each abuse of them gets."""

from __future__ import annotations

from datetime import date

import pytest

from shelfproof.ledger.core.codes import ResultCode
from shelfproof.ledger.core.rules import scans as rules
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.verify.verdict import Facts, Verdict, assess
from tests.security.world import BRAND, GTIN, OPERATOR, RETAILER, T0, World, body

pytestmark = pytest.mark.unit

PARIS, NEAR_PARIS, BERLIN = "u09t", "u09w", "u33d"  # u09w: 19 km from u09t
SHANGHAI, LAGOS, SAO_PAULO = "wtw3", "s14m", "6gyf"
HOUR, DAY = 3600, 86_400


@pytest.fixture
def world() -> World:
    w = World()
    w.ok(w.agent(BRAND, "admin-0"), w.product(), w.commission())
    return w


def scan(serial: str, cell: str, at: int, batch_id: str = "B1", region: str = "") -> txpb.Scan:
    return txpb.Scan(gtin=GTIN, serial=serial, cell=cell, scan_unix_s=at, batch_id=batch_id, region=region)


def record(world: World, *scans: txpb.Scan) -> None:
    """The verifier records the scans in a block stamped just after the latest of them."""
    verifier = world.sync_nonce(world.agent(OPERATOR, "verifier-0"))
    at = max(s.scan_unix_s for s in scans) + 5
    assert world.block([verifier.sign(body(record_scans=txpb.RecordScans(scans=list(scans))))], at) == [0]


def scans_of(world: World, serial: str) -> st.ScanRecord:
    return world.read("scans", f"{GTIN}/{serial}", st.ScanRecord)


def alerts(world: World) -> list[st.AlertRecord]:
    out = []
    for key, raw in sorted(world.app.state.dump()["alerts"].items()):
        if key != b"block":
            out += st.AlertBatch.FromString(raw).alerts
    return out


def verdict(world: World, serial: str, cell: str, at: int, region: str = "") -> Verdict:
    """The consumer's verdict for one more scan, from the committed record (as the verifier reads it)."""
    facts = Facts(
        gtin=GTIN, serial=serial, signature_present=True, signature_valid=True,
        key=st.KeyRecord(organization_gln=BRAND), product=world.read("products", GTIN, st.ProductRecord),
        batch=world.read("batches", "B1", st.BatchRecord), in_batch=True, recall=None, void=None,
        item=world.read("items", f"{GTIN}/{serial}", st.ItemRecord), scans=scans_of(world, serial),
        markets=world.read("markets", GTIN, st.MarketsRecord), scan_cell=cell, scan_unix_s=at, today=date(2026, 6, 1),
        scan_region=region,
    )
    return assess(facts).verdict


def test_first_far_copy_does_not_make_later_copies_local(world):
    t = T0 + 100
    record(world, scan("S1", PARIS, t), scan("S1", PARIS, t + 600))
    record(world, scan("S1", SHANGHAI, t + 1800))  # the first copy: 8,000+ km in 20 minutes
    r = scans_of(world, "S1")
    assert r.compromise.reason == st.COMPROMISE_REASON_IMPOSSIBLE_TRAVEL
    assert (r.compromise.first.cell, r.compromise.second.cell) == (PARIS, SHANGHAI) and r.compromise.distance_km > 8000
    # The old rule moved last_cell to Shanghai and saw every later copy there as local: now sticky.
    assert verdict(world, "S1", SHANGHAI, t + 2400) == Verdict.SUSPICIOUS
    record(world, scan("S1", SHANGHAI, t + 2400), scan("S1", SHANGHAI, t + 3000))
    r = scans_of(world, "S1")
    assert r.suspicious_scans == 2 and r.compromise.first.cell == PARIS
    assert [a.kind for a in alerts(world)] == [st.ALERT_KIND_CLONE_SUSPECTED]
    # Wherever it comes from, a genuine-looking place or no cell at all.
    assert verdict(world, "S1", PARIS, t + 9 * DAY) == Verdict.SUSPICIOUS
    assert verdict(world, "S1", "", t + 9 * DAY) == Verdict.SUSPICIOUS


def test_every_cell_of_the_history_is_compared_not_only_the_last(world):
    t = T0 + 100
    # Paris for a day, then a legitimate trip to Berlin (878 km in 30 h).
    record(world, scan("S1", PARIS, t), scan("S1", PARIS, t + DAY))
    record(world, scan("S1", BERLIN, t + DAY + 30 * HOUR))
    assert not scans_of(world, "S1").HasField("compromise")
    # A scan in Lagos 2 h after the Berlin one is too fast from Berlin and from Paris; a copy scanned
    # in Lagos stamped between the two Paris scans (recorded late) is caught against Paris alone.
    r = rules.judge_scan(scans_of(world, "S1"), LAGOS, t + HOUR, 6, [], 0)
    assert r.compromise is not None and r.compromise.first.cell == PARIS
    # A slow trip is not a clone: Lagos a week later.
    assert rules.judge_scan(scans_of(world, "S1"), LAGOS, t + 9 * DAY, 6, [], 0).compromise is None


def test_copies_surfacing_a_week_later_are_caught_by_the_declared_markets(world):
    brand = world.agent(BRAND, "admin-0")
    world.ok(brand, body(declare_markets=txpb.DeclareMarkets(gtin=GTIN, cells=["u0", "u1", "u2", "u3", "sp", "gb"])))
    t = T0 + 100
    record(world, scan("S1", PARIS, t), scan("S2", "", t))
    for serial, city in (("S1", SHANGHAI), ("S2", SAO_PAULO)):
        record(world, scan(serial, city, t + 7 * DAY))
    s1, s2 = scans_of(world, "S1"), scans_of(world, "S2")
    # Seen in Paris (inside) and in Shanghai a week later (outside): compromised, sticky.
    assert s1.compromise.reason == st.COMPROMISE_REASON_INSIDE_AND_OUTSIDE_MARKETS
    assert s1.compromise.first.cell == PARIS and s1.compromise.second.cell == SHANGHAI
    # S2 was never seen in a cell inside: outside the markets is a signal (diversion or copy), not proof.
    assert not s2.HasField("compromise")
    assert verdict(world, "S2", SAO_PAULO, t + 8 * DAY) == Verdict.SUSPICIOUS
    assert verdict(world, "S2", "", t + 8 * DAY) == Verdict.SUSPICIOUS  # a code seen outside, no cell now
    assert verdict(world, "S2", PARIS, t + 8 * DAY) == Verdict.SUSPICIOUS  # now inside too: two places
    kinds = sorted((a.serial, a.kind) for a in alerts(world))
    assert kinds == [("S1", st.ALERT_KIND_CLONE_SUSPECTED), ("S1", st.ALERT_KIND_OUTSIDE_MARKETS), ("S2", st.ALERT_KIND_OUTSIDE_MARKETS)]
    assert all(a.brand_owner_gln == BRAND and a.lot == "L1" for a in alerts(world))


def test_cellless_scans_count_and_the_default_comes_from_the_category(world):
    brand = world.agent(BRAND, "admin-0")
    world.ok(brand, body(update_product=txpb.UpdateProduct(
        product=txpb.RegisterProduct(gtin=GTIN, name="Face cream", brand="Demo", category="Cosmetics"), update_paths=["category"],
    )))
    assert rules.expected_scans(None, world.read("products", GTIN, st.ProductRecord)) == 5
    t = T0 + 100
    record(world, *[scan("S1", "", t + i * 60) for i in range(5)])
    r = scans_of(world, "S1")
    assert (r.scans, r.cellless_scans, r.HasField("compromise")) == (5, 5, False)
    record(world, scan("S1", "", t + 400))
    r = scans_of(world, "S1")
    assert r.compromise.reason == st.COMPROMISE_REASON_SCAN_COUNT and (r.compromise.scans, r.compromise.expected_scans) == (6, 5)
    # A cell-less scan after the compromise: SUSPICIOUS all the same.
    assert verdict(world, "S1", "", t + 500) == Verdict.SUSPICIOUS
    # The batch's own expectation wins over the category's.
    batch = st.BatchRecord(batch=txpb.CommissionBatch(expected_scans_per_item=40))
    assert rules.expected_scans(batch, world.read("products", GTIN, st.ProductRecord)) == 40


def test_brand_clears_a_false_alarm_with_a_reason_and_no_one_else_can(world):
    t = T0 + 100
    record(world, scan("S1", PARIS, t), scan("S1", BERLIN, t + 600))
    assert scans_of(world, "S1").HasField("compromise")
    clear = body(clear_compromise=txpb.ClearCompromise(gtin=GTIN, serial="S1", reason="demo unit scanned at two trade fairs"))
    # Another organisation (the retailer, which holds clone::clear for its own products) cannot.
    world.refused(world.agent(RETAILER, "admin-0"), clear, ResultCode.PERMISSION_DENIED)
    # The consortium's verifier holds no such permission either.
    world.refused(world.agent(OPERATOR, "verifier-0"), clear, ResultCode.PERMISSION_DENIED)
    brand = world.agent(BRAND, "admin-0")
    world.refused(brand, body(clear_compromise=txpb.ClearCompromise(gtin=GTIN, serial="S1", reason=" ")), ResultCode.INVALID_ARGUMENT)
    world.refused(brand, body(clear_compromise=txpb.ClearCompromise(gtin=GTIN, serial="S2", reason="x")), ResultCode.FAILED_PRECONDITION)
    world.ok(brand, clear)
    r = scans_of(world, "S1")
    assert not r.HasField("compromise") and r.cleared.reason.startswith("demo unit") and r.cleared.cleared_by == f"{BRAND}/admin-0"
    assert r.cleared.compromise.reason == st.COMPROMISE_REASON_IMPOSSIBLE_TRAVEL
    assert verdict(world, "S1", BERLIN, t + 700) == Verdict.GENUINE
    # Judging starts over: a real copy afterwards is caught again.
    record(world, scan("S1", BERLIN, t + 700), scan("S1", SHANGHAI, t + 1300))
    assert scans_of(world, "S1").compromise.second.cell == SHANGHAI


def test_sold_then_elsewhere_claim_by_the_first_scan_with_a_distance_floor(world):
    brand = world.agent(BRAND, "admin-0")
    record(world, scan("S1", PARIS, T0 + 100), scan("S2", PARIS, T0 + 100))
    world.ok(brand, world.event("retail_selling", "retail_sold", ["S1", "S2"]))
    sold_at = world.read("items", f"{GTIN}/S1", st.ItemRecord).sold_unix_s
    # The buyer's first look shares no cell: it claims all the same.
    record(world, scan("S1", "", sold_at + 60), scan("S2", "", sold_at + 60))
    assert scans_of(world, "S1").claimed_unix_s == sold_at + 60 and scans_of(world, "S1").claimed_cell == ""
    # The neighbouring cell (19 km) is the buyer's neighbourhood, not elsewhere.
    assert verdict(world, "S1", NEAR_PARIS, sold_at + 3 * DAY) == Verdict.GENUINE
    # Berlin, days later (not impossible travel): the sold item's code is in use elsewhere.
    assert verdict(world, "S2", BERLIN, sold_at + 3 * DAY) == Verdict.SUSPICIOUS
    record(world, scan("S1", NEAR_PARIS, sold_at + 3 * DAY), scan("S2", BERLIN, sold_at + 3 * DAY))
    assert (scans_of(world, "S1").scans_elsewhere_after_claim, scans_of(world, "S2").scans_elsewhere_after_claim) == (0, 1)
    assert [(a.serial, a.kind) for a in alerts(world)] == [("S2", st.ALERT_KIND_SOLD_ELSEWHERE)]


def test_alerts_for_recalled_and_voided_codes_and_bursts(world):
    brand = world.agent(BRAND, "admin-0")
    world.ok(brand, body(recall_lot=txpb.RecallLot(gtin=GTIN, lot="L1", reason="glass")),
             body(void_labels=txpb.VoidLabels(gtin=GTIN, serials=["V1"], reason="misprint")))
    t = T0 + 100
    record(world, scan("R1", PARIS, t), scan("V1", PARIS, t))
    kinds = {(a.serial, a.kind, a.detail) for a in alerts(world)}
    assert ("R1", st.ALERT_KIND_RECALLED_SCANNED, "glass") in kinds and ("V1", st.ALERT_KIND_VOIDED_SCANNED, "misprint") in kinds
    # Ten codes of the lot compromised within a day: one burst alert, not one per code after that.
    for n in range(rules.BURST_CODES + 2):
        record(world, scan(f"C{n}", PARIS, t + 100 + n), scan(f"C{n}", SHANGHAI, t + 400 + n))
    bursts = [a for a in alerts(world) if a.kind == st.ALERT_KIND_BURST]
    assert len(bursts) == 1 and bursts[0].codes == rules.BURST_CODES and bursts[0].lot == "L1" and bursts[0].serial == ""


def test_alerts_per_block_are_bounded_and_the_overflow_counted(world, monkeypatch):
    monkeypatch.setattr(rules, "MAX_ALERTS_PER_BLOCK", 3)
    world.ok(world.agent(BRAND, "admin-0"), body(declare_markets=txpb.DeclareMarkets(gtin=GTIN, cells=["u0"])))
    record(world, *[scan(f"X{n}", SHANGHAI, T0 + 100) for n in range(5)])
    assert len(alerts(world)) == 3
    counter = world.read("alerts", "block", st.BlockAlerts)
    assert (counter.raised, counter.dropped) == (3, 2)


def test_sightings_are_bounded_per_code(world):
    far_apart = [a + b for a in "0123456789" for b in "bc"]  # 20 distinct cells
    record(world, *[scan("S1", cell, T0 + 100 + i * 30 * DAY // 10) for i, cell in enumerate(far_apart)])
    kept = [s.cell for s in scans_of(world, "S1").sightings]
    assert len(far_apart) > rules.MAX_SIGHTINGS and kept == far_apart[-rules.MAX_SIGHTINGS:]  # the least recent dropped


def test_abuse_of_markets_and_scans_is_refused_without_a_trace(world):
    brand, retailer = world.agent(BRAND, "admin-0"), world.agent(RETAILER, "admin-0")
    markets = body(declare_markets=txpb.DeclareMarkets(gtin=GTIN, cells=["u0"]))
    world.refused(retailer, markets, ResultCode.PERMISSION_DENIED)  # not the retailer's product
    world.refused(brand, body(declare_markets=txpb.DeclareMarkets(gtin=GTIN, cells=["u0a"])), ResultCode.INVALID_ARGUMENT)
    world.refused(brand, body(declare_markets=txpb.DeclareMarkets(gtin=GTIN, cells=["u09tz"])), ResultCode.INVALID_ARGUMENT)
    world.refused(brand, body(declare_markets=txpb.DeclareMarkets(gtin=GTIN, cells=[f"u{c}" for c in "0123456789bcdefghjkmnpqrstuvwxyz"] + ["v"])), ResultCode.INVALID_ARGUMENT)
    verifier = world.agent(OPERATOR, "verifier-0")
    bad = [
        scan("S1", "u09i", T0 + 100),  # not a geohash
        scan("S1", PARIS, T0 + 100, batch_id="NOPE"),  # no such batch
    ]
    for s in bad:
        world.refused(verifier, body(record_scans=txpb.RecordScans(scans=[s])), ResultCode.INVALID_ARGUMENT, T0 + 200)
    # A brand cannot record scans (only the consortium's verifier).
    world.refused(brand, body(record_scans=txpb.RecordScans(scans=[scan("S1", PARIS, T0 + 100)])), ResultCode.PERMISSION_DENIED, T0 + 200)


def test_markets_work_in_either_order_and_a_cellless_scan_of_a_code_seen_outside_is_flagged(world):
    world.ok(world.agent(BRAND, "admin-0"), body(declare_markets=txpb.DeclareMarkets(gtin=GTIN, cells=["u0"])))
    t = T0 + 100
    record(world, scan("S1", LAGOS, t))  # a copy surfaces first (or a diverted item)
    assert not scans_of(world, "S1").HasField("compromise")
    assert verdict(world, "S1", "", t + DAY) == Verdict.SUSPICIOUS  # no cell, but the code was seen outside
    record(world, scan("S1", PARIS, t + 3 * DAY))  # the genuine item, at home, days later
    r = scans_of(world, "S1")
    assert r.compromise.reason == st.COMPROMISE_REASON_INSIDE_AND_OUTSIDE_MARKETS and (r.compromise.first.cell, r.compromise.second.cell) == (LAGOS, PARIS)
    record(world, scan("S2", "", t), scan("S2", PARIS, t + 60))
    assert verdict(world, "S2", "", t + DAY) == Verdict.GENUINE  # seen only inside
    # One alert per sighting outside, none for the cell-less looks at it.
    assert [a.kind for a in alerts(world) if a.serial == "S1"] == [st.ALERT_KIND_OUTSIDE_MARKETS, st.ALERT_KIND_CLONE_SUSPECTED]


# Time zones' regions (geohash 2): Europe/Paris, Europe/Berlin, Asia/Shanghai, Africa/Lagos.
PARIS_TZ, BERLIN_TZ, SHANGHAI_TZ, LAGOS_TZ = "u0", "u3", "wt", "s1"
MARSEILLE = "spey"  # 660 km from Paris, in Europe/Paris too


def test_copies_that_share_no_cell_are_caught_by_their_time_zones_weeks_later(world):
    world.ok(world.agent(BRAND, "admin-0"), body(declare_markets=txpb.DeclareMarkets(gtin=GTIN, cells=["u0", "u1", "gc", "sp"])))
    t = T0 + 100
    # Genuine looks from Paris (one shares a cell, one only its time zone); copies weeks later in Shanghai.
    record(world, scan("S1", PARIS, t), scan("S2", "", t, region=PARIS_TZ))
    record(world, scan("S1", "", t + 3 * 7 * DAY, region=SHANGHAI_TZ), scan("S2", "", t + 3 * 7 * DAY, region=SHANGHAI_TZ))
    for serial, first in (("S1", PARIS), ("S2", PARIS_TZ)):
        r = scans_of(world, serial)
        assert r.compromise.reason == st.COMPROMISE_REASON_INSIDE_AND_OUTSIDE_MARKETS, serial
        assert (r.compromise.first.cell, r.compromise.second.cell) == (first, SHANGHAI_TZ) and r.compromise.distance_km > 8000
        assert r.cellless_scans == (1 if serial == "S1" else 2)
        assert any(s.region and s.cell == SHANGHAI_TZ for s in r.sightings)
        assert verdict(world, serial, "", t + 3 * 7 * DAY + 60) == Verdict.SUSPICIOUS  # sticky, no place at all
    kinds = sorted((a.serial, a.kind) for a in alerts(world))
    assert kinds == [(s, k) for s in ("S1", "S2") for k in (st.ALERT_KIND_CLONE_SUSPECTED, st.ALERT_KIND_OUTSIDE_MARKETS)]
    # Either order: the copy's time zone first, the genuine phone's later.
    record(world, scan("S3", "", t, region=LAGOS_TZ))
    assert not scans_of(world, "S3").HasField("compromise")
    assert verdict(world, "S3", "", t + DAY) == Verdict.SUSPICIOUS  # seen outside: a signal
    record(world, scan("S3", "", t + 2 * DAY, region=PARIS_TZ))
    assert scans_of(world, "S3").compromise.reason == st.COMPROMISE_REASON_INSIDE_AND_OUTSIDE_MARKETS


def test_a_time_zone_is_never_timed_as_travel_nor_far_from_its_own_country(world):
    world.ok(world.agent(BRAND, "admin-0"), body(declare_markets=txpb.DeclareMarkets(gtin=GTIN, cells=["u0", "sp"])))
    t = T0 + 100
    # Marseille's cell, then Europe/Paris's region (centred 270 km from Paris, 500 km from Marseille)
    # minutes later: one zone, one country; no speed is read from a zone.
    record(world, scan("S1", MARSEILLE, t), scan("S1", "", t + 300, region=PARIS_TZ), scan("S1", MARSEILLE, t + 600))
    assert not scans_of(world, "S1").HasField("compromise")
    assert verdict(world, "S1", MARSEILLE, t + 900) == Verdict.GENUINE
    # Outside the markets but nearer than a zone can span (Berlin's region, ~900 km): a signal, never proof.
    record(world, scan("S2", PARIS, t), scan("S2", "", t + 600, region=BERLIN_TZ))
    assert not scans_of(world, "S2").HasField("compromise")
    # A region beside a cell far away is compared by the markets rule with the region's floor: a copy in
    # Shanghai sharing its cell, minutes after a look from Europe/Paris that shared only its time zone.
    record(world, scan("S3", "", t, region=PARIS_TZ), scan("S3", "wtw3", t + 600))
    r = scans_of(world, "S3")
    assert r.compromise.reason == st.COMPROMISE_REASON_INSIDE_AND_OUTSIDE_MARKETS and r.compromise.first.cell == PARIS_TZ
    # Without declared markets a region proves nothing (a cell would be timed as travel instead).
    world.ok(world.agent(BRAND, "admin-0"), body(declare_markets=txpb.DeclareMarkets(gtin=GTIN, cells=[])))
    record(world, scan("S4", PARIS, t), scan("S4", "", t + 60, region=SHANGHAI_TZ))
    assert not scans_of(world, "S4").HasField("compromise")


def test_regions_that_are_not_coarse_time_zone_regions_are_refused_without_a_trace(world):
    verifier = world.agent(OPERATOR, "verifier-0")
    for bad in (
        scan("S1", PARIS, T0 + 100, region=PARIS_TZ),  # a cell and a region: one or the other
        scan("S1", "", T0 + 100, region="u09"),  # finer than a zone's region: a cell in disguise
        scan("S1", "", T0 + 100, region="ai"),  # not a geohash
    ):
        world.refused(verifier, body(record_scans=txpb.RecordScans(scans=[bad])), ResultCode.INVALID_ARGUMENT, T0 + 200)
