"""Purchase orders as the planner's API shows them, and the query-model reads behind its order RPCs:
what is on order per product (the policy's input), pages of orders, and the change log streamed in
ledger order."""

from __future__ import annotations

from datetime import date, datetime, timezone

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from shelfproof.common.v1 import common_pb2
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.planner.projector import order_status_name
from shelfproof.planner.v1 import planner_pb2 as pb
from shelfproof.runtime.fields import timestamp_of

ORDER_STATE = {
    st.PURCHASE_ORDER_STATUS_ISSUED: pb.PURCHASE_ORDER_STATE_ISSUED,
    st.PURCHASE_ORDER_STATUS_ACCEPTED: pb.PURCHASE_ORDER_STATE_ACCEPTED,
    st.PURCHASE_ORDER_STATUS_ACCEPTED_WITH_CHANGES: pb.PURCHASE_ORDER_STATE_ACCEPTED_WITH_CHANGES,
    st.PURCHASE_ORDER_STATUS_REJECTED: pb.PURCHASE_ORDER_STATE_REJECTED,
    st.PURCHASE_ORDER_STATUS_CLOSED: pb.PURCHASE_ORDER_STATE_CLOSED,
}
STATUS_OF_ORDER_STATE = {state: order_status_name(status) for status, state in ORDER_STATE.items()}
LINE_STATE = {
    st.PURCHASE_ORDER_LINE_STATUS_OPEN: pb.PURCHASE_ORDER_LINE_STATE_OPEN,
    st.PURCHASE_ORDER_LINE_STATUS_RECEIVED: pb.PURCHASE_ORDER_LINE_STATE_RECEIVED,
    st.PURCHASE_ORDER_LINE_STATUS_REJECTED: pb.PURCHASE_ORDER_LINE_STATE_REJECTED,
    st.PURCHASE_ORDER_LINE_STATUS_CLOSED_SHORT: pb.PURCHASE_ORDER_LINE_STATE_CLOSED_SHORT,
}


def purchase_order_from_record(record: st.PurchaseOrderRecord, today: date | None = None) -> pb.PurchaseOrder:
    """The API's view of the ledger's order: open, over, short and overdue quantities spelled out."""
    today = today or datetime.now(timezone.utc).date()
    currency = record.lines[0].unit_cost.currency_code if record.lines else ""
    lines = []
    for line in record.lines:
        is_open = line.status == st.PURCHASE_ORDER_LINE_STATUS_OPEN
        lines.append(pb.PurchaseOrderLine(
            gtin=line.gtin, ordered_quantity=line.ordered_quantity, confirmed_quantity=line.confirmed_quantity,
            shipped_quantity=line.shipped_quantity, received_quantity=line.received_quantity,
            unit_cost=common_pb2.Money(currency_code=line.unit_cost.currency_code, amount_minor=line.unit_cost.amount_minor),
            delivery_date=line.delivery_date, state=LINE_STATE[line.status],
            open_quantity=max(0, line.confirmed_quantity - line.received_quantity) if is_open else 0,
            over_quantity=max(0, line.received_quantity - line.confirmed_quantity),
            short_quantity=max(0, line.confirmed_quantity - line.received_quantity)
            if line.status == st.PURCHASE_ORDER_LINE_STATUS_CLOSED_SHORT else 0,
            late=line.late, overdue=is_open and bool(line.delivery_date) and today > date.fromisoformat(line.delivery_date),
        ))
    return pb.PurchaseOrder(
        order_id=record.order_id, state=ORDER_STATE[record.status], buyer_gln=record.buyer_gln,
        supplier_gln=record.supplier_gln, ship_to_gln=record.ship_to_gln,
        requested_delivery_date=record.requested_delivery_date, lines=lines, draft_id=record.draft_id,
        decision_record_hash=record.decision_record_sha256, biz_transaction=record.biz_transaction,
        ledger_ref=common_pb2.LedgerRef(height=record.issued_height),
        issue_time=timestamp_of(datetime.fromtimestamp(record.issued_unix_s, timezone.utc)),
        acknowledged_by=record.acknowledged_by, response_reason=record.response_reason,
        closed_by=record.closed_by, close_reason=record.close_reason,
        total=common_pb2.Money(
            currency_code=currency,
            amount_minor=sum(line.confirmed_quantity * line.unit_cost.amount_minor for line in record.lines),
        ),
    )


async def on_order(pool: AsyncConnectionPool, location_gln: str, gtins: list[str], *, pending_drafts: bool = False) -> dict[str, int]:
    """Units on their way to the location: confirmed and not yet received on the open lines of its
    purchase orders; with ``pending_drafts`` also the lines of its restock drafts still waiting for
    people (the restock loop counts them, so that a held draft is not drafted again every period; they
    stop counting when rejected or expired)."""
    async with pool.connection() as conn:
        rows = await (await conn.execute(
            """SELECT gtin, SUM(GREATEST(confirmed_quantity - received_quantity, 0)) FROM purchase_order_lines
               WHERE ship_to_gln = %s AND gtin = ANY(%s) AND status = 'OPEN' GROUP BY gtin""",
            (location_gln, gtins),
        )).fetchall()
        pending = await (await conn.execute(
            """SELECT record FROM drafts WHERE location_gln = %s AND kind = 'restock' AND status = 'PENDING'
               AND expire_time > now()""",
            (location_gln,),
        )).fetchall()
    units = {gtin: int(total) for gtin, total in rows}
    wanted = set(gtins)
    for (raw,) in pending if pending_drafts else []:
        for line in st.DraftRecord.FromString(raw).draft.order_lines:
            if line.gtin in wanted:
                units[line.gtin] = units.get(line.gtin, 0) + line.quantity
    return units


async def list_orders(
    pool: AsyncConnectionPool, after: str, size: int, *, buyer: str, supplier: str, ship_to: str, status: str, party: str = ""
) -> list[dict]:
    """``party``: only orders it is the buyer or the supplier of (a caller scoped to its organisation)."""
    where, args = ["order_id > %s"], [after]
    if party:
        where.append("(buyer_gln = %s OR supplier_gln = %s)")
        args += [party, party]
    for column, value in (("buyer_gln", buyer), ("supplier_gln", supplier), ("ship_to_gln", ship_to), ("status", status)):
        if value:
            where.append(f"{column} = %s")
            args.append(value)
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT order_id, record FROM purchase_orders WHERE {' AND '.join(where)} ORDER BY order_id LIMIT %s", (*args, size + 1)
        )
        return await cur.fetchall()


async def changes_after(
    pool: AsyncConnectionPool, position: tuple[int, int, str], *, buyer: str, supplier: str, limit: int = 500, party: str = ""
) -> list[tuple[int, int, str, str, bytes]]:
    """Order changes strictly after a position (height, index, order id), in ledger order. The projector writes a
    transaction's changes with its cursor in one database transaction, in ledger order, so what is
    visible is always a prefix of the ledger: a later read never finds an earlier change."""
    where, args = ["(height, tx_index, order_id) > (%s, %s, %s)"], [*position]
    if party:
        where.append("(buyer_gln = %s OR supplier_gln = %s)")
        args += [party, party]
    for column, value in (("buyer_gln", buyer), ("supplier_gln", supplier)):
        if value:
            where.append(f"{column} = %s")
            args.append(value)
    async with pool.connection() as conn:
        return await (await conn.execute(
            f"""SELECT height, tx_index, order_id, action, record FROM purchase_order_changes WHERE {' AND '.join(where)}
                ORDER BY height, tx_index, order_id LIMIT %s""",
            (*args, limit),
        )).fetchall()
