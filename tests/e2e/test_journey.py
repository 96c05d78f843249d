"""The whole journey against the stack `shelfproof up` starts (shared with test_stack_up.py), each step
through the services' public gRPC and HTTP APIs as the partners' systems, a consumer's phone and the
console would use them:

a brand registers a product and commissions a lot; it is shipped to a distribution centre, received,
shipped to a store, received and sold there; a consumer's scan says GENUINE, a copy of the same code
scanned in another city SUSPICIOUS; the lot is recalled and the scan says RECALLED, proven; the sales took
the product below its reorder point, so the planner's restock loop drafts (the real model), the store
manager approves in the console (its own client code, signing with her key), the supplier acknowledges
the purchase order, the delivery is received against it, and the order, its decision record and every
step are read back from the ledger with proofs checked against the validators; a promotion the planner
proposed, approved the same way, is on the price stream and prices the product in its window."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from datetime import datetime, timedelta, timezone

import grpc
import pytest
from google.protobuf import timestamp_pb2
from tendermint.types import types_pb2, validator_pb2

from shelfproof.console.clients import Addresses, Clients
from shelfproof.console.people import PEOPLE, key_file, unlock_key_file
from shelfproof.demo.seed import DC_GLN, PLANT_GLN, STORE_A_GLN, ensure_key_files
from shelfproof.gs1 import epcis
from shelfproof.gs1.digital_link import canonical_item_uri
from shelfproof.gs1.keys import check_digit
from shelfproof.ledger.client import LedgerClient
from shelfproof.ledger.genesis import DEMO_BRAND_GLN, DEMO_DISTRIBUTOR_GLN, DEMO_RETAILER_GLN, Genesis
from shelfproof.ledger.proofs import light
from shelfproof.ledger.proofs.merkle import keypath_for
from shelfproof.ledger.v1 import ledger_pb2 as lpb
from shelfproof.ledger.v1 import ledger_pb2_grpc
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.planner.runner import CADENCE, DRAFTED, NOTHING_TO_ORDER, REORDER_POINT
from shelfproof.planner.service import MODEL_NOT_ASKED
from shelfproof.planner.v1 import planner_pb2 as ppb
from shelfproof.planner.v1 import planner_pb2_grpc
from shelfproof.pricing.projector import money
from shelfproof.pricing.v1 import pricing_pb2 as prcpb
from shelfproof.pricing.v1 import pricing_pb2_grpc
from shelfproof.product.v1 import events_pb2 as epb
from shelfproof.product.v1 import events_pb2_grpc, labels_pb2_grpc, product_pb2_grpc
from shelfproof.product.v1 import labels_pb2 as lapb
from shelfproof.product.v1 import product_pb2 as prpb
from shelfproof.registry.events import plan_capture
from shelfproof.verify.check import EXIT_AGREES, check_url
from shelfproof.verify.trust import TrustRoot, local_trust_root
from tests.e2e.conftest import RunningStack, stack_channel
from shelfproof.cli.stack import local_tools_tls
from tests.integration.test_orders_loop import _document as order_document
from tests.integration.test_verify import _get as scan

pytestmark = pytest.mark.e2e

GTIN = "0061414190001" + str(check_digit("0061414190001"))  # the brand's prefix 0614141
LOT, ITEMS = "J1", 12
STORE = STORE_A_GLN  # the retailer's store the planner's restock loop watches
AMSTERDAM, SHANGHAI = "u173", "wtw3"  # geohash cells
EUR = "EUR"


def eur(amount: int) -> txpb.Money:
    return txpb.Money(currency_code=EUR, amount_minor=amount)


async def eventually(probe, what: str, timeout_s: float = 30.0, every_s: float = 0.2):
    """``probe()``'s first truthy answer within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = await probe()
        if answer:
            return answer
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s:.0f} s"
        await asyncio.sleep(every_s)


class Journey:
    """The partners' clients of the one stack: the brand through the registry, the distributor's and the
    retailer's systems through the ledger with their own agents, the planner, pricing and verify page."""

    def __init__(self, stack: RunningStack) -> None:
        self.stack = stack
        self.genesis = Genesis.load(stack.state_dir / "ledger" / "genesis.json")
        # What a third party pins: the chain id and validator set from the ledger's files, never its answers.
        self.trust: TrustRoot = local_trust_root(stack.state_dir / "ledger")
        self.channels = {name: stack_channel(stack.address(name), stack.state_dir) for name in ("ledger", "registry", "planner", "pricing")}
        self.ledger = ledger_pb2_grpc.LedgerServiceStub(self.channels["ledger"])
        self.products = product_pb2_grpc.ProductServiceStub(self.channels["registry"])
        self.events = events_pb2_grpc.EventServiceStub(self.channels["registry"])
        self.labels = labels_pb2_grpc.LabelServiceStub(self.channels["registry"])
        self.planner = planner_pb2_grpc.PlannerServiceStub(self.channels["planner"])
        self.pricing = pricing_pb2_grpc.PricingServiceStub(self.channels["pricing"])
        # admin-0 of each organisation: the services sign as the brand's admin-0 (registry) and the
        # retailer's admin-1 (planner) and admin-2 (pricing), so these nonces are the test's own.
        self.retailer = LedgerClient(self.ledger, self.genesis.accounts[f"{DEMO_RETAILER_GLN}/admin-0"].signer(self.genesis.chain_id))
        self.distributor = LedgerClient(self.ledger, self.genesis.accounts[f"{DEMO_DISTRIBUTOR_GLN}/admin-0"].signer(self.genesis.chain_id))
        self.verify_base = f"http://{stack.address('verify')}"
        # What the steps recorded, read back with proofs at the end.
        self.captured: list[epb.CapturedEvent] = []
        self.batch: prpb.CommissionItemsResponse | None = None
        self.receiving_hash = ""

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()

    async def height(self) -> int:
        return (await self.ledger.GetLedgerStatus(lpb.GetLedgerStatusRequest(), timeout=10)).latest_height

    async def provable(self, height: int) -> None:
        """State at ``height`` is provable once header ``height + 1`` is committed."""
        await eventually(lambda: self._above(height), f"a block above {height}")

    async def _above(self, height: int) -> bool:
        return await self.height() > height

    async def proven(self, store: str, key: str, *, present: bool = True) -> bytes:
        """``store/key`` read with its proof (of absence, with ``present=False``), checked here against the
        pinned validator set and chain id."""
        reply = await self.ledger.Query(lpb.QueryRequest(store=store, key=key.encode(), prove=True), timeout=10)
        assert reply.found == present, f"{store}/{key} is {'not ' if present else ''}on the ledger"
        header = types_pb2.SignedHeader.FromString(reply.signed_header)
        validators = validator_pb2.ValidatorSet.FromString(reply.validator_set)
        assert header.header.validators_hash in self.trust.validator_hashes, "signed by a validator set nobody trusts"
        check = light.verify_query(
            self.trust.chain_id, list(reply.proof_ops), keypath_for(store, key.encode()), reply.value if present else None, header, validators,
            query_height=reply.height,
        )
        assert check.signed_power * 3 > check.total_power * 2
        return reply.value

    async def capture(self, events: list[dict], request_id: str) -> list[epb.CapturedEvent]:
        """EPCIS events of the brand's items, captured through the registry (signed as the brand)."""
        document = epcis.epcis_document(events, creation_date=datetime.now(timezone.utc))
        reply = await self.events.CaptureEvents(epb.CaptureEventsRequest(
            epcis_document=json.dumps(document).encode(), request_id=request_id), timeout=60)
        assert len(reply.events) == len(events)
        self.captured += reply.events
        return list(reply.events)

    async def label_uri(self, serial: str) -> str:
        async def label():
            try:
                return (await self.labels.GetItemLabel(lapb.GetItemLabelRequest(gtin=GTIN, serial=serial), timeout=10)).uri
            except grpc.aio.AioRpcError as err:  # the registry projects the batch's items a moment after the commit
                if err.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                return None
        return await eventually(label, f"the label of {serial}")


async def _sites(j: Journey) -> None:
    """Each organisation registers its own site under its own company prefix."""
    await j.products.CreateLocation(prpb.CreateLocationRequest(location=prpb.Location(
        gln=PLANT_GLN, organization_gln=DEMO_BRAND_GLN, name="Demo Brand plant", city="Lyon", country_code="FR"),
        request_id="journey-plant"), timeout=30)
    await j.distributor.submit(txpb.TransactionBody(register_location=txpb.RegisterLocation(
        gln=DC_GLN, organization_gln=DEMO_DISTRIBUTOR_GLN, name="Distribution centre North", city="Utrecht", country_code="NL")))
    await j.retailer.submit(txpb.TransactionBody(register_location=txpb.RegisterLocation(
        gln=STORE, organization_gln=DEMO_RETAILER_GLN, name="Store Amsterdam Centraal", city="Amsterdam", country_code="NL")))


async def _product_and_policies(j: Journey) -> None:
    """The brand registers its product; the retailer its guardrails, the store's replenishment bounds (the
    brand supplies) and, through the pricing service, the shelf price."""
    await j.products.CreateProduct(prpb.CreateProductRequest(product=prpb.Product(
        gtin=GTIN, name="Extra virgin olive oil 1 l", brand="Demo Brand", category="Olive oil", net_content="1 l"),
        request_id="journey-product"), timeout=30)
    guardrails = txpb.GuardrailPolicy(
        organization_gln=DEMO_RETAILER_GLN, currency_code=EUR, budget_minor=10_000_000, budget_period_s=30 * 86_400,
        # Every draft waits for a person; one approval suffices at these amounts.
        quorum_threshold_minor=5_000_000, approval_quorum=2, auto_approve_below_minor=0, auto_apply_discount_below_bps=0,
        margin_floor_bps=1_000, max_discount_bps=3_000, max_price_change_bps_per_day=2_000, draft_ttl_s=86_400,
    )
    for outcome in await j.retailer.submit_many([
        txpb.TransactionBody(set_guardrail_policy=txpb.SetGuardrailPolicy(policy=guardrails)),
        txpb.TransactionBody(set_replenishment_policy=txpb.SetReplenishmentPolicy(policy=txpb.ReplenishmentPolicy(
            organization_gln=DEMO_RETAILER_GLN, location_gln=STORE, items=[txpb.ItemBounds(
                gtin=GTIN, min_order_quantity=6, max_order_quantity=120, case_pack=6, unit_cost=eur(450), lead_time_days=3,
                supplier_gln=DEMO_BRAND_GLN)]))),
    ]):
        assert isinstance(outcome, lpb.TransactionResult), outcome
    price = await j.pricing.ProposePriceChange(prcpb.ProposePriceChangeRequest(change=prcpb.PriceChange(
        gtin=GTIN, location_gln=STORE, amount=money(EUR, 1_299), unit_cost=money(EUR, 450), reason="launch price"),
        request_id="journey-price"), timeout=30)
    assert price.price.amount.amount_minor == 1_299

    # Nothing sold yet, nothing stocked: the loop's run of this period finds nothing to order (so the
    # draft below is the reorder point's, caused by the sales).
    async def checked():
        runs = (await j.planner.ListRestockRuns(ppb.ListRestockRunsRequest(location_gln=STORE), timeout=10)).runs
        return any(r.trigger == CADENCE and r.outcome == NOTHING_TO_ORDER for r in runs)
    await eventually(checked, "the restock loop's check of the store", timeout_s=90)


async def _commission(j: Journey) -> list[str]:
    """The brand commissions the lot (one batch transaction: the serials' Merkle root); its serials."""
    batch = None
    async for reply in j.products.CommissionItems(prpb.CommissionItemsRequest(
            gtin=GTIN, lot=LOT, expiry="2028-06-30", count=ITEMS, request_id="journey-batch"), timeout=120):
        batch = reply.batch if reply.HasField("batch") else batch
    assert batch is not None and batch.count == ITEMS
    j.batch = batch
    content = await j.ledger.GetContent(lpb.GetContentRequest(sha256=batch.serials_sha256), timeout=10)
    assert hashlib.sha256(content.content).digest() == batch.serials_sha256
    return content.content.decode().split("\n")


async def _custody_and_sales(j: Journey, serials: list[str]) -> None:
    """Plant -> distribution centre -> store, then sold over the last days (recorded by the brand)."""
    epcs = [canonical_item_uri(GTIN, s) for s in serials]
    now = datetime.now(timezone.utc).replace(microsecond=0)
    ago = lambda days, hours=0: now - timedelta(days=days, hours=hours)  # noqa: E731
    await j.capture([
        epcis.object_event(event_time=ago(9, 6), epcs=epcs, action="ADD", biz_step="commissioning", disposition="active",
                           read_point_gln=PLANT_GLN, biz_location_gln=PLANT_GLN, ilmd={"cbvmda:lotNumber": LOT}),
        epcis.object_event(event_time=ago(9), epcs=epcs, action="OBSERVE", biz_step="shipping", disposition="in_transit", read_point_gln=PLANT_GLN),
        epcis.object_event(event_time=ago(8), epcs=epcs, action="OBSERVE", biz_step="receiving", disposition="in_progress",
                           read_point_gln=DC_GLN, biz_location_gln=DC_GLN),
        epcis.object_event(event_time=ago(7, 12), epcs=epcs, action="OBSERVE", biz_step="shipping", disposition="in_transit", read_point_gln=DC_GLN),
        epcis.object_event(event_time=ago(7), epcs=epcs, action="OBSERVE", biz_step="receiving", disposition="sellable_accessible",
                           read_point_gln=STORE, biz_location_gln=STORE),
    ], "journey-custody")
    # Two a day over the last six days: the whole lot, so the store's position falls to its reorder point.
    sales = [
        epcis.object_event(event_time=ago(5 - day, -1), epcs=epcs[2 * day:2 * day + 2], action="OBSERVE", biz_step="retail_selling",
                           disposition="retail_sold", read_point_gln=STORE, biz_location_gln=STORE)
        for day in range(6)
    ]
    captured = await j.capture(sales, "journey-sales")
    await j.provable(max(e.ledger_ref.height for e in captured))


async def _consumer_scans(j: Journey, serials: list[str]) -> None:
    """A consumer's phone in Amsterdam: GENUINE; a copy of the same code in Shanghai moments later:
    SUSPICIOUS; a third party checking the proofs with the ledger's rules agrees."""
    uri = await j.label_uri(serials[0])
    assert uri.startswith(j.verify_base + f"/01/{GTIN}/21/")
    _, report = await scan(uri + f"&cell={AMSTERDAM}", client="127.0.10.1")
    assert report["verdict"] == "GENUINE", report
    assert [s["step"] for s in report["journey"]][:1] == ["commissioned"] and report["journey"][-1]["location"] == "Store Amsterdam Centraal"
    assert report["scan"]["recorded"] and {"not recalled — proven", "key not revoked — proven"} <= set(report["facts"]["proven"])

    async def scanned_once():  # at the newest provable height, where the verify page reads
        reply = await j.ledger.Query(lpb.QueryRequest(store="scans", key=f"{GTIN}/{serials[0]}".encode(), prove=True), timeout=10)
        return reply.found and st.ScanRecord.FromString(reply.value).scans >= 1
    await eventually(scanned_once, "the first scan on the ledger")  # the verify page flushes settled scans each second
    _, report = await scan(uri + f"&cell={SHANGHAI}", client="127.0.10.2")
    assert report["verdict"] == "SUSPICIOUS" and "km away" in report["reasons"][0], report

    async def compromised():  # the copy's scan, and the compromise it proves, on the ledger
        reply = await j.ledger.Query(lpb.QueryRequest(store="scans", key=f"{GTIN}/{serials[0]}".encode(), prove=True), timeout=10)
        return st.ScanRecord.FromString(reply.value).compromise.reason != st.COMPROMISE_REASON_UNSPECIFIED
    await eventually(compromised, "the compromise on the ledger")
    result = await asyncio.to_thread(check_url, uri, j.trust)
    assert (result.exit_code, result.verdict) == (EXIT_AGREES, "SUSPICIOUS"), result.lines


async def _not_recalled_proven_absent(j: Journey) -> None:
    """Before the recall, "not recalled" is a proof of the recall key's absence (what the verify page's
    "not recalled — proven" rests on), checked here."""
    assert await j.proven("recalls", f"{GTIN}/{LOT}", present=False) == b""


async def _recall(j: Journey, serials: list[str]) -> None:
    """The brand recalls the lot: a scan of another of its codes says RECALLED, proven."""
    recall = await j.products.RecallLot(prpb.RecallLotRequest(gtin=GTIN, lot=LOT, reason="journey: seal defect",
                                                              request_id="journey-recall"), timeout=30)
    await j.provable(recall.recall.ledger_ref.height)
    uri = await j.label_uri(serials[1])
    _, report = await scan(uri, client="127.0.10.3")
    assert report["verdict"] == "RECALLED" and "seal defect" in report["reasons"][0], report
    assert "the lot is recalled" in report["facts"]["proven"]
    result = await asyncio.to_thread(check_url, uri, j.trust)
    assert (result.exit_code, result.verdict) == (EXIT_AGREES, "RECALLED"), result.lines
    assert st.StatusRecord.FromString(await j.proven("recalls", f"{GTIN}/{LOT}")).status == "recalled"


async def _restock_drafted_by_the_loop(j: Journey) -> ppb.Draft:
    """The sales took the store's position to the reorder point: the restock loop drafts by itself, with the model."""
    async def drafted():
        runs = (await j.planner.ListRestockRuns(ppb.ListRestockRunsRequest(location_gln=STORE), timeout=10)).runs
        return next((r for r in runs if r.trigger == REORDER_POINT and r.outcome == DRAFTED), None)
    run = await eventually(drafted, "a reorder-point restock run", timeout_s=240, every_s=1.0)
    draft = (await j.planner.GetDraft(ppb.GetDraftRequest(draft_id=run.draft_id), timeout=10)).draft
    assert draft.kind == ppb.DRAFT_KIND_RESTOCK_ORDER and draft.state == ppb.DRAFT_STATE_PENDING_APPROVAL, draft
    assert [line.gtin for line in draft.order_lines] == [GTIN] and draft.order_lines[0].quantity >= 6
    assert not run.reason.startswith(MODEL_NOT_ASKED), run.reason  # drafted with the model
    return draft


async def _promotion_drafted(j: Journey) -> ppb.Draft:
    """The store manager asks the planner for a promotion of the product (the model proposes the terms)."""
    reply = await j.planner.DraftPromotion(ppb.DraftPromotionRequest(location_gln=STORE, gtins=[GTIN], request_id="journey-promotion"),
                                           timeout=300)
    draft = reply.draft
    assert draft.kind == ppb.DRAFT_KIND_PROMOTION and draft.state == ppb.DRAFT_STATE_PENDING_APPROVAL, draft
    assert list(draft.promotion.gtins) == [GTIN] and 0 < draft.promotion.discount_bps <= 3_000
    return draft


def _approve_in_the_console(j: Journey, draft_ids: list[str]) -> list[ppb.Draft]:
    """Maria, the store manager, unlocks her key file and approves the drafts with the console's own
    client (each approval a transaction signed with her key, relayed by the planner)."""
    passphrases = ensure_key_files(j.stack.state_dir, j.genesis)  # what the demo seed gives each person
    maria = PEOPLE["maria"]
    key = unlock_key_file(key_file(j.stack.state_dir, "maria"), passphrases["maria"], maria.agent_id)
    clients = Clients(Addresses(
        ledger=j.stack.address("ledger"), registry=j.stack.address("registry"), planner=j.stack.address("planner"),
        pricing=j.stack.address("pricing"),
    ), tls=local_tools_tls(j.stack.state_dir))
    try:
        waiting = {d.draft_id for d in clients.drafts(state=ppb.DRAFT_STATE_PENDING_APPROVAL, approver_agent_id=maria.agent_id)}
        assert set(draft_ids) <= waiting, waiting
        answers = clients.decide(maria.agent_id, key, draft_ids, approve=True)
    finally:
        clients.close()
    assert all(isinstance(a, ppb.Draft) for a in answers), answers
    return answers


async def _order_acknowledged_shipped_received(j: Journey, draft: ppb.Draft) -> ppb.PurchaseOrder:
    """The ledger issued the brand a purchase order; the brand's person accepts it, the brand ships it and
    the store receives it (EPCIS naming the order, signed by the retailer)."""
    async def issued():
        orders = (await j.planner.ListPurchaseOrders(ppb.ListPurchaseOrdersRequest(buyer_gln=DEMO_RETAILER_GLN), timeout=10)).purchase_orders
        return next((o for o in orders if o.draft_id == draft.draft_id), None)
    order = await eventually(issued, "the purchase order", timeout_s=60)
    assert (order.state, order.supplier_gln, order.ship_to_gln) == (ppb.PURCHASE_ORDER_STATE_ISSUED, DEMO_BRAND_GLN, STORE)
    assert order.decision_record_hash == draft.decision_record_hash

    supplier = j.genesis.accounts[f"{DEMO_BRAND_GLN}/person-0"].signer(j.genesis.chain_id)
    agent = st.AgentRecord.FromString((await j.ledger.Query(lpb.QueryRequest(store="agents", key=supplier.agent_id.encode()), timeout=10)).value)
    supplier.next_nonce = agent.nonce + 1
    accepted = txpb.AcknowledgePurchaseOrder(order_id=order.order_id, status=txpb.ORDER_RESPONSE_STATUS_ACCEPTED, reason="will ship in 2 days")
    answered = (await j.planner.AcknowledgePurchaseOrder(ppb.AcknowledgePurchaseOrderRequest(
        order_id=order.order_id, signed_transaction=supplier.sign(txpb.TransactionBody(acknowledge_purchase_order=accepted))),
        timeout=30)).purchase_order
    assert answered.state == ppb.PURCHASE_ORDER_STATE_ACCEPTED and answered.acknowledged_by == supplier.agent_id, answered

    units = {line.gtin: line.ordered_quantity for line in answered.lines}
    shipped = await j.events.CaptureEvents(epb.CaptureEventsRequest(
        epcis_document=order_document("shipping", answered, units, read_point=PLANT_GLN), request_id="journey-po-shipping"), timeout=30)
    j.captured += shipped.events
    planned, = plan_capture(order_document("receiving", answered, units, location=STORE, read_point=STORE))
    received = await j.retailer.submit(planned.body)
    j.receiving_hash = planned.body.record_event.event_hash

    async def filled():
        got = (await j.planner.GetPurchaseOrder(ppb.GetPurchaseOrderRequest(order_id=order.order_id), timeout=10)).purchase_order
        return got if got.lines and all(line.state == ppb.PURCHASE_ORDER_LINE_STATE_RECEIVED for line in got.lines) else None
    got = await eventually(filled, "the order received", timeout_s=60)
    assert [(line.received_quantity, line.open_quantity) for line in got.lines] == [(q, 0) for q in units.values()]
    await j.provable(received.height)
    return got


async def _on_the_ledger_with_proofs(j: Journey, serials: list[str], order: ppb.PurchaseOrder, restock: ppb.Draft) -> None:
    """The order, the draft with its AI decision record (and the documents it hashes), the product, the
    batch, every custody event and the item's custody, each read with a proof checked here."""
    record = st.PurchaseOrderRecord.FromString(await j.proven("orders", order.order_id))
    assert record.draft_id == restock.draft_id and record.decision_record_sha256 == restock.decision_record_hash
    assert j.receiving_hash in record.event_hashes
    drafted = st.DraftRecord.FromString(await j.proven("drafts", restock.draft_id))
    decision = drafted.draft.decision_record
    assert hashlib.sha256(decision.SerializeToString(deterministic=True)).hexdigest() == restock.decision_record_hash
    assert decision.engine != "policy-only" and decision.model and decision.weights_digest
    assert drafted.approvers == [PEOPLE["maria"].agent_id]
    for digest in (decision.prompt_sha256, decision.input_snapshot_sha256, decision.output_sha256):
        content = (await j.ledger.GetContent(lpb.GetContentRequest(sha256=bytes.fromhex(digest)), timeout=10)).content
        assert hashlib.sha256(content).hexdigest() == digest
    assert st.ProductRecord.FromString(await j.proven("products", GTIN)).product.gtin == GTIN
    assert st.BatchRecord.FromString(await j.proven("batches", j.batch.batch_id)).batch.count == ITEMS
    for event_hash in [e.event_hash for e in j.captured] + [j.receiving_hash]:
        await j.proven("events", event_hash)
    scans = st.ScanRecord.FromString(await j.proven("scans", f"{GTIN}/{serials[0]}"))
    assert scans.compromise.reason == st.COMPROMISE_REASON_IMPOSSIBLE_TRAVEL and scans.claimed_cell == AMSTERDAM, scans
    item = st.ItemRecord.FromString(await j.proven("items", f"{GTIN}/{serials[0]}"))
    assert [c.biz_step for c in item.custody][-1] == "retail_selling", item


async def _promotion_on_the_price_stream(j: Journey, promotion: ppb.Draft) -> None:
    """The approved promotion is on the price stream, naming its draft, and prices the product in its window."""
    stream = j.pricing.StreamPriceChanges(prcpb.StreamPriceChangesRequest(location_glns=[STORE], gtins=[GTIN]), timeout=60)
    created = None
    try:
        async for reply in stream:
            if reply.event.kind == prcpb.PRICE_EVENT_KIND_PROMOTION_CREATED and reply.event.draft_id == promotion.draft_id:
                created = reply.event
                break
    finally:
        stream.cancel()
    assert created is not None and created.applied and created.promotion_id == promotion.draft_id, created
    # The planner names a promotion after its draft; its window is the draft's terms.
    record = st.PromotionRecord.FromString(await j.proven("promotions", promotion.draft_id))
    assert (record.promotion.draft_id, record.promotion.discount_bps) == (promotion.draft_id, promotion.promotion.discount_bps)
    assert (record.promotion.start_unix_s, record.promotion.end_unix_s) == (
        promotion.promotion.start_time.seconds, promotion.promotion.end_time.seconds)
    inside = timestamp_pb2.Timestamp(seconds=record.promotion.start_unix_s + 60)
    line = (await j.pricing.GetPrice(prcpb.GetPriceRequest(gtin=GTIN, location_gln=STORE, time=inside), timeout=10)).line
    assert [a.draft_id for a in line.breakdown.adjustments] == [promotion.draft_id], line
    assert line.line_total.amount_minor < 1_299 and line.reference_price.amount_minor == 1_299, line


# The shared stack's start (up to 10 minutes here) counts against the first test that uses it.
@pytest.mark.timeout(1200)
async def test_a_product_from_registration_to_restock_and_promotion(shelfproof_up):
    j = Journey(shelfproof_up)
    try:
        await _sites(j)
        await _product_and_policies(j)
        serials = await _commission(j)
        await _custody_and_sales(j, serials)
        await _consumer_scans(j, serials)
        await _not_recalled_proven_absent(j)
        await _recall(j, serials)
        restock = await _restock_drafted_by_the_loop(j)
        promotion = await _promotion_drafted(j)
        approved = await asyncio.to_thread(_approve_in_the_console, j, [restock.draft_id, promotion.draft_id])
        assert [d.state for d in approved] == [ppb.DRAFT_STATE_APPROVED] * 2
        order = await _order_acknowledged_shipped_received(j, restock)
        await _on_the_ledger_with_proofs(j, serials, order, restock)
        await _promotion_on_the_price_stream(j, promotion)
    finally:
        await j.close()
