"""The clone rules' pure parts: integer cell distances (what every validator computes), the judgement
the verifier and the ledger share, and the category defaults."""

from __future__ import annotations

import math
import random

import pytest

from shelfproof.ledger.core import cells
from shelfproof.ledger.core.rules import scans as rules
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.verify import geo

pytestmark = pytest.mark.unit
NOW = 1_780_000_000


def _haversine_km(a: str, b: str) -> float:
    (la1, lo1), (la2, lo2) = ((x / 1e6 for x in cells.center_microdegrees(c)) for c in (a, b))
    p1, p2, dl = math.radians(la1), math.radians(la2), math.radians(lo2 - lo1)
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371 * math.asin(min(1.0, math.sqrt(h)))


def test_integer_distance_is_symmetric_and_a_close_lower_bound_of_the_great_circle():
    rng, worst = random.Random(7), 0.0
    for _ in range(2000):
        a = geo.encode(rng.uniform(-89, 89), rng.uniform(-180, 180))
        b = geo.encode(rng.uniform(-89, 89), rng.uniform(-180, 180))
        d = cells.distance_km(a, b)
        assert isinstance(d, int) and d == cells.distance_km(b, a)
        true = _haversine_km(a, b)
        # The chord is at most the arc; Bhaskara's sine keeps it within 40 km of the exact chord.
        chord = 2 * 6371 * math.sin(true / (2 * 6371))
        worst = max(worst, abs(d - chord))
        assert abs(d - chord) < 40 and d <= true + 40
    assert worst > 0  # the approximation is exercised, not bypassed


def test_neighbouring_cells_are_not_travel_and_continents_are():
    assert cells.distance_km("u09t", "u09w") < 40  # Paris, the next cell
    assert cells.distance_km("u09t", "wtw3") > 8000  # Paris - Shanghai
    assert not cells.too_fast(800, 3600, 900) and cells.too_fast(8000, 3600, 900) and cells.too_fast(20, 10, 900)


def _history(*seen: tuple[str, int]) -> st.ScanRecord:
    r = st.ScanRecord(scans=len(seen))
    for cell, t in seen:
        r.sightings.add(cell=cell, first_unix_s=t, last_unix_s=t, scans=1)
    return r


def test_travel_is_judged_against_every_sighting_not_only_the_latest():
    # Paris an hour ago, then (a legitimate day's trip) Berlin a day before that is irrelevant; the
    # latest sighting is 20 km away, the Paris one 30 minutes old: a New York scan is a copy.
    record = _history(("u33d", NOW - 2 * 86_400), ("u09t", NOW - 1800), ("u09w", NOW - 900))
    j = rules.judge_scan(record, "dr5r", NOW, 6, [], 0)
    assert j.compromise.reason == st.COMPROMISE_REASON_IMPOSSIBLE_TRAVEL and j.compromise.first.cell == "u09t"


def test_a_sighting_spanning_the_scan_time_counts_as_simultaneous():
    record = st.ScanRecord(scans=5, sightings=[st.CellSighting(cell="u09t", first_unix_s=NOW - 30 * 86_400, last_unix_s=NOW + 60, scans=5)])
    assert rules.judge_scan(record, "s14m", NOW - 7 * 86_400, 9, [], 0).compromise is not None


def test_reasons_carry_no_floats_and_name_the_evidence():
    c = st.Compromise(reason=st.COMPROMISE_REASON_IMPOSSIBLE_TRAVEL, first=st.ScanPoint(cell="u09t", unix_s=NOW),
                      second=st.ScanPoint(cell="wtw3", unix_s=NOW + 1800), distance_km=8457)
    assert rules.compromise_text(c).startswith("This code was scanned 8,457 km away from an earlier scan within 30 min")
    assert "6 times; about 5" in rules.compromise_text(st.Compromise(reason=st.COMPROMISE_REASON_SCAN_COUNT, scans=6, expected_scans=5))


@pytest.mark.parametrize("category, expected", [
    ("Pharmaceuticals", 3), ("Olive oil / food", 4), ("Fragrance", 5), ("Consumer electronics", 5),
    ("Luxury handbags", 8), ("", rules.DEFAULT_EXPECTED_SCANS), ("Garden tools", rules.DEFAULT_EXPECTED_SCANS),
])
def test_expected_scans_default_from_the_category(category, expected):
    product = st.ProductRecord(product=txpb.RegisterProduct(category=category))
    assert rules.expected_scans(None, product) == expected
    batch = st.BatchRecord(batch=txpb.CommissionBatch(expected_scans_per_item=12))
    assert rules.expected_scans(batch, product) == 12


def test_scan_transactions_stay_under_the_ledgers_size_bound():
    from shelfproof.ledger.core.tx import MAX_TX_BYTES
    from shelfproof.verify.service import scan_transactions

    scans = [txpb.Scan(gtin="00614141123452", serial=f"S{n:011d}", cell="u09t", scan_unix_s=NOW, batch_id="9a6b316aca3d4aa8b5ad43380cff657b")
             for n in range(2500)]
    bodies = scan_transactions(scans)
    assert [s for b in bodies for s in b.record_scans.scans] == scans  # none lost, order kept
    assert all(b.ByteSize() + 1024 <= MAX_TX_BYTES and len(b.record_scans.scans) <= 1000 for b in bodies)
    assert len(bodies) > 3  # 1,000 such scans (about 75 KB) would not have fit one transaction
    assert len(scan_transactions([txpb.Scan(gtin="00614141123452", serial="A", scan_unix_s=NOW)] * 1500)) == 2
