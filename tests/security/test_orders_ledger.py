"""Purchase orders on the ledger, attacked from every side: an approved restock draft issues the order;
only the supplier's people answer it, once; only the supplier's shipping and the buyer's receiving at
the ship-to GLN fill it; quantities are bounded; an unknown, closed or rejected order takes nothing.
Each refusal gets its exact code in CheckTx and FinalizeBlock and changes nothing but the nonce."""

from __future__ import annotations

import hashlib
import json

import pytest

from shelfproof.ledger.core.codes import ResultCode
from shelfproof.ledger.core.rules.orders import biz_transaction_of, date_of_day, draft_index_key, order_id_for
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from tests.security.world import (
    BRAND, DC, DISTRIBUTOR, GTIN, OPERATOR, PLANT, RETAILER, STORE, STORE2, STORE2_SHOP, SUPPLIER, T0, World, body, eur, gtin,
)

DENIED, INVALID, NOT_FOUND = ResultCode.PERMISSION_DENIED, ResultCode.INVALID_ARGUMENT, ResultCode.NOT_FOUND
PRECONDITION, EXISTS = ResultCode.FAILED_PRECONDITION, ResultCode.ALREADY_EXISTS
SECOND_GTIN = gtin("061414112346")
OTHER_STORE = "4012345000023"  # another GLN of the retailer, not the order's ship-to


def bounds(supplier: str = BRAND, lead_time_days: int = 3) -> txpb.TransactionBody:
    return body(set_replenishment_policy=txpb.SetReplenishmentPolicy(policy=txpb.ReplenishmentPolicy(
        organization_gln=RETAILER, location_gln=STORE, items=[
            txpb.ItemBounds(gtin=g, min_order_quantity=1, max_order_quantity=1_000, unit_cost=eur(100),
                            lead_time_days=lead_time_days, supplier_gln=supplier)
            for g in (GTIN, SECOND_GTIN)
        ],
    )))


def draft(world: World, draft_id: str, *quantities: int) -> txpb.TransactionBody:
    b = world.order_draft(draft_id, quantities[0])
    if len(quantities) > 1:
        b.submit_ai_draft.order_lines.add(gtin=SECOND_GTIN, quantity=quantities[1], unit_cost=eur(100))
    return b


class Orders:
    """The world with the brand as supplier of the retailer's store, and helpers for order traffic."""

    def __init__(self) -> None:
        self.world = World().with_goods()
        self.world.ok(self.world.agent(BRAND, "admin-0"), World.product(SECOND_GTIN))
        self.world.ok(self.world.agent(RETAILER, "admin-0"), bounds())
        self.events = 0

    def order(self, order_id: str) -> st.PurchaseOrderRecord:
        return self.world.read("orders", order_id, st.PurchaseOrderRecord)

    def issue(self, draft_id: str = "d1", *quantities: int) -> st.PurchaseOrderRecord:
        """A draft small enough to be approved on submission: its order is issued in the same block."""
        self.world.ok(self.world.agent(RETAILER, "admin-1"), draft(self.world, draft_id, *(quantities or (5,))))
        return self.order(order_id_for(draft_id, BRAND))

    @staticmethod
    def answer(order_id: str, status=txpb.ORDER_RESPONSE_STATUS_ACCEPTED, *lines: txpb.OrderLineResponse, reason="") -> txpb.TransactionBody:
        return body(acknowledge_purchase_order=txpb.AcknowledgePurchaseOrder(order_id=order_id, status=status, lines=lines, reason=reason))

    def accepted(self, draft_id: str = "d1", *quantities: int) -> st.PurchaseOrderRecord:
        order = self.issue(draft_id, *quantities)
        self.world.ok(self.world.agent(BRAND, "person-0"), self.answer(order.order_id))
        return self.order(order.order_id)

    def event(self, step: str, order_ref: str | list[str], units: dict[str, object], *, location: str = "", read_point: str = "",
              uom: str | None = None, raw_json: bytes | None = None) -> txpb.TransactionBody:
        self.events += 1
        refs = [order_ref] if isinstance(order_ref, str) else order_ref
        quantities = [{"epcClass": f"https://id.gs1.org/01/{g}", "quantity": q, **({"uom": uom} if uom else {})} for g, q in units.items()]
        document = {
            "type": "ObjectEvent", "action": "OBSERVE", "bizStep": step,
            "bizTransactionList": [{"type": "po", "bizTransaction": ref} for ref in refs], "quantityList": quantities,
        }
        return body(record_event=txpb.RecordEvent(
            event_hash=f"ni:///sha-256;{0xE0000 + self.events:064x}?ver=CBV2.0", event_type="ObjectEvent",
            epcis_event_json=raw_json if raw_json is not None else json.dumps(document).encode(), biz_step=step,
            disposition="in_transit" if step == "shipping" else "in_progress",
            biz_location_gln=location, read_point_gln=read_point,
        ))

    def ship(self, order: st.PurchaseOrderRecord, units: dict[str, object], **kw) -> txpb.TransactionBody:
        return self.event("shipping", order.biz_transaction, units, read_point=PLANT, **kw)

    def receive(self, order: st.PurchaseOrderRecord, units: dict[str, object], location: str = STORE, **kw) -> txpb.TransactionBody:
        return self.event("receiving", order.biz_transaction, units, location=location, **kw)


@pytest.fixture
def orders() -> Orders:
    return Orders()


def test_an_auto_approved_draft_issues_its_order_linked_to_the_draft_and_its_record(orders):
    order = orders.issue("d1", 5, 3)
    world = orders.world
    assert order.status == st.PURCHASE_ORDER_STATUS_ISSUED
    assert (order.buyer_gln, order.supplier_gln, order.ship_to_gln, order.draft_id) == (RETAILER, BRAND, STORE, "d1")
    day = (T0 + world.app.height) // 86_400
    assert order.requested_delivery_date == date_of_day(day + 3)
    assert [(l.gtin, l.ordered_quantity, l.confirmed_quantity, l.status) for l in order.lines] == [
        (GTIN, 5, 5, st.PURCHASE_ORDER_LINE_STATUS_OPEN), (SECOND_GTIN, 3, 3, st.PURCHASE_ORDER_LINE_STATUS_OPEN)]
    record = world.read("drafts", "d1", st.DraftRecord)
    assert order.decision_record_sha256 == hashlib.sha256(record.draft.decision_record.SerializeToString(deterministic=True)).hexdigest()
    assert order.biz_transaction == biz_transaction_of(RETAILER, order.order_id)
    assert list(world.read("orders", draft_index_key("d1"), st.PurchaseOrderIndex).order_ids) == [order.order_id]


def test_a_draft_above_the_threshold_waits_for_people_before_any_order(orders):
    world = orders.world
    world.ok(world.agent(RETAILER, "admin-1"), draft(world, "big", 600))  # 60,000 >= the quorum threshold
    assert orders.order(order_id_for("big", BRAND)) is None
    world.ok(world.agent(RETAILER, "person-0"), world.approve("big"))
    assert orders.order(order_id_for("big", BRAND)) is None  # one person of the two
    world.ok(world.agent(RETAILER, "person-1"), world.approve("big"))
    assert orders.order(order_id_for("big", BRAND)).lines[0].ordered_quantity == 600


def test_lines_without_a_supplier_issue_no_order_and_a_policy_names_only_members(orders):
    world = orders.world
    retailer = world.agent(RETAILER, "admin-0")
    world.refused(retailer, bounds(supplier="7612345000008"), NOT_FOUND)  # no member has this GLN
    world.ok(retailer, world.bounds())  # the plain policy: no supplier
    world.ok(world.agent(RETAILER, "admin-1"), draft(world, "offledger", 5))
    assert world.read("drafts", "offledger", st.DraftRecord).status == st.DRAFT_STATUS_APPROVED
    assert world.read("orders", draft_index_key("offledger"), st.PurchaseOrderIndex) is None


def test_only_the_suppliers_people_answer_and_only_once(orders):
    world = orders.world
    order = orders.issue()
    accept = orders.answer(order.order_id)
    world.refused(world.agent(DISTRIBUTOR, "person-0"), accept, DENIED)  # another organisation
    world.refused(world.agent(RETAILER, "person-0"), accept, DENIED)  # the buyer
    world.refused(world.agent(BRAND, "admin-0"), accept, DENIED)  # the supplier's service key, not a person's
    world.refused(world.agent(BRAND, "person-0"), orders.answer("d404-" + BRAND), NOT_FOUND)
    change = txpb.OrderLineResponse(gtin=GTIN, action=txpb.ORDER_LINE_ACTION_CHANGED, confirmed_quantity=4, delivery_date="2026-06-01")
    modified = orders.answer(order.order_id, txpb.ORDER_RESPONSE_STATUS_MODIFIED, change, reason="short on stock")
    person = world.agent(BRAND, "person-0")
    for bad in (
        orders.answer(order.order_id, txpb.ORDER_RESPONSE_STATUS_MODIFIED),  # no line changed
        orders.answer(order.order_id, txpb.ORDER_RESPONSE_STATUS_UNSPECIFIED),
        orders.answer(order.order_id, txpb.ORDER_RESPONSE_STATUS_ACCEPTED, change),  # lines only with MODIFIED
        orders.answer(order.order_id, txpb.ORDER_RESPONSE_STATUS_MODIFIED,
                      txpb.OrderLineResponse(gtin=GTIN, action=txpb.ORDER_LINE_ACTION_CHANGED, confirmed_quantity=6)),  # more than ordered
        orders.answer(order.order_id, txpb.ORDER_RESPONSE_STATUS_MODIFIED,
                      txpb.OrderLineResponse(gtin=GTIN, action=txpb.ORDER_LINE_ACTION_CHANGED, confirmed_quantity=0)),
        orders.answer(order.order_id, txpb.ORDER_RESPONSE_STATUS_MODIFIED,
                      txpb.OrderLineResponse(gtin=SECOND_GTIN, action=txpb.ORDER_LINE_ACTION_REJECTED)),  # not a line
        orders.answer(order.order_id, txpb.ORDER_RESPONSE_STATUS_MODIFIED, change, change),  # twice
        orders.answer(order.order_id, txpb.ORDER_RESPONSE_STATUS_MODIFIED,
                      txpb.OrderLineResponse(gtin=GTIN, action=txpb.ORDER_LINE_ACTION_CHANGED, confirmed_quantity=4, delivery_date="2026-02-30")),
        orders.answer(order.order_id, txpb.ORDER_RESPONSE_STATUS_MODIFIED,
                      txpb.OrderLineResponse(gtin=GTIN, action=txpb.ORDER_LINE_ACTION_CHANGED, confirmed_quantity=4, delivery_date="2020-01-01")),
    ):
        world.refused(person, bad, INVALID)
    world.ok(person, modified)
    answered = orders.order(order.order_id)
    assert answered.status == st.PURCHASE_ORDER_STATUS_ACCEPTED_WITH_CHANGES
    assert (answered.lines[0].confirmed_quantity, answered.lines[0].delivery_date) == (4, "2026-06-01")
    assert (answered.acknowledged_by, answered.response_reason) == (person.agent_id, "short on stock")
    world.refused(world.agent(BRAND, "person-1"), accept, EXISTS)  # a duplicate answer


def test_shipping_and_receiving_fill_lines_partial_stays_open_late_is_flagged_then_closed(orders):
    world = orders.world
    order = orders.accepted("d1", 5, 3)
    brand, retailer = world.agent(BRAND, "admin-0"), world.agent(RETAILER, "admin-0")
    world.ok(brand, orders.ship(order, {GTIN: 5, SECOND_GTIN: 3}))
    world.ok(retailer, orders.receive(order, {GTIN: 2}))  # a partial delivery, on time
    after = orders.order(order.order_id)
    assert [(l.shipped_quantity, l.received_quantity, l.status, l.late) for l in after.lines] == [
        (5, 2, st.PURCHASE_ORDER_LINE_STATUS_OPEN, False), (3, 0, st.PURCHASE_ORDER_LINE_STATUS_OPEN, False)]
    assert after.status == st.PURCHASE_ORDER_STATUS_ACCEPTED
    late = T0 + 30 * 86_400  # weeks past the requested date
    world.sync_nonce(retailer)
    assert world.block([retailer.sign(orders.receive(order, {GTIN: 3, SECOND_GTIN: 4}))], late) == [0]  # one over
    closed = orders.order(order.order_id)
    assert [(l.received_quantity, l.status, l.late) for l in closed.lines] == [
        (5, st.PURCHASE_ORDER_LINE_STATUS_RECEIVED, True), (4, st.PURCHASE_ORDER_LINE_STATUS_RECEIVED, True)]
    assert closed.lines[1].received_quantity - closed.lines[1].confirmed_quantity == 1  # the over-delivery shows
    assert closed.status == st.PURCHASE_ORDER_STATUS_CLOSED and len(closed.event_hashes) == 3
    world.refused(retailer, orders.receive(order, {GTIN: 1}), PRECONDITION, late + 10)  # a receipt after close
    world.refused(world.agent(BRAND, "person-0"), orders.answer(order.order_id), PRECONDITION, late + 10)  # an answer after close
    world.refused(retailer, body(close_purchase_order=txpb.ClosePurchaseOrder(order_id=order.order_id)), PRECONDITION, late + 10)


def test_only_the_supplier_ships_and_only_the_buyer_receives_at_the_ship_to(orders):
    world = orders.world
    order = orders.issue()
    retailer, brand = world.agent(RETAILER, "admin-0"), world.agent(BRAND, "admin-0")
    world.refused(retailer, orders.receive(order, {GTIN: 5}), PRECONDITION)  # the supplier has not answered
    world.ok(world.agent(BRAND, "person-0"), orders.answer(order.order_id))
    world.refused(world.agent(DISTRIBUTOR, "admin-0"), orders.event("shipping", order.biz_transaction, {GTIN: 5}, read_point=DC), DENIED)
    world.refused(world.agent(STORE2, "admin-0"), orders.receive(order, {GTIN: 5}, location=STORE2_SHOP), DENIED)
    world.refused(retailer, orders.receive(order, {GTIN: 5}, location=OTHER_STORE), DENIED)  # not the ship-to
    world.refused(brand, orders.event("receiving", order.biz_transaction, {GTIN: 5}, location=PLANT), DENIED)  # the supplier
    world.refused(retailer, orders.event("shipping", order.biz_transaction, {GTIN: 5}, read_point=STORE), DENIED)  # the buyer
    world.ok(retailer, orders.receive(order, {GTIN: 5}))
    assert orders.order(order.order_id).status == st.PURCHASE_ORDER_STATUS_CLOSED


def test_quantities_are_whole_units_within_bounds_and_of_the_orders_lines(orders):
    world = orders.world
    order = orders.accepted()
    retailer = world.agent(RETAILER, "admin-0")
    for units, kw in (
        ({GTIN: 10**30}, {}), ({GTIN: 2.5}, {}), ({GTIN: True}, {}), ({GTIN: 0}, {}), ({GTIN: -3}, {}), ({GTIN: "5"}, {}),
        ({GTIN: 5}, {"uom": "KGM"}), ({SECOND_GTIN: 1}, {}), ({}, {}),
    ):
        world.refused(retailer, orders.receive(order, units, **kw), INVALID)
    world.ok(retailer, orders.receive(order, {GTIN: 1_000_000}))  # a huge over-delivery: recorded, line closed
    line = orders.order(order.order_id).lines[0]
    assert (line.received_quantity, line.status) == (1_000_000, st.PURCHASE_ORDER_LINE_STATUS_RECEIVED)
    shipped = orders.accepted("d2")
    brand = world.agent(BRAND, "admin-0")
    world.ok(brand, orders.ship(shipped, {GTIN: 999_999}))
    world.refused(brand, orders.ship(shipped, {GTIN: 2}), INVALID)  # the running total would pass the bound


def test_unknown_foreign_multiple_and_malformed_references(orders):
    world = orders.world
    order = orders.accepted()
    retailer = world.agent(RETAILER, "admin-0")
    world.refused(retailer, orders.event("receiving", biz_transaction_of(RETAILER, "d404-" + BRAND), {GTIN: 1}, location=STORE), NOT_FOUND)
    # The right order id under another member's GLN is not that member's order.
    world.refused(retailer, orders.event("receiving", biz_transaction_of(BRAND, order.order_id), {GTIN: 1}, location=STORE), NOT_FOUND)
    world.refused(retailer, orders.event("receiving", [order.biz_transaction, biz_transaction_of(RETAILER, "x")], {GTIN: 1}, location=STORE), INVALID)
    # Orders of parties outside the consortium, other steps, and unreadable JSON fill nothing and stop nothing.
    world.ok(retailer, orders.event("receiving", biz_transaction_of("7612345000008", "PO-1"), {GTIN: 1}, location=STORE))
    world.ok(retailer, orders.event("storing", order.biz_transaction, {GTIN: 1}, location=STORE))
    world.ok(retailer, orders.receive(order, {}, raw_json=b'{"bizTransactionList": [' + b"[" * 30_000))
    world.ok(retailer, orders.receive(order, {}, raw_json=b'{"bizTransactionList": 7, "\\u0000": "' + b"9" * 5000 + b'"}'))
    assert orders.order(order.order_id).lines[0].received_quantity == 0


def test_the_buyer_closes_short_and_a_rejected_order_takes_nothing(orders):
    world = orders.world
    order = orders.accepted("d1", 5, 3)
    retailer = world.agent(RETAILER, "admin-0")
    world.ok(retailer, orders.receive(order, {GTIN: 5, SECOND_GTIN: 1}))
    close = body(close_purchase_order=txpb.ClosePurchaseOrder(order_id=order.order_id, reason="the rest will not come"))
    world.refused(world.agent(BRAND, "admin-0"), close, DENIED)
    world.refused(world.agent(STORE2, "admin-0"), close, DENIED)
    world.ok(retailer, close)
    closed = orders.order(order.order_id)
    assert [l.status for l in closed.lines] == [st.PURCHASE_ORDER_LINE_STATUS_RECEIVED, st.PURCHASE_ORDER_LINE_STATUS_CLOSED_SHORT]
    assert closed.lines[1].confirmed_quantity - closed.lines[1].received_quantity == 2  # short by two
    world.refused(retailer, close, PRECONDITION)

    rejected = orders.issue("d2")
    world.ok(world.agent(BRAND, "person-1"), orders.answer(rejected.order_id, txpb.ORDER_RESPONSE_STATUS_REJECTED, reason="discontinued"))
    assert orders.order(rejected.order_id).status == st.PURCHASE_ORDER_STATUS_REJECTED
    world.refused(world.agent(BRAND, "admin-0"), orders.ship(rejected, {GTIN: 5}), PRECONDITION)
    world.refused(retailer, orders.receive(rejected, {GTIN: 5}), PRECONDITION)
    world.refused(world.agent(BRAND, "person-0"), orders.answer(rejected.order_id), EXISTS)


def test_the_supplier_removed_from_the_consortium_blocks_approval_of_its_orders(orders):
    world = orders.world
    retailer = world.agent(RETAILER, "admin-0")
    world.ok(retailer, bounds(supplier=SUPPLIER))
    operator = world.agent(OPERATOR, "admin-0")
    world.ok(operator, body(remove_organization=txpb.RemoveOrganization(gln=SUPPLIER)))
    for org in (BRAND, DISTRIBUTOR, RETAILER):
        world.ok(world.agent(org, "admin-0"), body(approve_membership=txpb.ApproveMembership(gln=SUPPLIER)))
    world.refused(world.agent(RETAILER, "admin-1"), draft(world, "gone", 5), NOT_FOUND)


def test_what_a_cut_rejected_or_short_closed_order_will_not_cost_goes_back_to_the_budget(orders):
    world = orders.world
    spent = lambda: world.read("budgets", RETAILER, st.BudgetRecord).spent_minor  # noqa: E731
    cut = orders.issue("d1", 5, 3)  # 800 spent on approval
    assert spent() == 800
    world.ok(world.agent(BRAND, "person-0"), orders.answer(cut.order_id, txpb.ORDER_RESPONSE_STATUS_MODIFIED,
             txpb.OrderLineResponse(gtin=GTIN, action=txpb.ORDER_LINE_ACTION_CHANGED, confirmed_quantity=2),
             txpb.OrderLineResponse(gtin=SECOND_GTIN, action=txpb.ORDER_LINE_ACTION_REJECTED)))
    assert spent() == 200  # 3 of 5 cut and 3 rejected, at 100 each
    retailer = world.agent(RETAILER, "admin-0")
    world.ok(retailer, orders.receive(cut, {GTIN: 1}))
    world.ok(retailer, body(close_purchase_order=txpb.ClosePurchaseOrder(order_id=cut.order_id)))
    assert spent() == 100  # one of the two confirmed came
    rejected = orders.issue("d2", 4)
    world.ok(world.agent(BRAND, "person-0"), orders.answer(rejected.order_id, txpb.ORDER_RESPONSE_STATUS_REJECTED))
    assert spent() == 100
    # An order of a past budget period gives nothing back to the current one.
    old = orders.issue("d3", 6)
    assert spent() == 700
    brand_person = world.sync_nonce(world.agent(BRAND, "person-0"))
    next_day = T0 + 86_400
    assert world.block([brand_person.sign(orders.answer(old.order_id, txpb.ORDER_RESPONSE_STATUS_REJECTED))], next_day) == [0]
    assert spent() == 700


def test_what_an_event_names_does_not_depend_on_a_nodes_python_settings(orders):
    """Python's limit on integer digits and its recursion limit are per-process settings: a validator
    that changed them must reach the same verdict on a long integer or a deep document."""
    import sys

    world = orders.world
    order = orders.accepted()
    retailer = world.agent(RETAILER, "admin-0")
    long_quantity = orders.receive(order, {GTIN: 1}, raw_json=json.dumps({
        "bizTransactionList": [{"type": "po", "bizTransaction": order.biz_transaction}],
        "quantityList": [{"epcClass": f"https://id.gs1.org/01/{GTIN}", "quantity": 1}],
    }).replace('"quantity": 1', '"quantity": ' + "9" * 5000).encode())
    deep = b'{"bizTransactionList": [{"type": "po", "bizTransaction": "' + order.biz_transaction.encode() + b'"}], "x": ' + b"[" * 40 + b"]" * 40 + b"}"
    deep_event = orders.receive(order, {}, raw_json=deep)
    for digits in (4300, 0):  # the default, and no limit at all
        sys.set_int_max_str_digits(digits)
        try:
            world.refused(retailer, long_quantity, INVALID)
        finally:
            sys.set_int_max_str_digits(4300)
    # Deeper than the ledger reads (whatever the recursion limit would allow): it names no order.
    world.ok(retailer, deep_event)
    assert orders.order(order.order_id).lines[0].received_quantity == 0


def test_a_60kb_event_naming_an_order_costs_checktx_milliseconds(orders):
    import time

    from tendermint.abci import types_pb2 as abci

    world = orders.world
    order = orders.accepted()
    retailer = world.sync_nonce(world.agent(RETAILER, "admin-0"))
    ref = order.biz_transaction.encode()
    # Readable ones name the order and move none of it; one too deep to read names no order at all.
    for filler, expected in ((b"[]," * 19_000, INVALID), (b"[[]" * 9_000 + b"]" * 9_000, 0), (b'"\\u0041' + b"a" * 56_000 + b'",', INVALID)):
        raw_json = b'{"bizTransactionList": [{"type": "po", "bizTransaction": "' + ref + b'"}], "x": [' + filler + b"1]}"
        raw = retailer.sign(orders.receive(order, {}, raw_json=raw_json))
        began = time.perf_counter()
        code = world.app.check_tx(abci.RequestCheckTx(tx=raw)).code
        # Milliseconds on a quiet core; the bound is for a quadratic parse (seconds), with room for a
        # loaded machine running the suite on every core.
        assert time.perf_counter() - began < 1.5, len(raw)
        assert code == expected
        if code:  # a refusal in CheckTx leaves the nonce unused
            retailer.next_nonce -= 1
