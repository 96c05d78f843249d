"""Consumer scans recorded by the consortium's verifier."""

from __future__ import annotations

from shelfproof.gs1.keys import CSET82_VALUE
from shelfproof.ledger.core.codes import ResultCode, TxRejected
from shelfproof.ledger.core.rules.authorization import MAX_SCAN_SKEW_S
from shelfproof.ledger.core.rules.common import MAX_SCANS_PER_TX, TxContext, _denied, _gtin, _invalid, read, write
from shelfproof.ledger.core.rules.membership import _consortium
from shelfproof.ledger.core.state import Overlay
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb

# --- consumer scans -----------------------------------------------------------------------------


def record_scans(state: Overlay, ctx: TxContext, a: txpb.RecordScans) -> None:
    if ctx.signer.organization_gln != _consortium(state).consortium_gln:
        raise _denied("only the consortium's verifier records scans")
    if not 1 <= len(a.scans) <= MAX_SCANS_PER_TX:
        raise _invalid(f"between 1 and {MAX_SCANS_PER_TX} scans per transaction")
    commissioned: dict[str, bool] = {}
    for scan in a.scans:
        gtin = _gtin(scan.gtin)
        if not 0 < scan.scan_unix_s <= ctx.time_unix_s + MAX_SCAN_SKEW_S:
            raise _invalid(f"scan time {scan.scan_unix_s} is not before block time {ctx.time_unix_s} + {MAX_SCAN_SKEW_S} s")
        if gtin not in commissioned:
            product = read(state, "products", gtin, st.ProductRecord)
            if product is None:
                raise TxRejected(ResultCode.NOT_FOUND, f"product {gtin} is not registered")
            commissioned[gtin] = product.batches_commissioned > 0
        if not commissioned[gtin]:
            raise TxRejected(ResultCode.FAILED_PRECONDITION, f"no batch of {gtin} is commissioned")
        if not CSET82_VALUE.fullmatch(scan.serial):
            raise _invalid(f"serial {scan.serial!r} is not 1-20 GS1 CSET 82 characters")
        if len(scan.cell) > 12:
            raise _invalid("cell must be a coarse location cell of at most 12 characters")
        key = f"{scan.gtin}/{scan.serial}"
        record = read(state, "scans", key, st.ScanRecord) or st.ScanRecord()
        record.scans += 1
        if scan.cell:
            record.last_cell = scan.cell
            cells = sorted(set(record.cells) | {scan.cell})[:16]
            del record.cells[:]
            record.cells.extend(cells)
        record.last_scan_unix_s = max(record.last_scan_unix_s, scan.scan_unix_s)
        _claim_or_flag(read(state, "items", key, st.ItemRecord), record, scan)
        write(state, "scans", key, record)


def _claim_or_flag(item: st.ItemRecord | None, record: st.ScanRecord, scan: txpb.Scan) -> None:
    """After a sale, the first scan claims the item for its buyer; scans from elsewhere are counted."""
    if item is None or not item.sold_unix_s or scan.scan_unix_s < item.sold_unix_s:
        return
    if record.claimed_unix_s < item.sold_unix_s:  # never claimed since this sale
        record.claimed_unix_s = scan.scan_unix_s
        record.claimed_cell = scan.cell
        record.scans_elsewhere_after_claim = 0
    elif scan.cell and not record.claimed_cell:
        record.claimed_cell = scan.cell
    elif scan.cell and scan.cell != record.claimed_cell:
        record.scans_elsewhere_after_claim += 1
