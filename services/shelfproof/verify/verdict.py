"""From facts to a verdict. Pure: the service and the command-line verifier run the same rules.

Order of precedence: COUNTERFEIT (the code is not one the brand issued) > RECALLED (its lot is
recalled: the consumer must read that first) > SUSPICIOUS (a real code, but signs that it was
copied) > GENUINE. Warnings (stolen, expired, already sold) sit beside any verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

from shelfproof.ledger.core.clones import CloneRules, compromise_text, expected_scans, judge_scan
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb

__all__ = ["Assessment", "CloneRules", "Facts", "Verdict", "assess", "clone_signals", "key_revoked"]


class Verdict(StrEnum):
    GENUINE = "GENUINE"
    COUNTERFEIT = "COUNTERFEIT"
    SUSPICIOUS = "SUSPICIOUS"
    RECALLED = "RECALLED"


@dataclass
class Facts:
    """What is known about one scanned code. Ledger records are None when absent at the height read."""

    gtin: str
    serial: str
    signature_present: bool
    # None when there was no registered key to check it with.
    signature_valid: bool | None
    key: st.KeyRecord | None
    product: st.ProductRecord | None
    batch: st.BatchRecord | None
    # The serial's Merkle path leads to the batch's committed root.
    in_batch: bool
    recall: st.StatusRecord | None
    void: st.StatusRecord | None
    item: st.ItemRecord | None
    scans: st.ScanRecord | None
    # This scan: the consumer's coarse cell ("" when not shared) and when it happened.
    scan_cell: str
    scan_unix_s: int
    today: date
    # The brand's declared markets (None: none declared).
    markets: st.MarketsRecord | None = None
    # Without a cell: the coarse region of the phone's time zone ("" when unknown).
    scan_region: str = ""


@dataclass
class Assessment:
    verdict: Verdict
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def key_revoked(key: st.KeyRecord) -> bool:
    """Revoked by the flag or, where the record has one, a revocation height (read with getattr: the
    key record's revocation fields belong to the ledger rules)."""
    return bool(getattr(key, "revoked", False) or getattr(key, "revoked_height", 0))


def _counterfeit_reasons(f: Facts) -> list[str]:
    if not f.signature_present:
        return ["The code carries no brand signature."]
    if f.key is None:
        return ["The code is signed with a key that is not registered on the ledger."]
    if f.product is None:
        return [f"No product {f.gtin} is registered on the ledger."]
    if f.key.organization_gln != f.product.brand_owner_gln:
        return ["The code is signed by an organization that does not own this product."]
    if f.key.purpose == txpb.KEY_PURPOSE_APPROVALS:
        return ["The code is signed with a person's approvals key, not a label key."]
    if key_revoked(f.key) and not _signed_before_rotation(f):
        return ["The code is signed with a key its owner revoked."]
    if not f.signature_valid:
        return ["The brand signature does not match this product and serial."]
    if f.batch is None or not f.in_batch:
        return [f"Serial {f.serial} was never commissioned by the brand."]
    if f.void is not None:
        return [f"The brand voided this label: {f.void.reason or 'no reason given'}."]
    return []


def _signed_before_rotation(f: Facts) -> bool:
    """A key retired in a rotation still vouches for labels of batches commissioned before its
    revocation; a compromised key (or one revoked without a reason) vouches for none."""
    return (
        f.key.revocation_reason == txpb.REVOCATION_REASON_ROTATED
        and f.batch is not None
        and f.batch.height < f.key.revoked_height
    )


def clone_signals(f: Facts, rules: CloneRules) -> list[str]:
    """The ledger's clone rules on the proven record plus this scan: a compromise the ledger already
    holds (sticky, wherever this scan comes from), else what this scan proves or signals."""
    scans = f.scans or st.ScanRecord()
    if scans.HasField("compromise"):
        return [compromise_text(scans.compromise)]
    judgement = judge_scan(
        scans, f.scan_cell, f.scan_unix_s, expected_scans(f.batch, f.product, rules),
        list(f.markets.markets.cells) if f.markets else [], f.item.sold_unix_s if f.item else 0, rules,
        region="" if f.scan_cell else f.scan_region,
    )
    signals = [compromise_text(judgement.compromise)] if judgement.compromise is not None else []
    return signals + [text for _, text in judgement.signals]


def warnings_for(f: Facts) -> list[str]:
    warnings: list[str] = []
    disposition = f.item.disposition if f.item else ""
    if disposition == "stolen":
        warnings.append("Reported stolen.")
    if f.batch is not None and f.batch.batch.expiry and f.batch.batch.expiry < f.today.isoformat():
        warnings.append(f"Expired on {f.batch.batch.expiry}.")
    if disposition == "retail_sold":
        warnings.append("Already sold.")
    return warnings


def assess(f: Facts, rules: CloneRules = CloneRules()) -> Assessment:
    counterfeit = _counterfeit_reasons(f)
    if counterfeit:
        return Assessment(Verdict.COUNTERFEIT, counterfeit)
    warnings = warnings_for(f)
    signals = clone_signals(f, rules)
    if f.recall is not None:
        reason = f"Lot {f.batch.batch.lot if f.batch else ''} is recalled: {f.recall.reason or 'no reason given'}."
        return Assessment(Verdict.RECALLED, [reason, *signals], warnings)
    if signals:
        return Assessment(Verdict.SUSPICIOUS, signals, warnings)
    return Assessment(Verdict.GENUINE, ["Signed by the brand, commissioned, and not recalled."], warnings)
