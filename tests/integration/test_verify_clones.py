"""Clone defense end to end over the real ledger, registry and verify page: the first far copy no
longer makes later copies "local", a scan without a cell after a compromise, copies surfacing a
week after the genuine scans, and the command-line verifier agreeing with every verdict."""

from __future__ import annotations

import asyncio
import time

import pytest

from shelfproof.gs1.digital_link import parse_digital_link
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.product.v1 import alerts_pb2 as apb
from shelfproof.product.v1 import alerts_pb2_grpc
from shelfproof.product.v1 import product_pb2 as ppb
from shelfproof.verify.check import EXIT_AGREES, check_url
from tests.integration.test_verify import GTIN, _commission, _get, _label
from tests.integration.verify_harness import VerifyStack

pytestmark = pytest.mark.integration
PARIS, LYON, SHANGHAI, LAGOS = "u09t", "u05k", "wtw3", "s14m"
WEEK = 7 * 86_400


async def test_copies_stay_caught_wherever_and_whenever_they_surface(tmp_path, database_dsn):
    async with VerifyStack(tmp_path, database_dsn) as stack:
        await stack.stub.CreateProduct(ppb.CreateProductRequest(product=ppb.Product(
            gtin=GTIN, name="Eau de parfum 50 ml", brand="Demo", category="Fragrance")), timeout=20)
        alerts = alerts_pb2_grpc.AlertServiceStub(stack.channel)
        declared = await alerts.DeclareMarkets(apb.DeclareMarketsRequest(gtin=GTIN, cells=["u0", "u1", "u2", "gc", "sp"]), timeout=20)
        await stack.provable(declared.ledger_ref.height)
        copied, late, genuine, zoned = (await _commission(stack, "P1", 6))[:4]

        # 1. Paris, then a copy in Shanghai minutes later: caught, and every later copy too.
        url = stack.local(await _label(stack, copied))
        for n in range(2):
            _, report = await _get(url + f"&cell={PARIS}", client=f"127.0.8.{n + 1}")
            assert report["verdict"] == "GENUINE", report
        await stack.scans_on_ledger(GTIN, copied, 2)
        _, report = await _get(url + f"&cell={SHANGHAI}", client="127.0.8.3")
        assert report["verdict"] == "SUSPICIOUS" and "km away" in report["reasons"][0]
        record = await stack.scans_on_ledger(GTIN, copied, 3)
        assert record.compromise.reason == st.COMPROMISE_REASON_IMPOSSIBLE_TRAVEL and record.last_cell == SHANGHAI
        for n, cell in enumerate([SHANGHAI, SHANGHAI, "", PARIS]):  # where last_cell now is; no cell; "home"
            _, report = await _get(url + (f"&cell={cell}" if cell else ""), client=f"127.0.8.{n + 4}")
            assert report["verdict"] == "SUSPICIOUS" and "km away" in report["reasons"][0], (cell, report)
        assert (await stack.scans_on_ledger(GTIN, copied, 7)).suspicious_scans == 4
        # A third party checking the proofs with the ledger's rules reaches the same verdict.
        result = await asyncio.to_thread(check_url, url, stack.trust)
        assert (result.exit_code, result.verdict) == (EXIT_AGREES, "SUSPICIOUS"), result.lines

        # 2. Genuine scans a week ago in Paris; copies surface today in Lagos.
        late_link = parse_digital_link(await _label(stack, late))
        now = time.time()
        for n, cell in enumerate([PARIS, ""]):
            report = await stack.verifier.verify(late_link, client=f"late-{n}", cell=cell, now=now - WEEK + n * 3600)
            assert report["verdict"] == "GENUINE"
        await stack.scans_on_ledger(GTIN, late, 2)
        late_url = stack.local(await _label(stack, late))
        _, report = await _get(late_url + f"&cell={LAGOS}", client="127.0.9.1")
        assert report["verdict"] == "SUSPICIOUS" and any("outside" in r for r in report["reasons"]), report
        record = await stack.scans_on_ledger(GTIN, late, 3)
        assert record.compromise.reason == st.COMPROMISE_REASON_INSIDE_AND_OUTSIDE_MARKETS
        _, report = await _get(late_url, client="127.0.9.2")  # the next copy shares no cell
        assert report["verdict"] == "SUSPICIOUS"

        # 3. No false alarm: a genuine item seen across France over days stays GENUINE.
        link = parse_digital_link(await _label(stack, genuine))
        for n, (cell, ago) in enumerate([(PARIS, 3 * 86_400), (PARIS, 2 * 86_400), (LYON, 86_400)]):
            assert (await stack.verifier.verify(link, client=f"g-{n}", cell=cell, now=now - ago))["verdict"] == "GENUINE"
            await stack.scans_on_ledger(GTIN, genuine, n + 1)
        _, report = await _get(stack.local(await _label(stack, genuine)) + f"&cell={PARIS}", client="127.0.9.3")
        assert report["verdict"] == "GENUINE", report

        # 4. No cell shared at all: the pages' time zones. A week after two genuine looks from phones
        # in Europe/Paris, a copy's page in Asia/Shanghai: inside and far outside the markets.
        zoned_url = stack.local(await _label(stack, zoned))
        zoned_link = parse_digital_link(await _label(stack, zoned))
        for n in range(2):
            report = await stack.verifier.verify(zoned_link, client=f"z-{n}", region="u0", now=now - WEEK + n * 3600)
            assert report["verdict"] == "GENUINE" and report["scan"]["region"] == "u0", report
        await stack.scans_on_ledger(GTIN, zoned, 2)
        _, report = await _get(zoned_url + "&tz=Asia/Shanghai", client="127.0.9.4")
        assert report["verdict"] == "SUSPICIOUS" and report["scan"] == {**report["scan"], "cell": None, "region": "wt"}, report
        # Before that scan is on the ledger, `shelfproof verify` judges the URL's time zone as the server did.
        result = await asyncio.to_thread(check_url, zoned_url + "&tz=Asia/Shanghai", stack.trust)
        assert (result.exit_code, result.verdict) == (EXIT_AGREES, "SUSPICIOUS"), result.lines
        record = await stack.scans_on_ledger(GTIN, zoned, 3)
        assert record.compromise.reason == st.COMPROMISE_REASON_INSIDE_AND_OUTSIDE_MARKETS
        assert (record.compromise.first.cell, record.compromise.second.cell) == ("u0", "wt")
        _, report = await _get(zoned_url, client="127.0.9.5")  # the next copy sends nothing: still caught
        assert report["verdict"] == "SUSPICIOUS"
