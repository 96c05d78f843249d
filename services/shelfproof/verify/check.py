"""`shelfproof verify URL`: check a product code without trusting the server that answers.

It fetches the JSON form of the page, then believes only what the validators signed and its own
settings:
- the chain id and validator sets come from its trust root (local genesis/key files or options),
  never from the evidence: evidence for another chain is refused;
- the header must be signed by more than 2/3 of a trusted set and be at most ``max_age_s`` old by the
  verifier's own clock (an old height can predate a recall);
- every key the verdict rests on (the signing key and its revocation, the product, the batch, the
  lot's recall, the label's void, the item's disposition and custody, its scan record) must be in the
  evidence with its proof, present or absent; evidence that leaves one out is refused, naming it;
- the serial's Merkle path must lead to the proven batch root;
- the verdict is recomputed with the verifier's own clone rules (the batch's proven expected scans,
  else its defaults), its own clock and the cell (or time zone) in the URL: the ``rules`` and ``scan`` the server
  put in its report are ignored.
Exit 0: the server's verdict agrees; 1: it disagrees with the proven facts; 2: nothing can be trusted.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable
from urllib.parse import parse_qs, urlsplit

import httpx

from shelfproof.gs1.digital_link import InvalidDigitalLink, parse_digital_link
from shelfproof.gs1.labels import verify_label
from shelfproof.verify import evidence as ev
from shelfproof.verify import geo
from shelfproof.verify.trust import TrustRoot
from shelfproof.verify.verdict import CloneRules, Facts, assess

EXIT_AGREES, EXIT_DISAGREES, EXIT_UNVERIFIABLE = 0, 1, 2
# Blocks come at least every second on a live ledger (empty blocks included), so honest evidence is
# seconds old; two minutes bounds how long a server can replay a state from before a recall, with
# room for clock skew and a slow network.
DEFAULT_MAX_AGE_S = 120.0


@dataclass(frozen=True)
class VerifierPolicy:
    """The verifier's own settings: nothing here comes from the server."""

    max_age_s: float = DEFAULT_MAX_AGE_S
    rules: CloneRules = CloneRules()
    clock: Callable[[], float] = time.time


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


def _place_of(url: str) -> tuple[str, str]:
    """The consumer's coarse cell, else the region of the time zone, from the URL scanned (the server's
    echo of them is not used): (cell, region)."""
    query = parse_qs(urlsplit(url).query)
    try:
        if query.get("cell"):
            return geo.normalize_cell(query["cell"][0]), ""
        if query.get("tz"):
            return "", geo.region_of_time_zone(query["tz"][0])
    except geo.InvalidCell:
        pass
    return "", ""


def required_keys(gtin: str, serial: str, key_id: str, batch_id: str, lot: str) -> dict[str, bytes]:
    """Store → key that a verdict on this code rests on; the batch's keys only once a batch is proven
    (a code whose batch the evidence leaves out is not proven commissioned, so it is COUNTERFEIT)."""
    ref = ev.ItemRef(gtin, serial, key_id, batch_id, lot)
    return dict(ref.keys())


def check_report(url: str, report: dict, trust: TrustRoot, policy: VerifierPolicy = VerifierPolicy()) -> CheckResult:
    """Check a report fetched for ``url``; raises ev.EvidenceError when the evidence is wrong or short."""
    now = policy.clock()
    link = parse_digital_link(url, max_length=4096)
    gtin, serial = link.gtin, link.serial or ""
    chain_id, height, header, validators, values, membership = ev.parse_evidence_json(report["evidence"])
    if chain_id != trust.chain_id:
        raise ev.EvidenceError(f"the evidence is for chain {chain_id!r}; this verifier trusts chain {trust.chain_id!r}")
    checked = ev.check_header(trust.chain_id, height, header, validators, set(trust.validator_hashes))
    ev.check_fresh(checked, now, policy.max_age_s)
    by_store: dict[str, object] = {}
    for value in values:
        if value.store in by_store:
            raise ev.EvidenceError(f"the evidence answers {value.store} twice")
        by_store[value.store] = value
    records = ev.check_values(checked, values)
    batch = records.get("batches")
    expected = required_keys(
        gtin, serial, ev.ItemRef.key_id_of(link.key_id), batch.batch.batch_id if batch else "", batch.batch.lot if batch else ""
    )
    if "batches" in by_store and batch is None:
        # A batch proven absent: nothing to derive its recall key from; the code is not commissioned.
        expected["batches"] = by_store["batches"].key
    for value in values:
        if value.key != expected.get(value.store):
            raise ev.EvidenceError(f"the evidence answers {value.store}/{value.key.decode(errors='replace')}, not this code's key")
    for store, key in expected.items():
        if store not in by_store:
            raise ev.EvidenceError(
                f"the evidence leaves out {store}/{key.decode(errors='replace')} ({ev.FACT_OF_STORE[store]}), "
                "which the verdict depends on: it must come proven present or proven absent"
            )
    if batch is not None and batch.batch.gtin != gtin:
        raise ev.EvidenceError("the proven batch is of another product")
    in_batch = False
    if batch is not None and membership is not None:
        ev.check_membership(serial, membership, batch)
        in_batch = True
    key = records.get("keys")
    cell, region = _place_of(url)
    facts = Facts(
        gtin=gtin, serial=serial, signature_present=link.signature is not None,
        signature_valid=verify_label(link, key.public_key) if key is not None and link.signature is not None else None,
        key=key, product=records.get("products"), batch=batch, in_batch=in_batch,
        recall=records.get("recalls"), void=records.get("status"), item=records.get("items"), scans=records.get("scans"),
        markets=records.get("markets"),
        scan_cell=cell, scan_unix_s=int(now), today=datetime.fromtimestamp(now, timezone.utc).date(),
        scan_region=region,
    )
    mine = assess(facts, policy.rules)
    commit = checked.commit
    lines = [
        f"header {height + 1} of chain {trust.chain_id}: signed by {commit.signers} validator(s), "
        f"{commit.signed_power} of {commit.total_power} voting power, from a trusted validator set",
        f"app hash {checked.app_hash.hex().upper()} (state at height {height}), "
        f"{now - checked.time_unix_s:,.0f} s old by this verifier's clock (at most {policy.max_age_s:,.0f} s accepted)",
        *[f"proven: {fact}" for fact in ev.proven_facts(values, records)],
        *([f"proven: serial {serial} is leaf {membership.index} of {membership.total} under the batch root"] if in_batch else []),
        *([] if batch is not None else ["not proven: that the serial was commissioned (the evidence names no batch holding it)"]),
        "clone rules and time: this verifier's own (the server's rules and scan time are not used)",
        f"verdict: {mine.verdict.value}" + "".join(f"\n  - {r}" for r in mine.reasons),
        *[f"warning: {w}" for w in mine.warnings],
    ]
    agrees = mine.verdict.value == report.get("verdict")
    if not agrees:
        lines.append(f"the server said {report.get('verdict')!r}: it disagrees with the proven facts")
    return CheckResult(EXIT_AGREES if agrees else EXIT_DISAGREES, mine.verdict.value, str(report.get("verdict")), lines)


def check_url(url: str, trust: TrustRoot, policy: VerifierPolicy = VerifierPolicy(), *, timeout_s: float = 10.0) -> CheckResult:
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
    return check_fetched(url, report, trust, policy)


def check_fetched(url: str, report: object, trust: TrustRoot, policy: VerifierPolicy = VerifierPolicy()) -> CheckResult:
    """``check_report`` with every refusal turned into exit 2 and its reason."""
    server_verdict = str(report.get("verdict", "")) if isinstance(report, dict) else ""
    try:
        if not isinstance(report, dict):
            raise ev.EvidenceError("the answer is not a JSON object")
        return check_report(url, report, trust, policy)
    except (ev.EvidenceError, KeyError, TypeError, ValueError, AttributeError) as err:
        return CheckResult(EXIT_UNVERIFIABLE, server_verdict=server_verdict, lines=[f"the evidence does not check out: {err}"])
