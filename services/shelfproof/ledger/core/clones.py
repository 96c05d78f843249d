"""The clone rules as a pure judgement: a code's scan history plus one more scan in, what it proves
out. The ledger applies it when scans commit (``rules.scans``); the verifier and ``shelfproof verify``
run the same function on the proven record, so a verdict and the ledger's record never disagree. It
imports only protobuf records and integer cell geometry (no state, no I/O), and uses integers only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shelfproof.ledger.core import cells
from shelfproof.ledger.v1 import state_pb2 as st

# Expected consumer scans per item over its life by product category (the verifier counts one phone
# once per 10 minutes). A genuine item is scanned by one to three phones (a shopper on the shop
# floor, the buyer, a recipient): the field simulation saw 2.2 per item. Each default is
# about twice to three times that, higher where items are authenticated again on resale.
EXPECTED_SCANS_BY_CATEGORY: tuple[tuple[tuple[str, ...], int], ...] = (
    (("pharma", "medic", "drug"), 3),  # verified at dispensing, then by the patient
    (("food", "beverage", "grocery", "drink", "oil", "wine", "spirit", "dairy"), 4),
    (("cosmetic", "beauty", "fragrance", "perfume", "skin", "personal care"), 5),
    (("electronic", "toy", "appliance"), 5),
    (("apparel", "footwear", "fashion", "luxury", "watch", "jewel", "handbag", "accessor"), 8),  # resold
)
DEFAULT_EXPECTED_SCANS = 6


@dataclass(frozen=True)
class CloneRules:
    """The thresholds of the clone rules (integers: they run in consensus)."""

    # Faster than an airliner between two scans is not one item travelling.
    max_speed_kmh: int = 900
    # Closer than this never counts as travel: neighbouring cells are one trip across town.
    min_distance_km: int = 150
    # A buyer's second look from a neighbouring cell (20-55 km) is not "elsewhere".
    sold_elsewhere_km: int = 150
    # A time zone's region stands for its principal city, but one zone can span a country (China's
    # spans 4,000 km): inside and outside the markets counts only this far apart when either side
    # is a region, and a region is never timed as travel.
    region_far_km: int = 3_000
    # Expected scans per item when the batch names none (0 = by product category).
    default_expected_scans: int = 0


LEDGER_RULES = CloneRules()


def expected_scans(batch: st.BatchRecord | None, product: st.ProductRecord | None, rules: CloneRules = LEDGER_RULES) -> int:
    if batch is not None and batch.batch.expected_scans_per_item:
        return batch.batch.expected_scans_per_item
    if rules.default_expected_scans:
        return rules.default_expected_scans
    category = product.product.category.lower() if product is not None else ""
    for words, expected in EXPECTED_SCANS_BY_CATEGORY:
        if any(w in category for w in words):
            return expected
    return DEFAULT_EXPECTED_SCANS



@dataclass
class ScanJudgement:
    # A compromise this scan proves (None when it proves none; a code already compromised stays so).
    compromise: st.Compromise | None = None
    # Signals about this scan alone (no sticky compromise): (alert kind, what the consumer reads).
    signals: list[tuple[int, str]] = field(default_factory=list)


def _gap_s(s: st.CellSighting, unix_s: int) -> int:
    """Seconds between a scan and the nearest scan of a sighting (0 when it falls within it)."""
    if s.first_unix_s <= unix_s <= s.last_unix_s:
        return 0
    return min(abs(unix_s - s.first_unix_s), abs(unix_s - s.last_unix_s))


def _nearest_time(s: st.CellSighting, unix_s: int) -> int:
    if s.first_unix_s <= unix_s <= s.last_unix_s:
        return unix_s
    return s.first_unix_s if abs(unix_s - s.first_unix_s) <= abs(unix_s - s.last_unix_s) else s.last_unix_s


def judge_scan(
    record: st.ScanRecord, cell: str, unix_s: int, expected: int, markets: list[str], sold_unix_s: int,
    rules: CloneRules = LEDGER_RULES, region: str = "",
) -> ScanJudgement:
    """What one more scan (``cell`` may be empty; ``region``, a time zone's, only when it is) proves
    about a code with this history."""
    out = ScanJudgement()
    sightings = list(record.sightings)
    count = record.scans + 1 - record.count_baseline
    travel = None
    if cell:
        worst = 0
        for s in sightings:
            if s.region:
                continue  # a time zone is no place to time a trip from
            km = cells.distance_km(s.cell, cell)
            if km >= rules.min_distance_km and km > worst and cells.too_fast(km, _gap_s(s, unix_s), rules.max_speed_kmh):
                worst, travel = km, s
        if travel is not None:
            out.compromise = st.Compromise(
                reason=st.COMPROMISE_REASON_IMPOSSIBLE_TRAVEL,
                first=st.ScanPoint(cell=travel.cell, unix_s=_nearest_time(travel, unix_s)),
                second=st.ScanPoint(cell=cell, unix_s=unix_s), distance_km=worst,
            )
    if out.compromise is None and count > expected:
        out.compromise = st.Compromise(reason=st.COMPROMISE_REASON_SCAN_COUNT, scans=count, expected_scans=expected)
    if markets:
        _judge_markets(out, sightings, cell, region, unix_s, markets, rules)
    if cell and sold_unix_s and unix_s >= sold_unix_s and record.claimed_unix_s >= sold_unix_s:
        # The buyer's places: the claim's cell; else where the item was up to the claim (the store);
        # else where it was seen since.
        refs = [record.claimed_cell] if record.claimed_cell else (
            [s.cell for s in sightings if not s.region and s.first_unix_s <= record.claimed_unix_s]
            or [s.cell for s in sightings if not s.region and s.last_unix_s >= record.claimed_unix_s]
        )
        if refs and min(cells.distance_km(r, cell) for r in refs) >= rules.sold_elsewhere_km:
            out.signals.append(
                (st.ALERT_KIND_SOLD_ELSEWHERE, "It was sold and claimed by its buyer, yet scanned again far from there.")
            )
    return out


def _duration(seconds: int) -> str:
    seconds = max(seconds, 60)
    if seconds < 7_200:
        return f"{seconds // 60} min"
    if seconds < 172_800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86_400} days"


def _outside(place: str, is_region: bool, markets: list[str]) -> bool:
    return not cells.overlaps_markets(place, markets) if is_region else not cells.in_markets(place, markets)


def _judge_markets(
    out: ScanJudgement, sightings: list[st.CellSighting], cell: str, region: str, unix_s: int, markets: list[str],
    rules: CloneRules,
) -> None:
    """Inside and far outside the declared markets, in either order, is two places: compromised. A
    scan outside with no sighting inside is a signal (a diverted item or a copy), and so is a scan
    without a cell or region of a code already seen outside. A time zone's region is outside only
    where it shares no ground with the markets, and is far only at ``region_far_km``."""
    outside = [s for s in sightings if _outside(s.cell, s.region, markets)]
    place, coarse = (cell, False) if cell else (region, True)
    if not place:
        if outside:
            out.signals.append((st.ALERT_KIND_OUTSIDE_MARKETS, "Its code was seen outside the regions its brand sells it in."))
        return
    here_outside = _outside(place, coarse, markets)
    if here_outside:
        out.signals.append((st.ALERT_KIND_OUTSIDE_MARKETS, "It was scanned outside the regions its brand sells it in."))
    others = [s for s in sightings if not _outside(s.cell, s.region, markets)] if here_outside else outside
    far = [(cells.distance_km(s.cell, place), s) for s in others]
    far = [(km, s) for km, s in far if km >= (rules.region_far_km if coarse or s.region else rules.min_distance_km)]
    if out.compromise is None and far:
        km, s = max(far, key=lambda pair: pair[0])
        out.compromise = st.Compromise(
            reason=st.COMPROMISE_REASON_INSIDE_AND_OUTSIDE_MARKETS,
            first=st.ScanPoint(cell=s.cell, unix_s=_nearest_time(s, unix_s)), second=st.ScanPoint(cell=place, unix_s=unix_s),
            distance_km=km,
        )


def compromise_text(c: st.Compromise) -> str:
    """The reason a compromise gives (integers only: the ledger writes it into alerts)."""
    if c.reason == st.COMPROMISE_REASON_IMPOSSIBLE_TRAVEL:
        return (
            f"This code was scanned {c.distance_km:,} km away from an earlier scan within "
            f"{_duration(abs(c.second.unix_s - c.first.unix_s))} (faster than any flight): two copies of one code."
        )
    if c.reason == st.COMPROMISE_REASON_SCAN_COUNT:
        return f"This code has been scanned {c.scans} times; about {c.expected_scans} is expected for one item."
    if c.reason == st.COMPROMISE_REASON_INSIDE_AND_OUTSIDE_MARKETS:
        return (
            f"This code was seen both where its brand sells it and {c.distance_km:,} km away outside those "
            "regions: it is likely copied."
        )
    return "This code is recorded as compromised."
