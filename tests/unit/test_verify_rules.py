"""The verifier's pure parts: verdict precedence and clone signals, geohash cells, the rate limiter."""

from __future__ import annotations

import asyncio
from datetime import date

import pytest

from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.verify import geo
from shelfproof.verify.ratelimit import RateLimiter
from shelfproof.verify.service import ScanRecorder
from shelfproof.verify.verdict import CloneRules, Facts, Verdict, assess

pytestmark = pytest.mark.unit
BRAND = "0614141000005"
NOW = 1_780_000_000


def _facts(**changes) -> Facts:
    base = dict(
        gtin="00614141123452", serial="A1", signature_present=True, signature_valid=True,
        key=st.KeyRecord(fingerprint="00" * 8, organization_gln=BRAND),
        product=st.ProductRecord(brand_owner_gln=BRAND),
        batch=st.BatchRecord(batch=txpb.CommissionBatch(batch_id="b1", lot="L1", expiry="2030-01-01", count=10)),
        in_batch=True, recall=None, void=None, item=None, scans=None, markets=None, scan_cell="", scan_unix_s=NOW, today=date(2026, 11, 25),
    )
    base.update(changes)
    return Facts(**base)


def test_genuine_when_every_check_passes():
    result = assess(_facts())
    assert result.verdict == Verdict.GENUINE and result.warnings == []


@pytest.mark.parametrize(
    "change, why",
    [
        (dict(signature_present=False, signature_valid=None), "no brand signature"),
        (dict(key=None, signature_valid=None), "not registered"),
        (dict(key=st.KeyRecord(organization_gln="0614141000012")), "does not own"),
        (dict(key=st.KeyRecord(organization_gln=BRAND, revoked=True)), "revoked"),
        (dict(signature_valid=False), "does not match"),
        (dict(in_batch=False), "never commissioned"),
        (dict(batch=None, in_batch=False), "never commissioned"),
        (dict(void=st.StatusRecord(status="voided", reason="damaged")), "voided"),
        (dict(product=None), "No product"),
    ],
)
def test_counterfeit_reasons(change, why):
    result = assess(_facts(**change))
    assert result.verdict == Verdict.COUNTERFEIT and why in result.reasons[0]


def test_counterfeit_outranks_recall_which_outranks_clone_signals():
    recall = st.StatusRecord(status="recalled", reason="glass")
    many = st.ScanRecord(scans=100)
    assert assess(_facts(recall=recall, signature_valid=False)).verdict == Verdict.COUNTERFEIT
    result = assess(_facts(recall=recall, scans=many))
    assert result.verdict == Verdict.RECALLED and "recalled: glass" in result.reasons[0] and "scanned 101 times" in result.reasons[1]


def test_scan_count_uses_the_batchs_expectation_or_the_default():
    rules = CloneRules(default_expected_scans=5)
    assert assess(_facts(scans=st.ScanRecord(scans=4)), rules).verdict == Verdict.GENUINE
    assert assess(_facts(scans=st.ScanRecord(scans=5)), rules).verdict == Verdict.SUSPICIOUS
    batch = st.BatchRecord(batch=txpb.CommissionBatch(batch_id="b1", lot="L1", count=10, expected_scans_per_item=50))
    assert assess(_facts(batch=batch, scans=st.ScanRecord(scans=20)), rules).verdict == Verdict.GENUINE


def _seen(cell: str, at: int, scans: int = 1, **fields) -> st.ScanRecord:
    return st.ScanRecord(scans=scans, last_cell=cell, last_scan_unix_s=at,
                         sightings=[st.CellSighting(cell=cell, first_unix_s=at, last_unix_s=at, scans=scans)], **fields)


def test_impossible_travel_but_not_a_short_or_slow_trip():
    berlin_an_hour_ago = _seen("u33d", NOW - 3600)
    assert assess(_facts(scans=berlin_an_hour_ago, scan_cell="dr5r")).verdict == Verdict.SUSPICIOUS  # New York
    assert assess(_facts(scans=berlin_an_hour_ago, scan_cell="u33e")).verdict == Verdict.GENUINE  # next door
    berlin_last_week = _seen("u33d", NOW - 7 * 86400)
    assert assess(_facts(scans=berlin_last_week, scan_cell="dr5r")).verdict == Verdict.GENUINE
    assert assess(_facts(scans=berlin_an_hour_ago, scan_cell="")).verdict == Verdict.GENUINE  # no cell shared


def test_sold_and_claimed_then_seen_elsewhere():
    sold = st.ItemRecord(disposition="retail_sold", sold_unix_s=NOW - 1000)
    claimed = _seen("u33d", NOW - 900, scans=2, claimed_unix_s=NOW - 900, claimed_cell="u33d")
    assert assess(_facts(item=sold, scans=claimed, scan_cell="u33d")).verdict == Verdict.GENUINE
    assert assess(_facts(item=sold, scans=claimed, scan_cell="u33e")).verdict == Verdict.GENUINE  # the neighbourhood
    result = assess(_facts(item=sold, scans=claimed, scan_cell="u09t"))
    assert result.verdict == Verdict.SUSPICIOUS and "Already sold." in result.warnings
    before_this_sale = _seen("u33d", NOW - 5000, scans=3, claimed_unix_s=NOW - 5000, claimed_cell="u33d")
    assert assess(_facts(item=sold, scans=before_this_sale, scan_cell="u09t")).verdict == Verdict.GENUINE


def test_warnings_stolen_expired_sold():
    stolen = assess(_facts(item=st.ItemRecord(disposition="stolen")))
    assert stolen.verdict == Verdict.GENUINE and stolen.warnings == ["Reported stolen."]
    old = st.BatchRecord(batch=txpb.CommissionBatch(batch_id="b1", lot="L1", expiry="2026-11-24", count=10))
    assert assess(_facts(batch=old)).warnings == ["Expired on 2026-11-24."]


def test_geohash_round_trip_and_distances():
    assert geo.encode(52.52, 13.405) == "u33d"  # Berlin
    assert geo.encode(40.7128, -74.006) == "dr5r"  # New York
    assert geo.encode(48.8566, 2.3522) == "u09t"  # Paris
    # The chord (a lower bound of the 6,385 km great circle), in integers.
    assert 6000 < geo.distance_km("u33d", "dr5r") < 6385 and geo.distance_km("u09t", "u09t") == 0
    assert geo.normalize_cell(" U33DBZ ") == "u33d"
    for bad in ("", "abc!", "a" * 13, "u33i"):
        with pytest.raises(geo.InvalidCell):
            geo.normalize_cell(bad)


def test_a_time_zone_reads_as_the_coarse_region_of_its_principal_city():
    # From the pinned tzdata package's zone tables (zone1970.tab, then zone.tab for merged zones).
    cases = {
        "Europe/Paris": "u0", "Asia/Shanghai": "wt", "Africa/Lagos": "s1", "America/Sao_Paulo": "6g",
        "Europe/Oslo": "u4", "America/Argentina/Buenos_Aires": "69", " Europe/Paris ": "u0",
    }
    for zone, region in cases.items():
        assert geo.region_of_time_zone(zone) == region, zone
    assert geo.encode(59.92, 10.75, precision=2) == "u4"  # Oslo itself
    # Zones that place nothing (UTC, a fixed offset, an alias the tables do not list) are no region.
    for zone in ("UTC", "Etc/GMT+3", "Asia/Calcutta", "Mars/Olympus"):
        assert geo.region_of_time_zone(zone) == "", zone
    for bad in ("", "Europe/Paris;DROP", "../../etc/passwd", "Europe/" + "x" * 40, "a/b/c/d"):
        with pytest.raises(geo.InvalidCell):
            geo.region_of_time_zone(bad)


def test_rate_limiter_bursts_then_refills_per_client():
    now = [0.0]
    limiter = RateLimiter(rate_per_s=2.0, burst=3, max_clients=2, clock=lambda: now[0])
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(0.5)
    assert limiter.acquire("b") == 0.0  # another client has its own bucket
    now[0] += 0.5
    assert limiter.acquire("a") == 0.0  # one token back after 1/rate seconds
    limiter.acquire("c")
    assert len(limiter) == 2  # bounded: the least recently seen client was dropped


def test_a_repeat_look_adds_the_place_the_first_one_lacked_never_both():
    recorder = ScanRecorder(None)
    assert recorder.record("phone", "00614141999996", "S1", "", 100) is True
    assert recorder.record("phone", "00614141999996", "S1", "", 160, region="u0") is False  # the page's time zone
    assert [(s.cell, s.region) for s in recorder._buffer] == [("", "u0")]
    assert recorder.record("phone", "00614141999996", "S1", "", 170, region="wt") is False  # the first region stays
    assert recorder.record("phone", "00614141999996", "S1", "u09t", 200) is False  # then a shared cell replaces it
    assert [(s.cell, s.region) for s in recorder._buffer] == [("u09t", "")]
    assert recorder.record("other", "00614141999996", "S1", "u09t", 200, region="u0") is True  # a cell wins at once
    assert [(s.cell, s.region) for s in recorder._buffer][1] == ("u09t", "")


async def test_the_periodic_flush_waits_for_a_scan_to_settle_an_explicit_one_does_not():
    class Ledger:
        def __init__(self):
            self.bodies = []

        async def submit_many(self, bodies):
            self.bodies += bodies
            return [None] * len(bodies)

    ledger = Ledger()
    recorder = ScanRecorder(ledger, settle_s=0.2)
    recorder.record("a", "00614141999996", "S1", "", 100)
    await recorder.flush(settled_only=True)
    assert ledger.bodies == [] and len(recorder._buffer) == 1  # too fresh: the page may still send its zone
    recorder.record("a", "00614141999996", "S1", "", 101, region="u0")
    await asyncio.sleep(0.25)
    recorder.record("b", "00614141999996", "S2", "", 102)
    await recorder.flush(settled_only=True)
    assert [(s.serial, s.region) for b in ledger.bodies for s in b.record_scans.scans] == [("S1", "u0")]
    await recorder.flush()
    assert [s.serial for b in ledger.bodies for s in b.record_scans.scans] == ["S1", "S2"] and recorder._buffer == []
