"""Consumer scans recorded by the consortium's verifier, and the clone rules judged on them.

The ledger decides, from committed state only, when a code is compromised: two scans of it too far
apart for the time between them (against every cell it was seen in, not only the last), more scans
than one item sees (the batch's expectation, else its product category's), or sightings both inside
and far outside the declared markets (a scan that shares no cell may still carry the coarse region of
its phone's time zone, compared by this rule only, and only at continental distances). A compromise is sticky: every later scan is SUSPICIOUS with
that reason, wherever it comes from and whether or not it shares a cell, until the brand owning the
GTIN clears it with a reason. Alerts are derived here too (no one reports them, so no one has to be
trusted for them): every validator computes the same ones from the same scans.

The judgement itself is pure (``shelfproof.ledger.core.clones``): the verifier runs it on the proven
record before a scan commits, so the consumer's verdict and the ledger's record agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shelfproof.gs1.keys import CSET82_VALUE
from shelfproof.ledger.core import cells
from shelfproof.ledger.core.clones import (  # noqa: F401 - the rules' names, importable from here too
    DEFAULT_EXPECTED_SCANS, EXPECTED_SCANS_BY_CATEGORY, LEDGER_RULES, CloneRules, ScanJudgement, compromise_text,
    expected_scans, judge_scan,
)
from shelfproof.ledger.core.codes import ResultCode, TxRejected
from shelfproof.ledger.core.rules.authorization import MAX_SCAN_SKEW_S
from shelfproof.ledger.core.rules.common import (
    MAX_SCANS_PER_TX, TxContext, _denied, _gtin, _invalid, _owned_product, _text, read, write,
)
from shelfproof.ledger.core.rules.membership import _consortium
from shelfproof.ledger.core.state import Overlay
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb

# Cells kept per code (the least recently seen is dropped): a genuine item is seen in a handful.
MAX_SIGHTINGS = 16
MAX_MARKET_CELLS = 32
# Alerts recorded per block; past it they are counted as dropped (the codes' records still say it).
MAX_ALERTS_PER_BLOCK = 2_000
# A burst: this many codes of one lot compromised within the window (block time).
BURST_CODES = 10
BURST_WINDOW_S = 86_400

def markets_of(state: Overlay, gtin: str) -> list[str]:
    record = read(state, "markets", gtin, st.MarketsRecord)
    return list(record.markets.cells) if record is not None else []


# --- consumer scans ------------------------------------------------------------------------------


@dataclass
class _AlertSink:
    """The alerts of one transaction, within the block's bound."""

    state: Overlay
    ctx: TxContext
    alerts: list[st.AlertRecord] = field(default_factory=list)
    counter: st.BlockAlerts | None = None

    def raise_(self, alert: st.AlertRecord) -> None:
        if self.counter is None:
            self.counter = read(self.state, "alerts", "block", st.BlockAlerts) or st.BlockAlerts()
            if self.counter.height != self.ctx.height:
                self.counter = st.BlockAlerts(height=self.ctx.height)
        if self.counter.raised >= MAX_ALERTS_PER_BLOCK:
            self.counter.dropped += 1
        else:
            self.counter.raised += 1
            self.alerts.append(alert)

    def commit(self) -> None:
        if self.counter is not None:
            write(self.state, "alerts", "block", self.counter)
        if self.alerts:
            write(self.state, "alerts", f"{self.ctx.height:012d}/{self.ctx.tx_hash.hex()}", st.AlertBatch(alerts=self.alerts))


def _check_scan(scan: txpb.Scan, ctx: TxContext) -> str:
    gtin = _gtin(scan.gtin)
    if not 0 < scan.scan_unix_s <= ctx.time_unix_s + MAX_SCAN_SKEW_S:
        raise _invalid(f"scan time {scan.scan_unix_s} is not before block time {ctx.time_unix_s} + {MAX_SCAN_SKEW_S} s")
    if not CSET82_VALUE.fullmatch(scan.serial):
        raise _invalid(f"serial {scan.serial!r} is not 1-20 GS1 CSET 82 characters")
    if scan.cell and not cells.is_cell(scan.cell):
        raise _invalid("cell must be a geohash of 1-12 characters (0-9, b-z without a, i, l, o)")
    if scan.region and (scan.cell or not cells.is_cell(scan.region) or len(scan.region) > cells.MAX_REGION_CHARS):
        raise _invalid(f"region must be a geohash of 1-{cells.MAX_REGION_CHARS} characters, on a scan without a cell")
    if len(scan.batch_id) > 128:
        raise _invalid("batch id is longer than 128 characters")
    return gtin


def record_scans(state: Overlay, ctx: TxContext, a: txpb.RecordScans) -> None:
    if ctx.signer.organization_gln != _consortium(state).consortium_gln:
        raise _denied("only the consortium's verifier records scans")
    if not 1 <= len(a.scans) <= MAX_SCANS_PER_TX:
        raise _invalid(f"between 1 and {MAX_SCANS_PER_TX} scans per transaction")
    products: dict[str, st.ProductRecord] = {}
    batches: dict[str, st.BatchRecord | None] = {}
    sink = _AlertSink(state, ctx)
    for scan in a.scans:
        gtin = _check_scan(scan, ctx)
        if gtin not in products:
            product = read(state, "products", gtin, st.ProductRecord)
            if product is None:
                raise TxRejected(ResultCode.NOT_FOUND, f"product {gtin} is not registered")
            if not product.batches_commissioned:
                raise TxRejected(ResultCode.FAILED_PRECONDITION, f"no batch of {gtin} is commissioned")
            products[gtin] = product
        batch = None
        if scan.batch_id:
            if scan.batch_id not in batches:
                batches[scan.batch_id] = read(state, "batches", scan.batch_id, st.BatchRecord)
            batch = batches[scan.batch_id]
            if batch is None or batch.batch.gtin != gtin:
                raise _invalid(f"batch {scan.batch_id!r} is not a commissioned batch of {gtin}")
        _record_scan(state, ctx, sink, scan, products[gtin], batch)
    sink.commit()


def _record_scan(
    state: Overlay, ctx: TxContext, sink: _AlertSink, scan: txpb.Scan, product: st.ProductRecord, batch: st.BatchRecord | None
) -> None:
    key = f"{scan.gtin}/{scan.serial}"
    lot = batch.batch.lot if batch is not None else ""
    record = read(state, "scans", key, st.ScanRecord) or st.ScanRecord()
    item = read(state, "items", key, st.ItemRecord)
    sold = item.sold_unix_s if item is not None else 0
    markets = markets_of(state, scan.gtin)

    def alert(kind: int, **fields) -> None:
        sink.raise_(st.AlertRecord(
            kind=kind, brand_owner_gln=product.brand_owner_gln, gtin=scan.gtin, serial=scan.serial, lot=lot,
            cell=scan.cell, scan_unix_s=scan.scan_unix_s, **fields,
        ))

    void = read(state, "status", key, st.StatusRecord)
    if void is not None:
        alert(st.ALERT_KIND_VOIDED_SCANNED, detail=void.reason)
    if lot:
        recall = read(state, "recalls", f"{scan.gtin}/{lot}", st.StatusRecord)
        if recall is not None:
            alert(st.ALERT_KIND_RECALLED_SCANNED, detail=recall.reason)
    judgement = judge_scan(
        record, scan.cell, scan.scan_unix_s, expected_scans(batch, product), markets, sold, region=scan.region,
    )
    for kind, text in judgement.signals:
        # (A scan with no place at all is only a reminder: the sighting outside raised its alert already.)
        if scan.cell or scan.region or kind != st.ALERT_KIND_OUTSIDE_MARKETS:
            alert(kind, detail=text)
        if kind == st.ALERT_KIND_SOLD_ELSEWHERE:
            record.scans_elsewhere_after_claim += 1
    if record.HasField("compromise"):
        record.suspicious_scans += 1
    elif judgement.compromise is not None:
        compromise = judgement.compromise
        compromise.height, compromise.block_unix_s = ctx.height, ctx.time_unix_s
        record.compromise.CopyFrom(compromise)
        alert(st.ALERT_KIND_CLONE_SUSPECTED, compromise=compromise, detail=compromise_text(compromise))
        if lot:
            _count_toward_burst(state, ctx, scan.gtin, lot, product, sink)
    _remember(record, scan, sold)
    write(state, "scans", key, record)


def _count_toward_burst(state: Overlay, ctx: TxContext, gtin: str, lot: str, product: st.ProductRecord, sink: _AlertSink) -> None:
    key = f"{gtin}/{lot}"
    window = read(state, "lot_compromises", key, st.LotCompromises) or st.LotCompromises()
    if ctx.time_unix_s - window.window_start_unix_s >= BURST_WINDOW_S:
        window = st.LotCompromises(window_start_unix_s=ctx.time_unix_s, burst_alerted_window=window.burst_alerted_window)
    window.codes += 1
    if window.codes >= BURST_CODES and window.burst_alerted_window != window.window_start_unix_s:
        window.burst_alerted_window = window.window_start_unix_s
        sink.raise_(st.AlertRecord(
            kind=st.ALERT_KIND_BURST, brand_owner_gln=product.brand_owner_gln, gtin=gtin, lot=lot, codes=window.codes,
            detail=f"{window.codes} codes of lot {lot} compromised within {BURST_WINDOW_S // 3600} h",
        ))
    write(state, "lot_compromises", key, window)


def _remember(record: st.ScanRecord, scan: txpb.Scan, sold_unix_s: int) -> None:
    """Count the scan, keep where and when it was seen, and let the first scan after a sale claim it."""
    t = scan.scan_unix_s
    if sold_unix_s and t >= sold_unix_s and record.claimed_unix_s < sold_unix_s:
        # Whatever its cell: a claim without one compares later scans with the item's earlier places.
        record.claimed_unix_s, record.claimed_cell = t, scan.cell
        record.scans_elsewhere_after_claim = 0
    record.scans += 1
    if not record.first_scan_unix_s or t < record.first_scan_unix_s:
        record.first_scan_unix_s = t
    record.last_scan_unix_s = max(record.last_scan_unix_s, t)
    if scan.cell:
        record.last_cell = scan.cell
        place, region = scan.cell[: cells.DISTANCE_CHARS], False
    else:
        record.cellless_scans += 1
        if not scan.region:
            return
        place, region = scan.region, True  # a time zone's region: a sighting of its own kind
    seen = next((s for s in record.sightings if s.cell == place and s.region == region), None)
    if seen is None:
        seen = record.sightings.add(cell=place, region=region, first_unix_s=t, last_unix_s=t)
    seen.first_unix_s, seen.last_unix_s = min(seen.first_unix_s, t), max(seen.last_unix_s, t)
    seen.scans += 1
    if len(record.sightings) > MAX_SIGHTINGS:
        stale = min(range(len(record.sightings)), key=lambda i: (record.sightings[i].last_unix_s, record.sightings[i].cell, record.sightings[i].region))
        del record.sightings[stale]


# --- the brand's side ----------------------------------------------------------------------------


def declare_markets(state: Overlay, ctx: TxContext, a: txpb.DeclareMarkets) -> None:
    _owned_product(state, ctx, a.gtin)
    if len(a.cells) > MAX_MARKET_CELLS:
        raise _invalid(f"at most {MAX_MARKET_CELLS} market cells")
    for cell in a.cells:
        if not (cells.is_cell(cell) and len(cell) <= cells.DISTANCE_CHARS):
            raise _invalid(f"market {cell!r} must be a geohash prefix of 1-{cells.DISTANCE_CHARS} characters")
    declared = txpb.DeclareMarkets(gtin=a.gtin, cells=sorted(set(a.cells)))
    write(state, "markets", a.gtin, st.MarketsRecord(markets=declared, declared_by=ctx.signer.agent_id, height=ctx.height))


def clear_compromise(state: Overlay, ctx: TxContext, a: txpb.ClearCompromise) -> None:
    _owned_product(state, ctx, a.gtin)
    if not CSET82_VALUE.fullmatch(a.serial):
        raise _invalid(f"serial {a.serial!r} is not 1-20 GS1 CSET 82 characters")
    _text(a.reason, "reason", 512)
    key = f"{a.gtin}/{a.serial}"
    record = read(state, "scans", key, st.ScanRecord)
    if record is None or not record.HasField("compromise"):
        raise TxRejected(ResultCode.FAILED_PRECONDITION, f"{key} is not recorded as compromised")
    record.cleared.CopyFrom(st.ClearedCompromise(
        compromise=record.compromise, reason=a.reason, cleared_by=ctx.signer.agent_id, height=ctx.height,
    ))
    record.ClearField("compromise")
    # The evidence is explained: later scans are judged against the places and count from here on.
    record.count_baseline = record.scans
    del record.sightings[:]
    write(state, "scans", key, record)
