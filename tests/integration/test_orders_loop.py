"""The restock loop over the real ledger (embedded engine behind its adapter), PostgreSQL, the planner's
and the registry's gRPC services: the runner drafts by itself with the model unavailable (the policy's
quantities, the reason recorded), the ledger auto-approves under the threshold and issues the purchase
order or holds it for people above it, the supplier's person answers with a change, the supplier's
shipping (captured through the registry) and the buyer's receiving events fill the lines, the order
stream replays every change once, and a restart never orders twice. The real-model path of the runner
is the lead's test to add (it starts the vLLM engine)."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from shelfproof.ledger.v1 import ledger_pb2 as lpb
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.planner.runner import CADENCE, DRAFTED, REORDER_POINT, RestockRunner
from shelfproof.planner.service import MODEL_NOT_ASKED
from shelfproof.planner.v1 import planner_pb2 as pb
from shelfproof.product.v1 import events_pb2 as epb
from shelfproof.registry.events import plan_capture
from tests.integration.planner_harness import BRAND, RETAILER, STORE, PlannerStack, policy

pytestmark = pytest.mark.integration

PLANT = "0614141000029"  # the brand's (the supplier's) site
NOW = 1_900_000_000.0  # the runner's clock: one cadence period throughout


class ModelUnavailable:
    """The drafting backend when Ray Serve cannot reach the engine (what the runner must survive)."""

    async def restock(self, *args):
        raise ConnectionError("LLMServer replica is not running")

    async def promotion(self, *args, **kwargs):
        raise ConnectionError("LLMServer replica is not running")


async def _loop_stack(tmp_path, dsn, *, auto_approve_below: int):
    stack = PlannerStack(tmp_path, dsn, ModelUnavailable())
    await stack.__aenter__()
    await stack.set_up_store(policy(auto_approve_below_minor=auto_approve_below))
    eur = lambda amount: txpb.Money(currency_code="EUR", amount_minor=amount)  # noqa: E731
    await stack.retailer.submit(txpb.TransactionBody(set_replenishment_policy=txpb.SetReplenishmentPolicy(policy=txpb.ReplenishmentPolicy(
        organization_gln=RETAILER, location_gln=STORE, items=[
            txpb.ItemBounds(gtin=g, min_order_quantity=12, max_order_quantity=600, case_pack=6, unit_cost=eur(250 + 10 * n),
                            lead_time_days=3, supplier_gln=BRAND)
            for n, g in enumerate(stack.gtins)
        ],
    ))))
    return stack


async def _signed(stack: PlannerStack, signer, body: txpb.TransactionBody) -> bytes:
    agent = await stack.ledger.Query(lpb.QueryRequest(store="agents", key=signer.agent_id.encode()), timeout=5)
    signer.next_nonce = st.AgentRecord.FromString(agent.value).nonce + 1
    return signer.sign(body)


def _document(step: str, order: pb.PurchaseOrder, units: dict[str, int], *, location: str = "", read_point: str = "") -> bytes:
    event = {
        "type": "ObjectEvent", "eventTime": "2026-11-21T09:30:00.000+01:00", "eventTimeZoneOffset": "+01:00",
        "epcList": [], "action": "OBSERVE", "bizStep": step, "disposition": "in_transit" if step == "shipping" else "in_progress",
        "bizTransactionList": [{"type": "po", "bizTransaction": order.biz_transaction}],
        "quantityList": [{"epcClass": f"https://id.gs1.org/01/{g}", "quantity": q} for g, q in units.items()],
    }
    if location:
        event["bizLocation"] = {"id": f"https://id.gs1.org/414/{location}"}
    if read_point:
        event["readPoint"] = {"id": f"https://id.gs1.org/414/{read_point}"}
    return json.dumps({
        "@context": ["https://ref.gs1.org/standards/epcis/epcis-context.jsonld"], "type": "EPCISDocument",
        "schemaVersion": "2.0", "creationDate": "2026-11-25T10:00:00.000+01:00", "epcisBody": {"eventList": [event]},
    }).encode()


async def _receive(stack: PlannerStack, order: pb.PurchaseOrder, units: dict[str, int], location: str = STORE) -> None:
    """The buyer's receiving event, planned by the registry's own capture code, signed by the retailer."""
    planned, = plan_capture(_document("receiving", order, units, location=location, read_point=location))
    result = await stack.retailer.submit(planned.body)
    await stack.draft_projector.wait_for(result.height, result.index)


async def _orders(stack: PlannerStack, **filters) -> list[pb.PurchaseOrder]:
    return list((await stack.stub.ListPurchaseOrders(pb.ListPurchaseOrdersRequest(**filters), timeout=10)).purchase_orders)


async def _collect(stack: PlannerStack, request: pb.StreamPurchaseOrdersRequest, count: int) -> list[pb.StreamPurchaseOrdersResponse]:
    changes = []
    async for change in stack.stub.StreamPurchaseOrders(request, timeout=30):
        changes.append(change)
        if len(changes) == count:
            break
    return changes


async def test_a_run_drafts_without_the_model_the_order_is_answered_shipped_and_partly_received(tmp_path, database_dsn):
    stack = await _loop_stack(tmp_path, database_dsn, auto_approve_below=5_000_000)
    try:
        runner = RestockRunner(stack.service, stack.pool, [STORE], cadence_s=7 * 86_400, clock=lambda: NOW)
        outcomes = await runner.check()
        assert [(o.trigger, o.outcome) for o in outcomes] == [(CADENCE, DRAFTED)]  # the order covers the shortage
        run = outcomes[0]
        assert run.reason.startswith(MODEL_NOT_ASKED) and "ConnectionError" in run.reason
        draft = (await stack.stub.GetDraft(pb.GetDraftRequest(draft_id=run.draft_id), timeout=5)).draft
        assert draft.state == pb.DRAFT_STATE_APPROVED and draft.rationale.startswith(MODEL_NOT_ASKED)
        record = st.DraftRecord.FromString((await stack.ledger.Query(lpb.QueryRequest(store="drafts", key=run.draft_id.encode()), timeout=5)).value)
        assert record.draft.decision_record.engine == "policy-only"

        order, = await _orders(stack, supplier_gln=BRAND)
        assert (order.state, order.buyer_gln, order.ship_to_gln, order.draft_id) == (pb.PURCHASE_ORDER_STATE_ISSUED, RETAILER, STORE, run.draft_id)
        assert [(l.gtin, l.ordered_quantity) for l in order.lines] == [(l.gtin, l.quantity) for l in draft.order_lines]
        assert order.decision_record_hash == draft.decision_record_hash
        # What is on order now counts in the policy: the same store checked again orders nothing more.
        assert await runner.check() == []
        assert not await runner.reorder_point_reached(STORE)

        # The buyer's person cannot answer for the supplier; the supplier's person answers with a change.
        first, second = order.lines[0], order.lines[1]
        change = txpb.AcknowledgePurchaseOrder(order_id=order.order_id, status=txpb.ORDER_RESPONSE_STATUS_MODIFIED, lines=[
            txpb.OrderLineResponse(gtin=first.gtin, action=txpb.ORDER_LINE_ACTION_CHANGED, confirmed_quantity=first.ordered_quantity - 6),
        ], reason="one case short")
        body = txpb.TransactionBody(acknowledge_purchase_order=change)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stack.stub.AcknowledgePurchaseOrder(pb.AcknowledgePurchaseOrderRequest(
                order_id=order.order_id, signed_transaction=await _signed(stack, stack.person(RETAILER, 0), body)), timeout=20)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as caught:  # a transaction for another order
            await stack.stub.AcknowledgePurchaseOrder(pb.AcknowledgePurchaseOrderRequest(
                order_id="other", signed_transaction=await _signed(stack, stack.person(BRAND, 0), body)), timeout=20)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        answered = (await stack.stub.AcknowledgePurchaseOrder(pb.AcknowledgePurchaseOrderRequest(
            order_id=order.order_id, signed_transaction=await _signed(stack, stack.person(BRAND, 0), body)), timeout=20)).purchase_order
        assert answered.state == pb.PURCHASE_ORDER_STATE_ACCEPTED_WITH_CHANGES and answered.response_reason == "one case short"
        assert answered.lines[0].confirmed_quantity == first.ordered_quantity - 6
        with pytest.raises(grpc.aio.AioRpcError) as caught:  # answered once
            await stack.stub.AcknowledgePurchaseOrder(pb.AcknowledgePurchaseOrderRequest(
                order_id=order.order_id, signed_transaction=await _signed(stack, stack.person(BRAND, 1), body)), timeout=20)
        assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS

        # The supplier ships everything confirmed (captured through the registry, signed by the brand).
        confirmed = {l.gtin: l.confirmed_quantity for l in answered.lines}
        shipped = await stack.events.CaptureEvents(epb.CaptureEventsRequest(
            epcis_document=_document("shipping", answered, confirmed, read_point=PLANT)), timeout=30)
        await stack.draft_projector.wait_for(shipped.events[0].ledger_ref.height, 0)
        # The supplier cannot receive at the buyer's store.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stack.events.CaptureEvents(epb.CaptureEventsRequest(
                epcis_document=_document("receiving", answered, {first.gtin: 1}, location=STORE)), timeout=30)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED

        # A partial delivery: the first line half received, the rest open and still on order.
        half = confirmed[first.gtin] // 2
        await _receive(stack, answered, {first.gtin: half, second.gtin: confirmed[second.gtin]})
        got = (await stack.stub.GetPurchaseOrder(pb.GetPurchaseOrderRequest(order_id=order.order_id), timeout=5)).purchase_order
        line0, line1 = got.lines[0], got.lines[1]
        assert (line0.state, line0.received_quantity, line0.open_quantity) == (pb.PURCHASE_ORDER_LINE_STATE_OPEN, half, confirmed[first.gtin] - half)
        assert line0.shipped_quantity == confirmed[first.gtin] and not line0.late and not line0.overdue
        assert (line1.state, line1.open_quantity) == (pb.PURCHASE_ORDER_LINE_STATE_RECEIVED, 0)
        assert got.state == pb.PURCHASE_ORDER_STATE_ACCEPTED_WITH_CHANGES
        from shelfproof.planner.purchase_orders import on_order
        assert (await on_order(stack.pool, STORE, [first.gtin, second.gtin])) == {first.gtin: confirmed[first.gtin] - half}

        # The stream replays every change once, in ledger order, and resumes after any of them.
        changes = await _collect(stack, pb.StreamPurchaseOrdersRequest(supplier_gln=BRAND), 4)
        assert [c.action for c in changes] == ["submit_ai_draft", "acknowledge_purchase_order", "record_event", "record_event"]
        positions = [(c.height, c.index) for c in changes]
        assert positions == sorted(set(positions))
        rest = await _collect(stack, pb.StreamPurchaseOrdersRequest(
            supplier_gln=BRAND, after_height=changes[1].height, after_index=changes[1].index, after_order_id=order.order_id), 2)
        assert [(c.height, c.index) for c in rest] == positions[2:]
        # A new change reaches an open stream.
        tail = asyncio.create_task(_collect(stack, pb.StreamPurchaseOrdersRequest(
            after_height=changes[-1].height, after_index=changes[-1].index, after_order_id=order.order_id), 1))
        await asyncio.sleep(0.3)
        closed = await stack.retailer.submit(txpb.TransactionBody(close_purchase_order=txpb.ClosePurchaseOrder(order_id=order.order_id, reason="rest not needed")))
        newest, = await asyncio.wait_for(tail, 20)
        assert (newest.action, newest.height, newest.purchase_order.state) == ("close_purchase_order", closed.height, pb.PURCHASE_ORDER_STATE_CLOSED)
        assert newest.purchase_order.lines[0].short_quantity == confirmed[first.gtin] - half

        runs = (await stack.stub.ListRestockRuns(pb.ListRestockRunsRequest(location_gln=STORE), timeout=5)).runs
        assert [(r.trigger, r.outcome, r.draft_id) for r in runs] == [(CADENCE, DRAFTED, run.draft_id)]
        assert runs[0].draft.draft_id == run.draft_id and runs[0].forecast_mase > 0
    finally:
        await stack.__aexit__(None, None, None)


async def test_above_the_threshold_the_run_waits_for_people_and_a_restart_orders_nothing_twice(tmp_path, database_dsn):
    stack = await _loop_stack(tmp_path, database_dsn, auto_approve_below=1_000)
    try:
        runner = RestockRunner(stack.service, stack.pool, [STORE], cadence_s=7 * 86_400, clock=lambda: NOW)
        run, = await runner.check()
        draft = (await stack.stub.GetDraft(pb.GetDraftRequest(draft_id=run.draft_id), timeout=5)).draft
        assert draft.state == pb.DRAFT_STATE_PENDING_APPROVAL and not await _orders(stack)

        # A planner that died after committing the draft, before it recorded the run's end, restarts:
        # the run resumes under the same draft id and orders nothing again.
        async with stack.pool.connection() as conn:
            await conn.execute("UPDATE restock_runs SET outcome = 'running', end_time = NULL WHERE run_id = %s", (run.run_id,))
        restarted = RestockRunner(stack.service, stack.pool, [STORE], cadence_s=7 * 86_400, clock=lambda: NOW)
        again, = await restarted.check()
        assert (again.run_id, again.draft_id, again.outcome) == (run.run_id, run.draft_id, DRAFTED) and "resumed" in again.reason
        # Even with its run row lost, the same period drafts under the same id: the ledger has it.
        async with stack.pool.connection() as conn:
            await conn.execute("DELETE FROM restock_runs")
        third, = await RestockRunner(stack.service, stack.pool, [STORE], cadence_s=7 * 86_400, clock=lambda: NOW).check()
        assert third.draft_id == run.draft_id and "resumed" in third.reason
        async with stack.pool.connection() as conn:
            assert (await (await conn.execute("SELECT count(*) FROM drafts")).fetchone())[0] == 1

        # People approve (a quorum above its threshold): the ledger issues the order.
        for n in range(draft.approvals_required):
            signed = await _signed(stack, stack.person(RETAILER, n), txpb.TransactionBody(approve_draft=txpb.ApproveDraft(draft_id=run.draft_id)))
            await stack.stub.ApproveDraft(pb.ApproveDraftRequest(draft_id=run.draft_id, signed_transaction=signed), timeout=20)
        order, = await _orders(stack, buyer_gln=RETAILER, state=pb.PURCHASE_ORDER_STATE_ISSUED)
        assert order.draft_id == run.draft_id

        # Sales beyond the stock (the projected position of one product falls under its reorder point)
        # trigger a run of their own in the same period, for what the open order does not cover.
        async with stack.pool.connection() as conn:
            await conn.execute("UPDATE inventory_positions SET quantity = -400 WHERE gtin = %s AND location_gln = %s", (stack.gtins[0], STORE))
        assert await runner.reorder_point_reached(STORE)
        shortage, = await runner.check()
        assert (shortage.trigger, shortage.outcome) == (REORDER_POINT, DRAFTED) and shortage.draft_id != run.draft_id
        assert await runner.check() == []  # once per period
    finally:
        await stack.__aexit__(None, None, None)


async def test_order_reads_refuse_bad_input_with_clear_statuses(tmp_path, database_dsn):
    stack = await _loop_stack(tmp_path, database_dsn, auto_approve_below=5_000_000)
    try:
        for call, request, code in (
            (stack.stub.GetPurchaseOrder, pb.GetPurchaseOrderRequest(order_id="nope"), grpc.StatusCode.NOT_FOUND),
            (stack.stub.GetPurchaseOrder, pb.GetPurchaseOrderRequest(order_id=""), grpc.StatusCode.INVALID_ARGUMENT),
            (stack.stub.GetPurchaseOrder, pb.GetPurchaseOrderRequest(order_id="@draft/x"), grpc.StatusCode.NOT_FOUND),
            (stack.stub.ListPurchaseOrders, pb.ListPurchaseOrdersRequest(buyer_gln="123"), grpc.StatusCode.INVALID_ARGUMENT),
            (stack.stub.ListPurchaseOrders, pb.ListPurchaseOrdersRequest(page_token="%%%"), grpc.StatusCode.INVALID_ARGUMENT),
            (stack.stub.ListPurchaseOrders, pb.ListPurchaseOrdersRequest(state=99), grpc.StatusCode.INVALID_ARGUMENT),
            (stack.stub.AcknowledgePurchaseOrder, pb.AcknowledgePurchaseOrderRequest(order_id="x", signed_transaction=b"\xff"), grpc.StatusCode.INVALID_ARGUMENT),
            (stack.stub.ListRestockRuns, pb.ListRestockRunsRequest(page_token="bad"), grpc.StatusCode.INVALID_ARGUMENT),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(request, timeout=10)
            assert caught.value.code() == code, request
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _collect(stack, pb.StreamPurchaseOrdersRequest(after_height=-1), 1)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await stack.__aexit__(None, None, None)
