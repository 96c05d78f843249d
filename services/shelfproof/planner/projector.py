"""The planner's projection of the ledger: every AI draft as the ledger now holds it, so that people
can list what waits for their approval. A draft's row is replaced by the ledger's current record
whenever a transaction touches it, so the ledger's own rules (quorum, auto-approval) decide its status.
"""

from __future__ import annotations

from datetime import datetime, timezone

from shelfproof.db.projection import Projector
from shelfproof.ledger.v1 import ledger_pb2 as pb
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.runtime.client import call

DRAFT_OF = {
    "submit_ai_draft": lambda body: body.submit_ai_draft.draft_id,
    "approve_draft": lambda body: body.approve_draft.draft_id,
    "reject_draft": lambda body: body.reject_draft.draft_id,
}
STATUS = {st.DRAFT_STATUS_PENDING: "PENDING", st.DRAFT_STATUS_APPROVED: "APPROVED", st.DRAFT_STATUS_REJECTED: "REJECTED", st.DRAFT_STATUS_EXPIRED: "EXPIRED"}


class DraftProjector(Projector):
    NAME = "planner"

    async def prepare(self, action: str, signed: txpb.SignedTransaction, body: txpb.TransactionBody) -> st.DraftRecord | None:
        if action not in DRAFT_OF:
            return None
        answer = await call(self.ledger.Query, pb.QueryRequest(store="drafts", key=DRAFT_OF[action](body).encode()), idempotent=True)
        return st.DraftRecord.FromString(answer.value) if answer.found else None

    async def apply(self, cur, result, signed, body, action, record: st.DraftRecord | None) -> None:
        if record is None:
            return
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
