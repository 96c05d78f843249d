"""The console's plain data (no Streamlit, no services): guardrail refusals as sentences, money, purchase
orders' waiting and late flags, scheduled changes still pending, alerts folded into compromised codes and
scans placed by cell. The same paths run against the real services in tests/integration/test_console_pages.py."""

from __future__ import annotations

import grpc
import pytest

from shelfproof.console.errors import GUARDRAIL_WHAT_TO_DO, guardrail_problem, problem_of
from shelfproof.console.views import (
    cell_center, compromised_codes, money, order_is_late, order_line_rows, order_waits_for_answer, pending_scheduled_changes,
    price_event_row, scans_by_place,
)
from shelfproof.ledger.core.codes import ResultCode
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.planner.v1 import planner_pb2 as ppb
from shelfproof.pricing.v1 import pricing_pb2 as pricepb
from shelfproof.product.v1 import alerts_pb2 as alpb
from shelfproof.runtime.errors import GuardrailViolated, InvalidArgument, LedgerRejected


@pytest.mark.parametrize(("message", "words"), [
    ("margin_floor: price 549 is below cost 500 plus 1000 bps", ["the margin floor", "price 5.49", "cost 5.00 plus 10 %"]),
    ("ledger rejected the transaction: margin_floor: price 260 is below cost 250 plus 1000 bps",
     ["refused this: the margin floor, price 2.60 is below cost 2.50 plus 10 %"]),
    ("00614141123452 at 4012345000016: max_change_per_day: change from 1000 to 1600 exceeds 2000 bps today",
     ["the largest price change a day", "(00614141123452 at 4012345000016)", "from 10.00 to 16.00 exceeds 20 % today"]),
    ("category wine at 4012345000016: max_discount: 4000 bps exceeds 3000 bps", ["the largest discount", "40 % exceeds 30 %"]),
    ("min_price: price 90 is below the minimum of 100", ["the minimum price", "price 0.90 is below the minimum of 1.00"]),
    ("price_endings: price 1001 does not end in 9 or 5", ["the price endings", "does not end in 9 or 5"]),
])
def test_a_guardrail_refusal_names_the_rule_and_its_limit(message, words):
    sentence = problem_of(LedgerRejected(message, ledger_code=ResultCode.GUARDRAIL_VIOLATED)).sentence()
    assert sentence.startswith("A guardrail refused this: ") and sentence.endswith(GUARDRAIL_WHAT_TO_DO)
    for word in words:
        assert word in sentence, sentence
    assert "bps" not in sentence and "_" not in sentence.split(".")[0]


def test_only_guardrail_refusals_read_as_guardrails():
    # another ledger refusal that happens to mention a rule's name stays the ledger's own sentence
    other = problem_of(LedgerRejected("margin_floor: looks like one", ledger_code=ResultCode.FAILED_PRECONDITION)).sentence()
    assert not other.startswith("A guardrail") and "nothing was written" in other
    assert guardrail_problem("no guardrail here") is None
    # a guardrail error without the rule's form keeps its message
    plain = problem_of(GuardrailViolated("over budget")).sentence()
    assert plain.startswith("Over budget")
    bad = problem_of(InvalidArgument("the price change is invalid")).sentence()
    assert bad.startswith("The price change is invalid") and "Correct" in bad


def test_unavailable_is_a_sentence_not_a_trace():
    class Down(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.UNAVAILABLE

        def details(self):
            return ""

    assert problem_of(Down()).sentence() == "A service is not reachable. A service is not reachable; check `shelfproof status` and try again."


def test_money_uses_the_currencys_minor_units():
    assert money(123_456, "EUR") == "EUR 1,234.56"
    assert money(1_200, "JPY") == "JPY 1,200"
    assert money(1_005, "KWD") == "KWD 1.005"


def _order(state, *lines) -> ppb.PurchaseOrder:
    return ppb.PurchaseOrder(order_id="o", state=state, lines=list(lines))


def test_orders_waiting_and_late():
    issued = _order(ppb.PURCHASE_ORDER_STATE_ISSUED, ppb.PurchaseOrderLine(gtin="g", ordered_quantity=6, confirmed_quantity=6, open_quantity=6))
    assert order_waits_for_answer(issued) and not order_is_late(issued)
    overdue = _order(ppb.PURCHASE_ORDER_STATE_ACCEPTED, ppb.PurchaseOrderLine(gtin="g", open_quantity=6, overdue=True))
    received_late = _order(ppb.PURCHASE_ORDER_STATE_CLOSED, ppb.PurchaseOrderLine(gtin="g", received_quantity=6, late=True))
    assert not order_waits_for_answer(overdue) and order_is_late(overdue) and order_is_late(received_late)
    row, = order_line_rows(overdue, {"g": "Coffee"})
    assert (row["product"], row["late"], row["state"]) == ("Coffee", "overdue", "unspecified")


def _event(kind, change_id="", effective=0, applied=True, reason="") -> pricepb.PriceEvent:
    event = pricepb.PriceEvent(kind=kind, change_id=change_id, applied=applied, reason=reason, gtin="g", location_gln="l")
    event.effective_time.seconds = effective
    return event


def test_a_scheduled_change_is_pending_until_a_later_event_names_it():
    due_later = _event(pricepb.PRICE_EVENT_KIND_PRICE_SCHEDULED, "c1", effective=2_000)
    carried_out = _event(pricepb.PRICE_EVENT_KIND_PRICE_SCHEDULED, "c2", effective=1_500)
    done = _event(pricepb.PRICE_EVENT_KIND_PRICE_SET, "c2", effective=1_500)
    refused = _event(pricepb.PRICE_EVENT_KIND_PRICE_SET, "c3", applied=False, reason="margin_floor: price 1 is below cost 2 plus 0 bps")
    assert pending_scheduled_changes([due_later, carried_out, done, refused], now_unix_s=1_000) == [due_later]
    assert price_event_row(refused, {}, {})["outcome"].startswith("refused: margin_floor")


def _alert(kind, serial, gtin="00614141000012") -> alpb.Alert:
    return alpb.Alert(record=st.AlertRecord(kind=kind, gtin=gtin, serial=serial))


def test_compromised_codes_come_from_clone_alerts_once_each():
    alerts = [_alert(st.ALERT_KIND_CLONE_SUSPECTED, "A"), _alert(st.ALERT_KIND_VOIDED_SCANNED, "B"),
              _alert(st.ALERT_KIND_CLONE_SUSPECTED, "A"), _alert(st.ALERT_KIND_BURST, ""), _alert(st.ALERT_KIND_CLONE_SUSPECTED, "C")]
    assert compromised_codes(alerts) == [("00614141000012", "A"), ("00614141000012", "C")]


def test_scans_are_placed_at_their_cells_without_any_map():
    lat, lon = cell_center("u173")  # Amsterdam
    assert 52 < lat < 53 and 4 < lon < 5.5
    assert cell_center("") == (None, None) and cell_center("a!") == (None, None)
    scans = [{"gtin": "g", "serial": "1", "cell": "u173"}, {"gtin": "g", "serial": "1", "cell": "ezjm"},
             {"gtin": "g", "serial": "2", "cell": "u173"}, {"gtin": "g", "serial": "3", "cell": "—"}]
    rows = {r["area"]: r for r in scans_by_place(scans)}
    assert set(rows) == {"u173", "ezjm"} and (rows["u173"]["scans"], rows["u173"]["items"]) == (2, 2)
    assert 40 < rows["ezjm"]["lat"] < 41 and -4.5 < rows["ezjm"]["lon"] < -3
