"""The pure parts of purchase orders and the restock loop: how an event names an order, the API's view of
an order (open, over, short, overdue), the forecast's scaled error, the template hash, and run ids."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pytest

from shelfproof.ledger.core.rules.orders import biz_transaction_of, date_of_day, day_of_date, order_references
from shelfproof.ledger.core.codes import TxRejected
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.planner import drafter, prompts
from shelfproof.planner.forecast import scaled_error
from shelfproof.planner.purchase_orders import purchase_order_from_record
from shelfproof.planner.runner import draft_id_for, run_id_for
from shelfproof.planner.v1 import planner_pb2 as pb

BUYER = "4012345000009"


def _event(*entries) -> bytes:
    return json.dumps({"type": "ObjectEvent", "bizTransactionList": list(entries)}).encode()


def test_an_event_names_orders_by_cbv_business_transaction_ids_of_type_po():
    ref = biz_transaction_of(BUYER, "restock-1-0614141000005")
    assert ref == f"urn:epcglobal:cbv:bt:{BUYER}:restock-1-0614141000005"
    for kind in ("po", "urn:epcglobal:cbv:btt:po", "https://ref.gs1.org/cbv/BTT-po"):
        assert order_references(_event({"type": kind, "bizTransaction": ref})) == [(BUYER, "restock-1-0614141000005")]
    assert order_references(_event({"type": "inv", "bizTransaction": ref})) == []  # an invoice, not an order
    assert order_references(_event({"type": "po", "bizTransaction": "urn:example:po:1"})) == []
    assert order_references(_event({"type": "po", "bizTransaction": f"urn:epcglobal:cbv:bt:{BUYER}:"})) == []
    assert order_references(_event({"type": "po", "bizTransaction": "urn:epcglobal:cbv:bt:40123450000X9:a"})) == []
    assert order_references(_event({"type": "po", "bizTransaction": ref}, {"type": "po", "bizTransaction": ref})) == [(BUYER, "restock-1-0614141000005")]
    # An escaped key is the same key to a JSON reader, so it is read too.
    escaped = ('{"bizTransaction\\u004cist": [{"type": "po", "bizTransaction": "%s"}]}' % ref).encode()
    assert order_references(escaped) == [(BUYER, "restock-1-0614141000005")]
    # The byte gate that skips events naming no order (no parse) must not skip any that do: the type
    # written with escapes, or with escaped slashes, and compact or spaced JSON, are all still read.
    for kind in ('"p\\u006f"', '"urn:epcglobal:cbv:btt:p\\u006F"', '"https:\\/\\/ref.gs1.org\\/cbv\\/BTT-po"'):
        compact = '{"bizTransactionList":[{"type":%s,"bizTransaction":"%s"}]}' % (kind, ref)
        spaced = '{ "bizTransactionList" : [ { "bizTransaction" : "%s" , "type" : %s } ] }' % (ref, kind)
        for raw in (compact.encode(), spaced.encode()):
            assert json.loads(raw)["bizTransactionList"][0]["type"] in ("po", "urn:epcglobal:cbv:btt:po", "https://ref.gs1.org/cbv/BTT-po")
            assert order_references(raw) == [(BUYER, "restock-1-0614141000005")], raw
    assert order_references(_event({"type": "desadv", "bizTransaction": ref}, {"type": "bol", "bizTransaction": ref})) == []
    for junk in (b"", b"not json", b'["bizTransactionList"]', b'{"bizTransactionList": {"type": "po"}}', b"[" * 50_000 + b'"\\u0000"'):
        assert order_references(junk) == []


def test_dates_are_day_numbers_and_only_calendar_dates_pass():
    assert date_of_day(0) == "1970-01-01" and day_of_date("1970-01-02", "d") == 1
    assert day_of_date(date_of_day(20_000), "d") == 20_000
    for bad in ("2026-02-30", "2026-1-01", "２０２６-01-01", "2026-01-01\n"):
        with pytest.raises(TxRejected):
            day_of_date(bad, "delivery_date")


def _record(**line) -> st.PurchaseOrderRecord:
    fields = dict(gtin="00614141123452", ordered_quantity=12, confirmed_quantity=10, delivery_date="2026-06-10",
                  unit_cost=txpb.Money(currency_code="EUR", amount_minor=250), status=st.PURCHASE_ORDER_LINE_STATUS_OPEN)
    fields.update(line)
    return st.PurchaseOrderRecord(order_id="o", buyer_gln=BUYER, status=st.PURCHASE_ORDER_STATUS_ACCEPTED, lines=[st.PurchaseOrderLine(**fields)])


def test_the_api_view_spells_out_open_over_short_and_overdue():
    line = purchase_order_from_record(_record(received_quantity=4), today=date(2026, 6, 10)).lines[0]
    assert (line.open_quantity, line.over_quantity, line.short_quantity, line.overdue) == (6, 0, 0, False)
    assert purchase_order_from_record(_record(received_quantity=4), today=date(2026, 6, 11)).lines[0].overdue
    over = purchase_order_from_record(_record(received_quantity=13, status=st.PURCHASE_ORDER_LINE_STATUS_RECEIVED, late=True)).lines[0]
    assert (over.open_quantity, over.over_quantity, over.late, over.overdue, over.state) == (0, 3, True, False, pb.PURCHASE_ORDER_LINE_STATE_RECEIVED)
    short = purchase_order_from_record(_record(received_quantity=7, status=st.PURCHASE_ORDER_LINE_STATUS_CLOSED_SHORT)).lines[0]
    assert (short.open_quantity, short.short_quantity) == (0, 3)
    assert purchase_order_from_record(_record()).total.amount_minor == 10 * 250  # what the supplier confirmed


def test_scaled_error_is_below_one_when_the_forecast_beats_naive():
    alternating = np.tile([0.0, 2.0], 28)[None, :]  # naive is off by 2 every day; the mean (1) by 1
    assert scaled_error(alternating) == pytest.approx(0.5, abs=0.05)
    assert scaled_error(np.full((2, 56), 3.0)) is None  # no naive error to scale by
    assert scaled_error(np.zeros((1, 5))) is None  # too short
    steps = np.concatenate([np.resize([0.0, 1.0], 49), np.full(7, 10.0)])[None, :]  # a jump in the holdout
    assert scaled_error(steps) > 1


def test_the_template_hash_covers_the_line_formats(monkeypatch):
    before = drafter.template_sha256()
    monkeypatch.setattr(prompts, "RESTOCK_LINE", prompts.RESTOCK_LINE.replace(", ", "; "))
    assert drafter.template_sha256() != before
    monkeypatch.undo()
    monkeypatch.setattr(prompts, "LINE_NAME_CHARS", 20)
    assert drafter.template_sha256() != before


def test_a_runs_draft_id_is_a_function_of_store_trigger_and_period():
    one = draft_id_for(BUYER, run_id_for("4012345000016", "cadence", 7))
    assert one == draft_id_for(BUYER, run_id_for("4012345000016", "cadence", 7))  # a restart finds it
    others = {draft_id_for(BUYER, run_id_for(store, trigger, period))
              for store in ("4012345000016", "4012345000023") for trigger in ("cadence", "reorder_point") for period in (7, 8)}
    assert one in others and len(others) == 8


def test_the_forecast_reference_scores_by_mase_over_series_with_a_naive_error():
    from shelfproof.bench.forecast_reference import mase

    train = np.array([[0.0, 2.0, 0.0, 2.0], [1.0, 1.0, 1.0, 1.0]])  # the second has no naive error: unscored
    test = np.array([[0.0, 2.0], [5.0, 5.0]])
    assert mase(np.array([1.0, 1.0]), train, test) == 0.5
    assert mase(np.array([0.0, 1.0]), train, test) == 0.5  # |0-0| and |2-0| over a scale of 2


def test_the_nesting_bound_reads_brackets_outside_strings_only():
    from shelfproof.ledger.core.rules.orders import MAX_JSON_NESTING, _nesting_within

    assert _nesting_within(b"[" * MAX_JSON_NESTING + b"]" * MAX_JSON_NESTING)
    assert not _nesting_within(b"[" * (MAX_JSON_NESTING + 1) + b"]" * (MAX_JSON_NESTING + 1))
    assert not _nesting_within(b"[[]" * 100 + b"]" * 100)  # deep through siblings too
    assert _nesting_within(b'{"a": "' + b"[" * 500 + b'\\"{{{"}')  # brackets inside a string do not nest
    assert _nesting_within(b"[" + b"{}[]," * 5000 + b"[]]")
    assert not _nesting_within(b"[{]}") and not _nesting_within(b"[[]")  # not JSON
