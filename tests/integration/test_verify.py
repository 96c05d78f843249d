"""Consumer verification end to end over the real ledger and registry: the four verdicts, the
evidence a third party can check, scan records, bad input and rate limiting."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from nacl.signing import SigningKey

from shelfproof.gs1 import labels
from shelfproof.gs1.digital_link import parse_digital_link
from shelfproof.ledger.genesis import DEMO_BRAND_GLN
from shelfproof.product.v1 import events_pb2 as epb
from shelfproof.product.v1 import labels_pb2 as lpb
from shelfproof.product.v1 import product_pb2 as ppb
from shelfproof.verify import evidence as ev
from shelfproof.verify.check import EXIT_AGREES, EXIT_DISAGREES, check_report, check_url
from shelfproof.verify.verdict import CloneRules
from tests.integration.harness import RESOLVER
from tests.integration.verify_harness import VerifyStack

pytestmark = pytest.mark.integration

GTIN = "00614141123452"
PLANT, STORE, UNKNOWN_PLACE = "0614141000029", "0614141000036", "0614141000098"
BERLIN, NEW_YORK, PARIS = "u33d", "dr5r", "u09t"


def _event(time: str, step: str, disposition: str, serials: list[str], location: str, action: str = "OBSERVE") -> dict:
    return {
        "type": "ObjectEvent", "eventTime": time, "eventTimeZoneOffset": "+00:00", "action": action,
        "epcList": [f"https://id.gs1.org/01/{GTIN}/21/{s}" for s in serials],
        "bizStep": step, "disposition": disposition,
        "bizLocation": {"id": f"https://id.gs1.org/414/{location}"}, "readPoint": {"id": f"https://id.gs1.org/414/{location}"},
    }


def _document(events: list[dict]) -> bytes:
    return json.dumps({
        "@context": ["https://ref.gs1.org/standards/epcis/epcis-context.jsonld"], "type": "EPCISDocument",
        "schemaVersion": "2.0", "creationDate": "2026-11-25T10:00:00.000Z", "epcisBody": {"eventList": events},
    }).encode()


async def _commission(stack: VerifyStack, lot: str, count: int, expected_scans: int = 0) -> list[str]:
    async for _ in stack.stub.CommissionItems(
        ppb.CommissionItemsRequest(gtin=GTIN, lot=lot, count=count, expiry="2030-01-31", expected_scans_per_item=expected_scans), timeout=60
    ):
        pass
    import psycopg

    with psycopg.connect(stack.dsn) as conn:
        rows = conn.execute(
            "SELECT serial FROM items JOIN batches USING (batch_id) WHERE lot = %s ORDER BY leaf_index", (lot,)
        ).fetchall()
    return [r[0] for r in rows]


async def _label(stack: VerifyStack, serial: str) -> str:
    reply = await stack.labels.GetItemLabel(lpb.GetItemLabelRequest(gtin=GTIN, serial=serial, format=lpb.LABEL_FORMAT_URI), timeout=10)
    return reply.uri


async def _get(url: str, *, client: str = "127.0.0.2", json_form: bool = True) -> tuple[int, dict | str]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(client, 0))) as session:
        headers = {"Accept": "application/json"} if json_form else {"Accept": "text/html"}
        async with session.get(url, headers=headers) as response:
            body = await response.json() if json_form else await response.text()
            return response.status, body


def _independent_check(stack: VerifyStack, report: dict, serial: str) -> dict:
    """What `shelfproof verify` does: trust only the validator set, check header, proofs and path."""
    chain_id, height, header, validators, values, membership = ev.parse_evidence_json(report["evidence"])
    checked = ev.check_header(chain_id, height, header, validators, stack.trusted)
    records = ev.check_values(checked, values)
    if membership is not None:
        ev.check_membership(serial, membership, records["batches"])
    return records


async def test_the_four_verdicts_with_checkable_evidence(tmp_path, database_dsn):
    async with VerifyStack(tmp_path, database_dsn, rules=CloneRules(default_expected_scans=25)) as stack:
        await stack.stub.CreateProduct(ppb.CreateProductRequest(product=ppb.Product(gtin=GTIN, name="Olive oil 1 l", brand="Demo")), timeout=20)
        for gln, name in ((PLANT, "Demo plant"), (STORE, "Demo Store Berlin")):
            await stack.stub.CreateLocation(ppb.CreateLocationRequest(location=ppb.Location(gln=gln, name=name, country_code="DE")), timeout=20)
        serials = await _commission(stack, "L1", 12, expected_scans=3)
        recalled = await _commission(stack, "L2", 3)
        # Scanned the moment its batch committed (not yet provable): the page waits for the proof.
        status, fresh = await _get(stack.local(await _label(stack, recalled[2])))
        assert status == 200 and fresh["verdict"] == "GENUINE", fresh
        g, sold, stolen, travel, counted = serials[:5]
        captured = await stack.events.CaptureEvents(epb.CaptureEventsRequest(epcis_document=_document([
            _event("2026-11-20T08:00:00.000Z", "shipping", "in_transit", [g, sold, stolen, travel, counted], PLANT),
            _event("2026-11-21T09:00:00.000Z", "receiving", "sellable_not_accessible", [g, sold, stolen, travel, counted], STORE),
            _event("2026-11-22T10:00:00.000Z", "retail_selling", "retail_sold", [sold], STORE),
            _event("2026-11-22T11:00:00.000Z", "holding", "stolen", [stolen], STORE),
            _event("2026-11-22T12:00:00.000Z", "receiving", "in_progress", [serials[5]], UNKNOWN_PLACE),
        ])), timeout=30)
        await stack.provable(max(e.ledger_ref.height for e in captured.events))

        # GENUINE: the journey from the ledger, the evidence checks out independently.
        status, report = await _get(stack.local(await _label(stack, g)))
        assert status == 200 and report["verdict"] == "GENUINE", report
        assert [s["step"] for s in report["journey"]] == ["commissioned", "shipping", "receiving"]
        assert report["journey"][-1]["location"] == "Demo Store Berlin"
        assert report["product"]["name"] == "Olive oil 1 l" and report["product"]["lot"] == "L1"
        assert report["evidence"]["validators"]["signed"] == 1
        records = _independent_check(stack, report, g)
        assert records["items"].custody[-1].biz_step == "receiving" and records["keys"].organization_gln == DEMO_BRAND_GLN
        assert "the serial is in its batch (Merkle path to the committed root)" in report["facts"]["proven"]
        # Absence is proven, not merely reported, and the page says so.
        assert {"not recalled — proven", "label not voided — proven", "key not revoked — proven"} <= set(report["facts"]["proven"])
        _, page = await _get(stack.local(await _label(stack, g)), json_form=False)
        assert "not recalled — proven" in page and "key not revoked — proven" in page

        # The command-line verifier agrees, trusting only the validator set.
        result = await asyncio.to_thread(check_url, stack.local(await _label(stack, g)), stack.trust)
        assert (result.exit_code, result.verdict) == (EXIT_AGREES, "GENUINE"), result.lines
        assert any("leaf" in line for line in result.lines)
        assert "proven: not recalled — proven" in result.lines and "proven: label not voided — proven" in result.lines

        # Tampered evidence fails the independent check.
        forged = json.loads(json.dumps(report))
        items = next(p for p in forged["evidence"]["proofs"] if p["store"] == "items")
        items["value"] = items["value"][:-4] + ("AAAA" if not items["value"].endswith("AAAA") else "BBBB")
        with pytest.raises(ev.EvidenceError):
            _independent_check(stack, forged, g)
        with pytest.raises(ev.EvidenceError):
            ev.check_header(*ev.parse_evidence_json(report["evidence"])[:4], trusted={b"\x00" * 32})

        # COUNTERFEIT: no signature, a wrong one, an unregistered key, a serial never commissioned.
        uri = await _label(stack, g)
        unsigned = uri.split("?")[0]
        other = parse_digital_link(await _label(stack, serials[6]))
        wrong_sig = unsigned + "?sig=" + uri.split("sig=")[1].split("&")[0][:-4] + "AAAA" + "&kid=" + other.key_id
        rogue = SigningKey.generate()
        unregistered = labels.sign_label(rogue, GTIN, g, RESOLVER).to_uri()
        brand_key = stack.genesis.accounts[f"{DEMO_BRAND_GLN}/admin-0"].signer(stack.genesis.chain_id).signing_key
        never = labels.sign_label(brand_key, GTIN, "NEVER1", RESOLVER).to_uri()
        expected = {
            unsigned: "no brand signature", wrong_sig: "does not match", unregistered: "not registered", never: "never commissioned",
        }
        for url, why in expected.items():
            status, report = await _get(stack.local(url))
            assert status == 200 and report["verdict"] == "COUNTERFEIT", (url, report)
            assert why in report["reasons"][0], report["reasons"]
            assert report["scan"]["recorded"] is False  # fakes leave nothing on the ledger
            assert check_report(stack.local(url), report, stack.trust).verdict == "COUNTERFEIT"

        # RECALLED, said first.
        recall = await stack.stub.RecallLot(ppb.RecallLotRequest(gtin=GTIN, lot="L2", reason="glass fragments"), timeout=20)
        await stack.provable(recall.recall.ledger_ref.height)
        status, report = await _get(stack.local(await _label(stack, recalled[0])))
        assert report["verdict"] == "RECALLED" and "glass fragments" in report["reasons"][0]
        assert "the lot is recalled" in report["facts"]["proven"]
        lie = dict(report, verdict="GENUINE")  # a server that hides the recall is caught
        result = check_report(stack.local(await _label(stack, recalled[0])), lie, stack.trust)
        assert (result.exit_code, result.verdict) == (EXIT_DISAGREES, "RECALLED")
        html_status, page = await _get(stack.local(await _label(stack, recalled[0])), json_form=False)
        assert html_status == 200 and page.index('id=recall') < page.index("<h2>Product")

        # Custody that ends somewhere no member registered is flagged (reported, not proven).
        _, report = await _get(stack.local(await _label(stack, serials[5])))
        assert report["verdict"] == "GENUINE" and any("not a registered location" in w for w in report["warnings"])

        # Warnings: stolen, already sold.
        _, report = await _get(stack.local(await _label(stack, stolen)))
        assert report["verdict"] == "GENUINE" and "Reported stolen." in report["warnings"]

        # SUSPICIOUS 1: scans above the batch's expected count (3), from different consumers.
        url = stack.local(await _label(stack, counted))
        for n in range(3):
            _, report = await _get(url, client=f"127.0.1.{n + 1}")
            assert report["verdict"] == "GENUINE" and report["scan"]["recorded"]
        await _get(url, client="127.0.1.1")  # the same consumer again: not counted twice
        assert (await stack.scans_on_ledger(GTIN, counted, 3)).scans == 3
        _, report = await _get(url, client="127.0.1.9")
        assert report["verdict"] == "SUSPICIOUS" and "scanned 4 times" in report["reasons"][0]

        # SUSPICIOUS 2: impossible travel, Berlin then New York a moment later.
        url = stack.local(await _label(stack, travel))
        _, report = await _get(url + f"&cell={BERLIN}xyz", client="127.0.2.1")
        assert report["verdict"] == "GENUINE" and report["scan"]["cell"] == BERLIN  # cut to a coarse cell
        record = await stack.scans_on_ledger(GTIN, travel, 1)
        assert record.last_cell == BERLIN
        _, report = await _get(url + f"&cell={NEW_YORK}", client="127.0.2.2")
        assert report["verdict"] == "SUSPICIOUS" and "km away" in report["reasons"][0]

        # SUSPICIOUS 3: sold, claimed by its buyer in Berlin, then scanned in Paris.
        url = stack.local(await _label(stack, sold))
        _, report = await _get(url + f"&cell={BERLIN}", client="127.0.3.1")
        assert report["verdict"] == "GENUINE" and "Already sold." in report["warnings"]
        record = await stack.scans_on_ledger(GTIN, sold, 1)
        assert record.claimed_cell == BERLIN and record.claimed_unix_s > 0
        _, report = await _get(url + f"&cell={PARIS}", client="127.0.3.2")
        assert report["verdict"] == "SUSPICIOUS" and any("claimed" in r for r in report["reasons"])


async def test_bad_input_gets_a_clear_400_or_404_and_serials_cannot_be_walked(tmp_path, database_dsn):
    async with VerifyStack(tmp_path, database_dsn, rate_per_s=1.0, burst=5) as stack:
        base = stack.base_url
        cases = {
            f"/01/{GTIN[:-1]}9/21/A1": (400, "check digit"),
            f"/01/{GTIN}/21/A1?sig=***&kid=abc": (400, "base64"),
            f"/01/{GTIN}/21/A1?sig=abc&sig=abd": (400, "appears twice"),
            f"/01/{GTIN}/21/{'A' * 21}": (400, "CSET 82"),
            f"/01/{GTIN}/21/A1?cell=not-a-cell": (400, "geohash"),
            f"/01/{GTIN}/21/A1?tz=Europe/Paris;DROP": (400, "IANA time zone"),
            f"/01/{GTIN}/21/A1?x=" + "y" * 2000: (400, "longer than"),
            f"/01/{GTIN}": (404, "/21/"),
            "/nothing/here": (404, "nothing at this address"),
        }
        for n, (path, (status, text)) in enumerate(cases.items()):
            # One client each: bad requests count against the rate limit too.
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(f"127.0.5.{n + 1}", 0))) as session:
                async with session.get(base + path, headers={"Accept": "application/json"}) as response:
                    body = await response.json()
                    assert response.status == status, (path, body)
                    assert text in body["error"]["detail"] and "Traceback" not in json.dumps(body), (path, body)
                if n == 0:  # the same, as a page
                    async with session.get(base + path) as response:
                        page = await response.text()
                        assert response.status == status and "check digit" in page and "<html" in page
                if n == 1:  # an oversized request line is refused by the HTTP parser itself, still a 4xx
                    async with session.get(base + "/01/" + "9" * 10_000) as response:
                        assert 400 <= response.status < 500
        # Rate limit: a burst of 5, then 429 with Retry-After; another client is not affected.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.6.1", 0))) as session:
            statuses = []
            for n in range(8):
                async with session.get(f"{base}/01/{GTIN}/21/W{n}?format=json") as response:
                    statuses.append(response.status)
                    if response.status == 429:
                        assert int(response.headers["Retry-After"]) >= 1
            assert statuses.count(429) >= 2 and 429 not in statuses[:5], statuses
        status, _ = await _get(f"{base}/01/{GTIN}/21/W0?format=json", client="127.0.6.2")
        assert status == 200
