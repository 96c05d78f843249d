"""Purchase orders: issued by the ledger itself when a restock draft is approved (by people, or on
submission below the auto-approval threshold), answered by the supplier's people (a GS1 Order Response:
accepted, accepted with changes per line, rejected), filled by the shipping and receiving EPCIS events
that name them in ``bizTransactionList`` (type ``po``), and closed when every line is received, rejected
or closed short by the buyer.

Each transition is scoped: only the supplier's people answer and only the supplier's shipping events
count as shipped; only the buyer's receiving events at the order's ship-to GLN count as received; only
the buyer closes. An EPCIS event names an order as ``urn:epcglobal:cbv:bt:<buyer GLN>:<order id>``
(CBV's business transaction identifier: the issuing party, then its own number). Dates are
``YYYY-MM-DD`` and "late" compares the block's UTC day with the line's delivery date: integer day
numbers, no clock.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re

from shelfproof.gs1.canonical import DL_HOST, canonical_key
from shelfproof.ledger.core.bounds import DAY_S, MAX_QUANTITY
from shelfproof.ledger.core.codes import ResultCode, TxRejected
from shelfproof.ledger.core.rules.common import (
    _DATE,
    TxContext,
    _denied,
    _invalid,
    _policy,
    _require_org,
    _same_org,
    _text,
    read,
    write,
)
from shelfproof.ledger.core.state import Overlay
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb

BIZ_TRANSACTION_PREFIX = "urn:epcglobal:cbv:bt:"
# "po" as EPCIS 2.0 JSON writes it, as a CBV 1.2 URN, and as the CBV 2.0 web URI.
_PO_TYPES = frozenset(("po", "urn:epcglobal:cbv:btt:po", "https://ref.gs1.org/cbv/BTT-po"))
# Units a quantity may count in (UN/ECE Rec. 20: each, one, piece); an absent uom means units too.
_UNIT_UOMS = frozenset(("EA", "C62", "H87"))
_ORDER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,159}", re.ASCII)
MAX_ORDERS_PER_EVENT_SCAN = 16
EVENTS_KEPT = 32
_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()

OPEN = st.PURCHASE_ORDER_LINE_STATUS_OPEN
# Orders whose lines shipping and receiving events may still fill.
ACKNOWLEDGED = (st.PURCHASE_ORDER_STATUS_ACCEPTED, st.PURCHASE_ORDER_STATUS_ACCEPTED_WITH_CHANGES)
LIVE = (st.PURCHASE_ORDER_STATUS_ISSUED, *ACKNOWLEDGED)


def order_id_for(draft_id: str, supplier_gln: str) -> str:
    """One order per supplier of a draft; a GLN is 13 digits, so the id splits back one way only."""
    return f"{draft_id}-{supplier_gln}"


def draft_index_key(draft_id: str) -> str:
    # "@" starts no order id (ids start with a letter or digit), so the two key spaces never meet.
    return f"@draft/{draft_id}"


def biz_transaction_of(buyer_gln: str, order_id: str) -> str:
    return f"{BIZ_TRANSACTION_PREFIX}{buyer_gln}:{order_id}"


def date_of_day(day: int) -> str:
    return _dt.date.fromordinal(_EPOCH_ORDINAL + day).isoformat()


def day_of_date(value: str, what: str) -> int:
    if not _DATE.fullmatch(value):
        raise _invalid(f"{what} must be YYYY-MM-DD, got {value[:40]!r}")
    try:
        return _dt.date.fromisoformat(value).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        raise _invalid(f"{what} {value} is not a calendar date") from None


# --- issuing ------------------------------------------------------------------------------------------


def issue_purchase_orders(state: Overlay, ctx: TxContext, draft: st.DraftRecord) -> None:
    """The approved restock draft's lines as one purchase order per supplier, with the supplier and
    lead time the replenishment policy names now (lines of items without a supplier are ordered off
    the ledger). Called by the drafts rule at approval, inside the approving transaction."""
    a = draft.draft
    bounds = read(state, "replenishment", f"{a.organization_gln}/{a.location_gln}", txpb.ReplenishmentPolicy)
    items = {item.gtin: item for item in bounds.items} if bounds is not None else {}
    by_supplier: dict[str, list[tuple[txpb.DraftOrderLine, txpb.ItemBounds]]] = {}
    for line in a.order_lines:
        item = items.get(line.gtin)
        if item is not None and item.supplier_gln and line.quantity > 0:
            by_supplier.setdefault(item.supplier_gln, []).append((line, item))
    if not by_supplier:
        return
    day = ctx.time_unix_s // DAY_S
    record_sha256 = hashlib.sha256(a.decision_record.SerializeToString(deterministic=True)).hexdigest()
    order_ids = []
    for supplier in sorted(by_supplier):
        _require_org(state, supplier)  # a supplier removed since the policy was set receives nothing
        lines = by_supplier[supplier]
        order_id = order_id_for(a.draft_id, supplier)
        if read(state, "orders", order_id, st.PurchaseOrderRecord) is not None:
            raise TxRejected(ResultCode.ALREADY_EXISTS, f"purchase order {order_id} exists")
        requested = date_of_day(day + max(item.lead_time_days for _, item in lines))
        write(state, "orders", order_id, st.PurchaseOrderRecord(
            order_id=order_id, buyer_gln=a.organization_gln, supplier_gln=supplier, ship_to_gln=a.location_gln,
            requested_delivery_date=requested, draft_id=a.draft_id, decision_record_sha256=record_sha256,
            lines=[
                st.PurchaseOrderLine(
                    gtin=line.gtin, ordered_quantity=line.quantity, unit_cost=line.unit_cost,
                    confirmed_quantity=line.quantity, delivery_date=requested, status=OPEN,
                )
                for line, _ in lines
            ],
            status=st.PURCHASE_ORDER_STATUS_ISSUED, issued_height=ctx.height, issued_unix_s=ctx.time_unix_s,
            biz_transaction=biz_transaction_of(a.organization_gln, order_id),
        ))
        order_ids.append(order_id)
    write(state, "orders", draft_index_key(a.draft_id), st.PurchaseOrderIndex(order_ids=order_ids))


def _order(state: Overlay, order_id: str) -> st.PurchaseOrderRecord:
    if not _ORDER_ID.fullmatch(order_id):
        raise _invalid(f"order_id must be 1-160 of [A-Za-z0-9._:/-], got {order_id[:40]!r}")
    order = read(state, "orders", order_id, st.PurchaseOrderRecord)
    if order is None:
        raise TxRejected(ResultCode.NOT_FOUND, f"purchase order {order_id} does not exist")
    return order


def _not_live(order: st.PurchaseOrderRecord) -> TxRejected:
    return TxRejected(
        ResultCode.FAILED_PRECONDITION, f"purchase order {order.order_id} is {st.PurchaseOrderStatus.Name(order.status)}"
    )


def _undelivered_minor(order: st.PurchaseOrderRecord, before: list[int]) -> int:
    """What the lines will no longer cost: the drop of each line's confirmed-or-outstanding quantity."""
    return sum(max(0, was - now) * line.unit_cost.amount_minor for line, was, now in zip(order.lines, before, _committed(order)))


def _committed(order: st.PurchaseOrderRecord) -> list[int]:
    """Per line, the units the buyer still pays for: the confirmed quantity, or what came once closed."""
    return [
        line.confirmed_quantity if line.status in (OPEN, st.PURCHASE_ORDER_LINE_STATUS_RECEIVED) else
        line.received_quantity if line.status == st.PURCHASE_ORDER_LINE_STATUS_CLOSED_SHORT else 0
        for line in order.lines
    ]


def _release_budget(state: Overlay, ctx: TxContext, order: st.PurchaseOrderRecord, amount_minor: int) -> None:
    """Give back to the buyer's budget what a cut, rejected or short-closed order will not cost, while
    the budget period it was approved in lasts (a past period's spending stays as it was)."""
    policy = _policy(state, order.buyer_gln)
    budget = read(state, "budgets", order.buyer_gln, st.BudgetRecord)
    if amount_minor <= 0 or policy is None or budget is None or policy.budget_period_s <= 0:
        return
    period = policy.budget_period_s
    issued_in = order.issued_unix_s - order.issued_unix_s % period
    if not budget.period_start_unix_s == issued_in == ctx.time_unix_s - ctx.time_unix_s % period:
        return
    budget.spent_minor = max(0, budget.spent_minor - amount_minor)
    write(state, "budgets", order.buyer_gln, budget)


def _close_if_done(order: st.PurchaseOrderRecord, ctx: TxContext) -> None:
    if all(line.status != OPEN for line in order.lines):
        order.status = st.PURCHASE_ORDER_STATUS_CLOSED
        order.closed_height = ctx.height


# --- the supplier's answer and the buyer's close ---------------------------------------------------------


def acknowledge_purchase_order(state: Overlay, ctx: TxContext, a: txpb.AcknowledgePurchaseOrder) -> None:
    order = _order(state, a.order_id)
    _same_org(ctx, order.supplier_gln)
    if ctx.signer.kind != txpb.AGENT_KIND_PERSON or not ctx.signer.person_id:
        raise _denied(f"{ctx.signer.agent_id} is not bound to a person; the supplier's people answer orders")
    if order.status in ACKNOWLEDGED or order.status == st.PURCHASE_ORDER_STATUS_REJECTED:
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"purchase order {order.order_id} is already answered")
    if order.status != st.PURCHASE_ORDER_STATUS_ISSUED:
        raise _not_live(order)
    reason = _text(a.reason, "reason", 512, required=False)
    before = _committed(order)
    if a.status in (txpb.ORDER_RESPONSE_STATUS_ACCEPTED, txpb.ORDER_RESPONSE_STATUS_REJECTED):
        if a.lines:
            raise _invalid("line responses belong to a MODIFIED answer only")
        if a.status == txpb.ORDER_RESPONSE_STATUS_ACCEPTED:
            order.status = st.PURCHASE_ORDER_STATUS_ACCEPTED
        else:
            for line in order.lines:
                line.confirmed_quantity, line.status = 0, st.PURCHASE_ORDER_LINE_STATUS_REJECTED
            order.status = st.PURCHASE_ORDER_STATUS_REJECTED
            order.closed_height = ctx.height
    elif a.status == txpb.ORDER_RESPONSE_STATUS_MODIFIED:
        _apply_line_changes(order, a.lines)
        if all(line.status == st.PURCHASE_ORDER_LINE_STATUS_REJECTED for line in order.lines):
            order.status = st.PURCHASE_ORDER_STATUS_REJECTED
            order.closed_height = ctx.height
        else:
            order.status = st.PURCHASE_ORDER_STATUS_ACCEPTED_WITH_CHANGES
    else:
        raise _invalid("status must be ACCEPTED, MODIFIED or REJECTED")
    order.acknowledged_by = ctx.signer.agent_id
    order.acknowledged_height = ctx.height
    order.response_reason = reason
    _release_budget(state, ctx, order, _undelivered_minor(order, before))
    write(state, "orders", order.order_id, order)


def _apply_line_changes(order: st.PurchaseOrderRecord, responses) -> None:
    lines = {line.gtin: line for line in order.lines}
    issued_day = order.issued_unix_s // DAY_S
    if not responses:
        raise _invalid("a MODIFIED answer names the lines it changes or rejects")
    seen: set[str] = set()
    changed = False
    for response in responses:
        line = lines.get(response.gtin)
        if line is None:
            raise _invalid(f"{response.gtin[:20]} is not a line of {order.order_id}")
        if response.gtin in seen:
            raise _invalid(f"{response.gtin} is answered twice")
        seen.add(response.gtin)
        if response.action == txpb.ORDER_LINE_ACTION_CHANGED:
            if not 1 <= response.confirmed_quantity <= line.ordered_quantity:
                raise _invalid(
                    f"{response.gtin}: a changed quantity is 1 to the ordered {line.ordered_quantity} "
                    f"(reject the line to send none), got {response.confirmed_quantity}"
                )
            if response.delivery_date and day_of_date(response.delivery_date, f"{response.gtin} delivery_date") < issued_day:
                raise _invalid(f"{response.gtin}: the delivery date is before the order")
            line.confirmed_quantity = response.confirmed_quantity
            line.delivery_date = response.delivery_date or line.delivery_date
            changed = True
        elif response.action == txpb.ORDER_LINE_ACTION_REJECTED:
            if response.confirmed_quantity or response.delivery_date:
                raise _invalid(f"{response.gtin}: a rejected line carries no quantity or date")
            line.confirmed_quantity, line.status = 0, st.PURCHASE_ORDER_LINE_STATUS_REJECTED
            changed = True
        elif response.action == txpb.ORDER_LINE_ACTION_ACCEPTED:
            if response.confirmed_quantity or response.delivery_date:
                raise _invalid(f"{response.gtin}: an accepted line keeps its quantity and date (use CHANGED)")
        else:
            raise _invalid(f"{response.gtin}: action must be ACCEPTED, CHANGED or REJECTED")
    if not changed:
        raise _invalid("a MODIFIED answer changes or rejects at least one line (else answer ACCEPTED)")


def close_purchase_order(state: Overlay, ctx: TxContext, a: txpb.ClosePurchaseOrder) -> None:
    order = _order(state, a.order_id)
    _same_org(ctx, order.buyer_gln)
    if order.status not in LIVE:
        raise _not_live(order)
    before = _committed(order)
    for line in order.lines:
        if line.status == OPEN:
            line.status = st.PURCHASE_ORDER_LINE_STATUS_CLOSED_SHORT
    order.status = st.PURCHASE_ORDER_STATUS_CLOSED
    order.closed_by = ctx.signer.agent_id
    order.closed_height = ctx.height
    order.close_reason = _text(a.reason, "reason", 512, required=False)
    _release_budget(state, ctx, order, _undelivered_minor(order, before))
    write(state, "orders", order.order_id, order)


# --- EPCIS events naming an order -------------------------------------------------------------------------


MAX_JSON_NESTING = 32
MAX_JSON_INTEGER_DIGITS = 18


class _TooLong:
    """An integer literal longer than any quantity: never a valid quantity."""


def _integer(digits: str) -> int | _TooLong:
    # Python's own limit on integer digits (and its recursion limit) are process settings a node may
    # change: what a validator parses must not depend on them, so both are bounded here first.
    return int(digits) if len(digits.lstrip("-")) <= MAX_JSON_INTEGER_DIGITS else _TooLong()


# A JSON string (its alternatives start with different bytes: linear, no backtracking).
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.ASCII | re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+", re.ASCII)
# More openers in a row than the depth allowed: found at once, where removing pairs would take rounds.
_OPENERS_RUN = re.compile(r"[\[{]{%d}" % (MAX_JSON_NESTING + 1), re.ASCII)


def _nesting_within(raw: bytes, limit: int = MAX_JSON_NESTING) -> bool:
    """Whether the JSON text's brackets (strings skipped) are balanced and nest at most ``2 * limit``
    deep: each round removes the innermost pairs (one level, two where a removed ``[]`` leaves an
    innermost ``{}``). At C speed, so a member's 64 KB of brackets costs CheckTx a millisecond or two."""
    # Latin-1 maps every byte to one character: the text is the bytes, whatever their encoding.
    skeleton = _NOT_BRACKET.sub("", _JSON_STRING.sub("", raw.decode("latin-1")))
    for _ in range(limit):
        if not skeleton:
            return True
        if _OPENERS_RUN.search(skeleton):
            return False
        shorter = skeleton.replace("[]", "").replace("{}", "")
        if shorter == skeleton:
            return False  # unbalanced or mismatched: not JSON a reader agrees on
        skeleton = shorter
    return not skeleton


def _event_document(event_json: bytes) -> dict | None:
    # Only events that may name a purchase order are parsed: without a \u escape (the only way JSON
    # can write a letter other than as itself), that needs the key's bytes and a string ending in
    # po (every form of the type does). The common custody event, or one naming only a despatch
    # advice or an invoice, costs two byte searches.
    if b"\\u" not in event_json and (b"bizTransactionList" not in event_json or b'po"' not in event_json):
        return None
    if not _nesting_within(event_json):
        return None
    try:
        document = json.loads(event_json, parse_int=_integer)
    except (ValueError, RecursionError):
        return None  # a member's malformed JSON names no order
    return document if isinstance(document, dict) else None


def _references(document: dict) -> list[tuple[str, str]]:
    listed = document.get("bizTransactionList")
    found: list[tuple[str, str]] = []
    if not isinstance(listed, list):
        return found
    for entry in listed[:MAX_ORDERS_PER_EVENT_SCAN]:
        if not isinstance(entry, dict) or entry.get("type") not in _PO_TYPES:
            continue
        value = entry.get("bizTransaction")
        if not isinstance(value, str) or not value.startswith(BIZ_TRANSACTION_PREFIX):
            continue
        rest = value[len(BIZ_TRANSACTION_PREFIX):]
        gln, order_id = rest[:13], rest[14:]
        if len(rest) > 14 and rest[13] == ":" and gln.isdigit() and gln.isascii() and (gln, order_id) not in found:
            found.append((gln, order_id))
    return found


def order_references(event_json: bytes) -> list[tuple[str, str]]:
    """(buyer GLN, order id) of every purchase order an EPCIS event's JSON names (type po, in CBV's
    ``urn:epcglobal:cbv:bt:<GLN>:<id>`` form). The projections call this too: one reader of the form."""
    document = _event_document(event_json)
    return _references(document) if document is not None else []


def _class_gtin(epc_class) -> str | None:
    if not isinstance(epc_class, str):
        return None
    canonical = canonical_key(epc_class)
    head = DL_HOST + "/01/"
    if canonical is None or not canonical.startswith(head):
        return None
    gtin, rest = canonical[len(head):len(head) + 14], canonical[len(head) + 14:]
    return gtin if len(gtin) == 14 and gtin.isdigit() and (not rest or rest.startswith("/10/")) else None


def _quantities(document: dict, items: list[tuple[str, str]]) -> dict[str, int]:
    """Units per GTIN an event moves: its serialized items, and its class-level quantities in units."""
    units: dict[str, int] = {}
    for gtin, _ in items:
        units[gtin] = units.get(gtin, 0) + 1
    listed = document.get("quantityList")
    for entry in listed if isinstance(listed, list) else []:
        gtin = _class_gtin(entry.get("epcClass")) if isinstance(entry, dict) else None
        if gtin is None:
            continue
        quantity, uom = entry.get("quantity"), entry.get("uom")
        if type(quantity) is not int or not 1 <= quantity <= MAX_QUANTITY:
            raise _invalid(f"{gtin}: an order's quantity is a whole number of units, 1 to {MAX_QUANTITY}")
        if uom is not None and uom not in _UNIT_UOMS:
            raise _invalid(f"{gtin}: quantities filling an order count units (uom EA, C62 or H87)")
        units[gtin] = units.get(gtin, 0) + quantity
    return units


def fill_purchase_orders(
    state: Overlay, ctx: TxContext, a: txpb.RecordEvent, items: list[tuple[str, str]], biz_step: str
) -> None:
    """A shipping event of the supplier or a receiving event of the buyer at the ship-to GLN that names
    a purchase order fills its lines; any other party naming the order is refused. Orders of a buyer
    that is no member are someone else's and left alone; a member's unknown order is NOT_FOUND."""
    if biz_step not in ("shipping", "receiving"):
        return
    document = _event_document(a.epcis_event_json)
    if document is None:
        return
    references = [(gln, order_id) for gln, order_id in _references(document) if read(state, "orgs", gln, st.OrganizationRecord)]
    if not references:
        return
    if len(references) > 1:
        raise _invalid("a shipping or receiving event fills one purchase order; it names several")
    buyer, order_id = references[0]
    order = read(state, "orders", order_id, st.PurchaseOrderRecord) if _ORDER_ID.fullmatch(order_id) else None
    if order is None or order.buyer_gln != buyer:
        raise TxRejected(ResultCode.NOT_FOUND, f"{buyer} has no purchase order {order_id[:80]}")
    if biz_step == "shipping":
        _same_org(ctx, order.supplier_gln)
    else:
        _same_org(ctx, order.buyer_gln)
        if a.biz_location_gln != order.ship_to_gln:
            raise _denied(f"{order_id} is received at {order.ship_to_gln}, not at {a.biz_location_gln or 'no bizLocation'}")
    if order.status == st.PURCHASE_ORDER_STATUS_ISSUED:
        raise TxRejected(ResultCode.FAILED_PRECONDITION, f"the supplier has not answered purchase order {order_id} yet")
    if order.status not in ACKNOWLEDGED:
        raise _not_live(order)
    units = _quantities(document, items)
    if not units:
        raise _invalid(f"the event names {order_id} but moves no units of it")
    lines = {line.gtin: line for line in order.lines}
    today = ctx.time_unix_s // DAY_S
    for gtin in sorted(units):
        line = lines.get(gtin)
        if line is None:
            raise _invalid(f"{gtin} is not a line of {order_id}")
        if line.status != OPEN:
            raise TxRejected(
                ResultCode.FAILED_PRECONDITION, f"{gtin} of {order_id} is {st.PurchaseOrderLineStatus.Name(line.status)}"
            )
        if biz_step == "shipping":
            line.shipped_quantity = _bounded_sum(line.shipped_quantity, units[gtin], gtin)
            continue
        line.received_quantity = _bounded_sum(line.received_quantity, units[gtin], gtin)
        line.last_receipt_unix_s = ctx.time_unix_s
        if today > day_of_date(line.delivery_date, "delivery_date"):
            line.late = True
        if line.received_quantity >= line.confirmed_quantity:
            line.status = st.PURCHASE_ORDER_LINE_STATUS_RECEIVED
    _close_if_done(order, ctx)
    order.event_hashes.append(a.event_hash)
    if len(order.event_hashes) > EVENTS_KEPT:
        del order.event_hashes[: len(order.event_hashes) - EVENTS_KEPT]
    write(state, "orders", order.order_id, order)


def _bounded_sum(total: int, more: int, gtin: str) -> int:
    if total + more > MAX_QUANTITY:
        raise _invalid(f"{gtin}: the order's line would count more than {MAX_QUANTITY} units")
    return total + more
