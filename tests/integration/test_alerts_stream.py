"""Alerts on the ledger, streamed: a clone suspicion and a voided label's scan raised by the state
machine from real scans, read over AlertService.StreamAlerts; a client that disconnects resumes from
the height after the last alert it processed and gets the next alert, not the earlier ones again."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from shelfproof.ledger.client import LedgerClient
from shelfproof.ledger.genesis import CONSORTIUM_GLN, DEMO_BRAND_GLN
from shelfproof.runtime.errors import LedgerRejected
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.product.v1 import alerts_pb2 as apb
from shelfproof.product.v1 import alerts_pb2_grpc
from shelfproof.product.v1 import labels_pb2 as lpb
from shelfproof.product.v1 import product_pb2 as ppb
from tests.integration.harness import CHAIN
from tests.integration.test_verify import GTIN, _commission, _get, _label
from tests.integration.verify_harness import VerifyStack

pytestmark = pytest.mark.integration
PARIS, SHANGHAI = "u09t", "wtw3"


async def _next_alert(stream, timeout_s: float = 20.0) -> apb.Alert:
    return (await asyncio.wait_for(stream.read(), timeout_s)).alert


async def test_an_alert_arrives_on_stream_alerts_after_a_reconnect(tmp_path, database_dsn):
    async with VerifyStack(tmp_path, database_dsn) as stack:
        alerts = alerts_pb2_grpc.AlertServiceStub(stack.channel)
        await stack.stub.CreateProduct(ppb.CreateProductRequest(product=ppb.Product(gtin=GTIN, name="Serum", brand="Demo")), timeout=20)
        copied, voided = (await _commission(stack, "A1", 4))[:2]
        url, voided_url = stack.local(await _label(stack, copied)), stack.local(await _label(stack, voided))
        _, report = await _get(url + f"&cell={PARIS}", client="127.0.6.1")
        assert report["verdict"] == "GENUINE"
        await stack.scans_on_ledger(GTIN, copied, 1)

        stream = alerts.StreamAlerts(apb.StreamAlertsRequest(from_height=0, brand_owner_gln=DEMO_BRAND_GLN))
        # A copy in Shanghai minutes later: the ledger derives the alert; the brand's system sees it.
        _, report = await _get(url + f"&cell={SHANGHAI}", client="127.0.6.2")
        assert report["verdict"] == "SUSPICIOUS"
        await stack.scans_on_ledger(GTIN, copied, 2)
        first = await _next_alert(stream)
        assert first.record.kind == st.ALERT_KIND_CLONE_SUSPECTED and first.record.serial == copied
        assert first.record.compromise.first.cell == PARIS and first.record.compromise.second.cell == SHANGHAI
        assert first.ledger_ref.height > 0 and first.alert_time.seconds > 0
        stream.cancel()  # the brand's system goes away

        # While it is away: a voided label is scanned (recorded: the ledger turns it into an alert).
        void = await stack.labels.VoidLabels(lpb.VoidLabelsRequest(gtin=GTIN, serials=[voided], reason="misprinted roll"), timeout=20)
        # A void is provable from the next block on (its app hash is in header H+1); under load that
        # block can be a second or more away, so the scan waits for it as a consumer's later scan would.
        await stack.provable(void.ledger_ref.height)
        _, report = await _get(voided_url + f"&cell={PARIS}", client="127.0.6.3")
        assert report["verdict"] == "COUNTERFEIT" and report["scan"]["recorded"]
        await stack.scans_on_ledger(GTIN, voided, 1)

        # Reconnect from the height after the last alert processed: the new alert, not the old one.
        resumed = alerts.StreamAlerts(apb.StreamAlertsRequest(from_height=first.ledger_ref.height + 1, brand_owner_gln=DEMO_BRAND_GLN))
        second = await _next_alert(resumed)
        assert (second.record.kind, second.record.serial, second.record.detail) == (st.ALERT_KIND_VOIDED_SCANNED, voided, "misprinted roll")
        assert second.ledger_ref.height > first.ledger_ref.height
        resumed.cancel()

        # Filtered by brand: another brand's filter sees none of these; a kind filter sees only its kind.
        other = alerts.StreamAlerts(apb.StreamAlertsRequest(from_height=0, brand_owner_gln=CONSORTIUM_GLN))
        with pytest.raises(asyncio.TimeoutError):
            await _next_alert(other, timeout_s=1.5)
        other.cancel()
        only = alerts.StreamAlerts(apb.StreamAlertsRequest(from_height=0, kinds=[st.ALERT_KIND_VOIDED_SCANNED]))
        assert (await _next_alert(only)).record.serial == voided
        only.cancel()

        # Bad requests get INVALID_ARGUMENT, not INTERNAL.
        for bad in (apb.StreamAlertsRequest(from_height=-1), apb.StreamAlertsRequest(brand_owner_gln="123"),
                    apb.StreamAlertsRequest(kinds=[99])):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _next_alert(alerts.StreamAlerts(bad))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_brand_clears_a_false_alarm_on_the_real_ledger_and_the_verdict_follows(tmp_path, database_dsn):
    async with VerifyStack(tmp_path, database_dsn) as stack:
        await stack.stub.CreateProduct(ppb.CreateProductRequest(product=ppb.Product(gtin=GTIN, name="Serum", brand="Demo")), timeout=20)
        serial = (await _commission(stack, "A2", 2))[0]
        url = stack.local(await _label(stack, serial))
        await _get(url + f"&cell={PARIS}", client="127.0.7.1")
        await _get(url + f"&cell={SHANGHAI}", client="127.0.7.2")
        record = await stack.scans_on_ledger(GTIN, serial, 2)
        assert record.HasField("compromise")
        # Another organisation (the consortium itself, which holds clone::clear) cannot clear the brand's code.
        clear = txpb.TransactionBody(clear_compromise=txpb.ClearCompromise(gtin=GTIN, serial=serial, reason="two demo units"))
        consortium = LedgerClient(stack.ledger, stack.genesis.accounts[f"{CONSORTIUM_GLN}/admin-0"].signer(CHAIN))
        with pytest.raises(LedgerRejected, match="belongs to"):
            await consortium.submit(clear)
        alerts = alerts_pb2_grpc.AlertServiceStub(stack.channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await alerts.ClearCompromise(apb.ClearCompromiseRequest(gtin=GTIN, serial=serial, reason=" "), timeout=20)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        cleared = await alerts.ClearCompromise(apb.ClearCompromiseRequest(gtin=GTIN, serial=serial, reason="two demo units"), timeout=20)
        await stack.provable(cleared.ledger_ref.height)
        record = await stack.scans_on_ledger(GTIN, serial, 2)
        assert record.cleared.reason == "two demo units" and not record.HasField("compromise")
        # Clearing it again: nothing compromised to clear (FAILED_PRECONDITION, not INTERNAL).
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await alerts.ClearCompromise(apb.ClearCompromiseRequest(gtin=GTIN, serial=serial, reason="again"), timeout=20)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        _, report = await _get(url + f"&cell={SHANGHAI}", client="127.0.7.3")
        assert report["verdict"] == "GENUINE", report
