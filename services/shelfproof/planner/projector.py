"""The planner's projection of the ledger: every AI draft and purchase order as the ledger now holds
it, so that people can list what waits for their approval and suppliers what they were ordered. A row is
replaced by the ledger's current record whenever a transaction touches it, so the ledger's own rules
(quorum, auto-approval, order issue, fills) decide its status. Each change of an order is also kept at
its ledger position, which is what ``StreamPurchaseOrders`` replays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from shelfproof.db.projection import Projector
from shelfproof.ledger.core.rules.catalogue import cbv_word
from shelfproof.ledger.core.rules.orders import draft_index_key, order_references
from shelfproof.ledger.v1 import ledger_pb2 as pb
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.runtime.client import call

DRAFT_OF = {
    "submit_ai_draft": lambda body: body.submit_ai_draft.draft_id,
    "approve_draft": lambda body: body.approve_draft.draft_id,
    "reject_draft": lambda body: body.reject_draft.draft_id,
}
ORDER_OF = {
    "acknowledge_purchase_order": lambda body: body.acknowledge_purchase_order.order_id,
    "close_purchase_order": lambda body: body.close_purchase_order.order_id,
}
STATUS = {st.DRAFT_STATUS_PENDING: "PENDING", st.DRAFT_STATUS_APPROVED: "APPROVED", st.DRAFT_STATUS_REJECTED: "REJECTED", st.DRAFT_STATUS_EXPIRED: "EXPIRED"}
ORDER_STATUS_PREFIX = "PURCHASE_ORDER_STATUS_"
LINE_STATUS_PREFIX = "PURCHASE_ORDER_LINE_STATUS_"


def order_status_name(status: int) -> str:
    return st.PurchaseOrderStatus.Name(status).removeprefix(ORDER_STATUS_PREFIX)


def line_status_name(status: int) -> str:
    return st.PurchaseOrderLineStatus.Name(status).removeprefix(LINE_STATUS_PREFIX)


@dataclass
class Touched:
    draft: st.DraftRecord | None = None
    orders: list[st.PurchaseOrderRecord] = field(default_factory=list)


class DraftProjector(Projector):
    NAME = "planner"

    async def _values(self, keys: list[tuple[str, str]]) -> list[bytes | None]:
        if not keys:
            return []
        reply = await call(
            self.ledger.QueryMany, pb.QueryManyRequest(keys=[pb.StoreKey(store=s, key=k.encode()) for s, k in keys]), idempotent=True
        )
        return [v.value if v.found else None for v in reply.values]

    async def prepare(self, action: str, signed: txpb.SignedTransaction, body: txpb.TransactionBody) -> Touched | None:
        touched = Touched()
        order_ids: list[str] = []
        if action in DRAFT_OF:
            draft_id = DRAFT_OF[action](body)
            draft, index = await self._values([("drafts", draft_id), ("orders", draft_index_key(draft_id))])
            touched.draft = st.DraftRecord.FromString(draft) if draft else None
            if index and action != "reject_draft":
                order_ids = list(st.PurchaseOrderIndex.FromString(index).order_ids)
        elif action in ORDER_OF:
            order_ids = [ORDER_OF[action](body)]
        elif action == "record_event" and cbv_word(body.record_event.biz_step) in ("shipping", "receiving"):
            order_ids = [order_id for _, order_id in order_references(body.record_event.epcis_event_json)]
        else:
            return None
        for value in await self._values([("orders", order_id) for order_id in order_ids]):
            if value is not None:
                touched.orders.append(st.PurchaseOrderRecord.FromString(value))
        return touched

    async def apply(self, cur, result, signed, body, action, touched: Touched | None) -> None:
        if touched is None:
            return
        if touched.draft is not None:
            await self._apply_draft(cur, result, action, touched.draft)
        for order in touched.orders:
            await self._apply_order(cur, result, action, order)

    @staticmethod
    async def _apply_draft(cur, result, action: str, record: st.DraftRecord) -> None:
        draft = record.draft
        await cur.execute(
            """INSERT INTO drafts (draft_id, organization_gln, location_gln, kind, status, submitted_by, total_minor,
                                   approvals_required, approvers, create_time, expire_time, record, submit_height,
                                   submit_tx_hash, ledger_height)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (draft_id) DO UPDATE SET status = EXCLUDED.status, approvers = EXCLUDED.approvers,
                   record = EXCLUDED.record, ledger_height = EXCLUDED.ledger_height""",
            (
                draft.draft_id, draft.organization_gln, draft.location_gln,
                "promotion" if draft.HasField("promotion") else "restock", STATUS[record.status], record.submitted_by,
                record.total_minor, record.approvals_required, list(record.approvers),
                datetime.fromtimestamp(record.submitted_unix_s, timezone.utc),
                datetime.fromtimestamp(record.expires_unix_s, timezone.utc), record.SerializeToString(),
                record.submitted_height, result.tx_hash if action == "submit_ai_draft" else b"", result.height,
            ),
        )

    @staticmethod
    async def _apply_order(cur, result, action: str, order: st.PurchaseOrderRecord) -> None:
        raw = order.SerializeToString()
        status = order_status_name(order.status)
        await cur.execute(
            """INSERT INTO purchase_orders (order_id, buyer_gln, supplier_gln, ship_to_gln, status, draft_id, issue_time,
                                            record, issue_height, ledger_height)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status, record = EXCLUDED.record,
                   ledger_height = EXCLUDED.ledger_height""",
            (
                order.order_id, order.buyer_gln, order.supplier_gln, order.ship_to_gln, status, order.draft_id,
                datetime.fromtimestamp(order.issued_unix_s, timezone.utc), raw, order.issued_height, result.height,
            ),
        )
        await cur.executemany(
            """INSERT INTO purchase_order_lines (order_id, gtin, ship_to_gln, status, confirmed_quantity, received_quantity)
               VALUES (%s, %s, %s, %s, %s, %s)
               ON CONFLICT (order_id, gtin) DO UPDATE SET status = EXCLUDED.status,
                   confirmed_quantity = EXCLUDED.confirmed_quantity, received_quantity = EXCLUDED.received_quantity""",
            [
                (order.order_id, line.gtin, order.ship_to_gln, line_status_name(line.status), line.confirmed_quantity, line.received_quantity)
                for line in order.lines
            ],
        )
        await cur.execute(
            """INSERT INTO purchase_order_changes (height, tx_index, order_id, action, buyer_gln, supplier_gln, record)
               VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
            (result.height, result.index, order.order_id, action, order.buyer_gln, order.supplier_gln, raw),
        )
