"""`shelfproof verify URL`: check a product code without trusting the server that answers.

It fetches the JSON form of the page, then believes only what the validators signed: the header's
commit signatures against a validator set it already trusts (from local files or given by hash),
every value's proof against that header's app hash, each value's key against the code it asked
about, and the serial's Merkle path to its batch's root. It recomputes the verdict from those
facts with the same rules as the service and says whether the server's verdict agrees.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone

import httpx

from shelfproof.gs1.digital_link import InvalidDigitalLink, parse_digital_link
from shelfproof.gs1.labels import verify_label
from shelfproof.verify import evidence as ev
from shelfproof.verify.verdict import CloneRules, Facts, assess

EXIT_AGREES, EXIT_DISAGREES, EXIT_UNVERIFIABLE = 0, 1, 2


@dataclass
class CheckResult:
    exit_code: int
    verdict: str = ""
    server_verdict: str = ""
    lines: list[str] = field(default_factory=list)

    def as_json(self) -> str:
        return json.dumps({"exit_code": self.exit_code, "verdict": self.verdict, "server_verdict": self.server_verdict, "notes": self.lines})


def _json_url(url: str) -> str:
    return url + ("&" if "?" in url else "?") + "format=json"


def check_report(url: str, report: dict, trusted: set[bytes]) -> CheckResult:
    """Check a report fetched for ``url``; raises ev.EvidenceError when the evidence is wrong."""
    link = parse_digital_link(url, max_length=4096)
    gtin, serial = link.gtin, link.serial or ""
    chain_id, height, header, validators, values, membership = ev.parse_evidence_json(report["evidence"])
    checked = ev.check_header(chain_id, height, header, validators, trusted)
    records = ev.check_values(checked, values)
    item_key = f"{gtin}/{serial}".encode()
    batch = records.get("batches")
    expected_keys = {
        "keys": (link.key_id or "").encode(), "products": gtin.encode(), "status": item_key, "items": item_key, "scans": item_key,
        "batches": batch.batch.batch_id.encode() if batch else None,
        "recalls": f"{gtin}/{batch.batch.lot}".encode() if batch else None,
    }
    for value in values:
        if value.key != expected_keys.get(value.store):
            raise ev.EvidenceError(f"the evidence answers {value.store}/{value.key.decode(errors='replace')}, not this code's key")
    if batch is not None and batch.batch.gtin != gtin:
        raise ev.EvidenceError("the proven batch is of another product")
    in_batch = False
    if batch is not None and membership is not None:
        ev.check_membership(serial, membership, batch)
        in_batch = True
    key = records.get("keys")
    scan_unix_s = int(report["scan"]["unix_s"])
    facts = Facts(
        gtin=gtin, serial=serial, signature_present=link.signature is not None,
        signature_valid=verify_label(link, key.public_key) if key is not None and link.signature is not None else None,
        key=key, product=records.get("products"), batch=batch, in_batch=in_batch,
        recall=records.get("recalls"), void=records.get("status"), item=records.get("items"), scans=records.get("scans"),
        scan_cell=report["scan"].get("cell") or "", scan_unix_s=scan_unix_s,
        today=datetime.fromtimestamp(scan_unix_s, timezone.utc).date(),
    )
    rules = CloneRules(**{k: v for k, v in report.get("rules", {}).items() if k in CloneRules.__dataclass_fields__})
    mine = assess(facts, rules)
    commit = checked.commit
    lines = [
        f"header {height + 1} of chain {chain_id}: signed by {commit.signers} validator(s), "
        f"{commit.signed_power} of {commit.total_power} voting power, from a trusted validator set",
        f"app hash {checked.app_hash.hex().upper()} (state at height {height})",
        *[f"proven: {ev.FACT_OF_STORE[v.store]}" for v in values if v.found],
        *([f"proven: serial {serial} is leaf {membership.index} of {membership.total} under the batch root"] if in_batch else []),
        *[f"not proven (absent at this height): {ev.FACT_OF_STORE[v.store]}" for v in values if not v.found],
        f"verdict: {mine.verdict.value}" + "".join(f"\n  - {r}" for r in mine.reasons),
        *[f"warning: {w}" for w in mine.warnings],
    ]
    agrees = mine.verdict.value == report.get("verdict")
    if not agrees:
        lines.append(f"the server said {report.get('verdict')!r}: it disagrees with the proven facts")
    return CheckResult(EXIT_AGREES if agrees else EXIT_DISAGREES, mine.verdict.value, str(report.get("verdict")), lines)


def check_url(url: str, trusted: set[bytes], *, timeout_s: float = 10.0) -> CheckResult:
    try:
        parse_digital_link(url, max_length=4096)
    except InvalidDigitalLink as err:
        return CheckResult(EXIT_UNVERIFIABLE, lines=[f"not a product code: {err}"])
    try:
        response = httpx.get(_json_url(url), headers={"Accept": "application/json"}, timeout=timeout_s)
        report = response.json()
    except (httpx.HTTPError, ValueError) as err:
        return CheckResult(EXIT_UNVERIFIABLE, lines=[f"could not fetch {url}: {err}"])
    if response.status_code != 200:
        detail = report.get("error", {}).get("detail", "") if isinstance(report, dict) else ""
        return CheckResult(EXIT_UNVERIFIABLE, lines=[f"the server answered {response.status_code}: {detail}"])
    try:
        return check_report(url, report, trusted)
    except (ev.EvidenceError, KeyError, TypeError, ValueError) as err:
        return CheckResult(EXIT_UNVERIFIABLE, server_verdict=str(report.get("verdict", "")), lines=[f"the evidence does not check out: {err}"])
