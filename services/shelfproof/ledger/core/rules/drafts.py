"""AI drafts, their approvals and the replenishment policy's bounds."""

from __future__ import annotations

from shelfproof.ledger.core.codes import ResultCode, TxRejected
from shelfproof.ledger.core.rules.common import (
    _HEX_DIGEST,
    TxContext,
    _denied,
    _gln,
    _gtin,
    _guardrail,
    _identifier,
    _invalid,
    _own_gln,
    _policy,
    _require_org,
    _same_org,
    _text,
    read,
    write,
)
from shelfproof.ledger.core.rules.orders import issue_purchase_orders
from shelfproof.ledger.core.rules.pricing import _check_promotion, _money, auto_applies, open_promotion
from shelfproof.ledger.core.state import Overlay
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb

# --- AI drafts and approvals --------------------------------------------------------------------

def set_replenishment_policy(state: Overlay, ctx: TxContext, a: txpb.SetReplenishmentPolicy) -> None:
    p = a.policy
    _require_org(state, _gln(p.organization_gln))
    _same_org(ctx, p.organization_gln)
    _own_gln(state, ctx, p.location_gln, "location")
    seen: set[str] = set()
    for item in p.items:
        _gtin(item.gtin)
        if item.gtin in seen:
            raise _invalid(f"{item.gtin} appears twice")
        seen.add(item.gtin)
        if not 0 <= item.min_order_quantity <= item.max_order_quantity or item.case_pack < 0:
            raise _invalid(f"bounds of {item.gtin} are inconsistent")
        _money(item.unit_cost, f"unit_cost of {item.gtin}")
        if item.supplier_gln:
            _require_org(state, _gln(item.supplier_gln))
    write(state, "replenishment", f"{p.organization_gln}/{p.location_gln}", p)



def _order_total(state: Overlay, a: txpb.SubmitAiDraft, policy: txpb.GuardrailPolicy) -> int:
    """The order's total, once every line is within the organisation's replenishment bounds."""
    org, location = a.organization_gln, a.location_gln
    bounds_record = read(state, "replenishment", f"{org}/{location}", txpb.ReplenishmentPolicy)
    if bounds_record is None:
        raise TxRejected(ResultCode.FAILED_PRECONDITION, f"no replenishment policy for {org} at {location}")
    bounds = {item.gtin: item for item in bounds_record.items}
    seen: set[str] = set()
    total = 0
    for line in a.order_lines:
        item = bounds.get(line.gtin)
        if item is None:
            raise _guardrail(f"{line.gtin} is not in the replenishment policy")
        if line.gtin in seen:
            raise _invalid(f"{line.gtin} appears twice")
        seen.add(line.gtin)
        if not item.min_order_quantity <= line.quantity <= item.max_order_quantity:
            raise _guardrail(
                f"{line.gtin}: quantity {line.quantity} is outside "
                f"[{item.min_order_quantity}, {item.max_order_quantity}]"
            )
        if item.case_pack > 1 and line.quantity % item.case_pack:
            raise _guardrail(f"{line.gtin}: quantity {line.quantity} is not a multiple of case pack {item.case_pack}")
        if line.unit_cost.amount_minor != item.unit_cost.amount_minor or line.unit_cost.currency_code != policy.currency_code:
            raise _guardrail(f"{line.gtin}: unit cost differs from the policy's")
        total += line.quantity * item.unit_cost.amount_minor
    return total


def _budget(state: Overlay, policy: txpb.GuardrailPolicy, now: int) -> st.BudgetRecord:
    budget = read(state, "budgets", policy.organization_gln, st.BudgetRecord)
    period_start = now - now % policy.budget_period_s
    if budget is None or budget.period_start_unix_s != period_start:
        budget = st.BudgetRecord(organization_gln=policy.organization_gln, period_start_unix_s=period_start)
    return budget


def _hex_digest(value: str, what: str) -> None:
    if not _HEX_DIGEST.fullmatch(value):
        raise _invalid(f"decision_record.{what} must be a SHA-256 hex digest")


def submit_ai_draft(state: Overlay, ctx: TxContext, a: txpb.SubmitAiDraft) -> None:
    _identifier(a.draft_id, "draft_id")
    org = _gln(a.organization_gln)
    _same_org(ctx, org)
    location = _own_gln(state, ctx, a.location_gln, "location")
    if read(state, "drafts", a.draft_id, st.DraftRecord) is not None:
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"draft {a.draft_id} exists")
    record = a.decision_record
    for name in ("model", "engine", "engine_version"):
        _text(getattr(record, name), f"decision_record.{name}", 128)
    for name in ("weights_digest", "prompt_template_sha256", "json_schema_sha256", "prompt_sha256", "input_snapshot_sha256", "output_sha256"):
        _hex_digest(getattr(record, name), name)
    _text(a.rationale, "rationale", 4096, required=False)
    policy = _policy(state, org)
    if policy is None:
        raise TxRejected(ResultCode.FAILED_PRECONDITION, f"{org} has no guardrail policy; drafts need one")
    has_lines, has_promotion = len(a.order_lines) > 0, a.HasField("promotion")
    if has_lines == has_promotion:
        raise _invalid("a draft carries either order lines or a promotion")
    total = 0
    if has_lines:
        total = _order_total(state, a, policy)
        budget = _budget(state, policy, ctx.time_unix_s)
        if budget.spent_minor + total > policy.budget_minor:
            raise _guardrail(
                f"order total {total} exceeds the remaining budget {policy.budget_minor - budget.spent_minor}"
            )
    else:
        if a.promotion.location_gln != location:
            raise _invalid("the promotion's location must be the draft's")
        _check_promotion(state, a.promotion, policy)
    required = policy.approval_quorum if total >= policy.quorum_threshold_minor else 1
    draft = st.DraftRecord(
        draft=a,
        submitted_by=ctx.signer.agent_id,
        submitted_by_person=ctx.signer.person_id,
        submitted_height=ctx.height,
        submitted_unix_s=ctx.time_unix_s,
        expires_unix_s=ctx.time_unix_s + policy.draft_ttl_s,
        total_minor=total,
        approvals_required=required,
        status=st.DRAFT_STATUS_PENDING,
    )
    if has_lines and total < policy.auto_approve_below_minor:
        _approve(state, ctx, draft, policy)
    elif has_promotion and auto_applies(state, a.promotion, policy):
        _approve(state, ctx, draft, policy)
    write(state, "drafts", a.draft_id, draft)


def _approve(state: Overlay, ctx: TxContext, draft: st.DraftRecord, policy: txpb.GuardrailPolicy) -> None:
    if draft.total_minor:
        budget = _budget(state, policy, ctx.time_unix_s)
        if budget.spent_minor + draft.total_minor > policy.budget_minor:
            raise _guardrail("approving this draft would exceed the budget")
        budget.spent_minor += draft.total_minor
        write(state, "budgets", policy.organization_gln, budget)
    draft.status = st.DRAFT_STATUS_APPROVED
    if draft.draft.order_lines:
        issue_purchase_orders(state, ctx, draft)
    if draft.draft.HasField("promotion"):
        promotion = txpb.CreatePromotion()
        promotion.CopyFrom(draft.draft.promotion)
        promotion.draft_id = draft.draft.draft_id
        open_promotion(state, ctx, promotion, draft.submitted_by)


def _pending_draft(state: Overlay, ctx: TxContext, draft_id: str) -> st.DraftRecord:
    draft = read(state, "drafts", draft_id, st.DraftRecord)
    if draft is None:
        raise TxRejected(ResultCode.NOT_FOUND, f"draft {draft_id} does not exist")
    _same_org(ctx, draft.draft.organization_gln)
    if draft.status != st.DRAFT_STATUS_PENDING:
        raise TxRejected(ResultCode.FAILED_PRECONDITION, f"draft {draft_id} is {st.DraftStatus.Name(draft.status)}")
    if ctx.time_unix_s >= draft.expires_unix_s:
        raise TxRejected(ResultCode.FAILED_PRECONDITION, f"draft {draft_id} expired")
    return draft


def approve_draft(state: Overlay, ctx: TxContext, a: txpb.ApproveDraft) -> None:
    """Quorums count people: only PERSON agents approve, each person once, never the submitter."""
    draft = _pending_draft(state, ctx, a.draft_id)
    approver, person = ctx.signer.agent_id, ctx.signer.person_id
    if ctx.signer.kind != txpb.AGENT_KIND_PERSON or not person:
        raise _denied(f"{approver} is not bound to a person; only people approve drafts")
    if approver == draft.submitted_by or person == draft.submitted_by_person:
        raise _denied("the submitter of a draft cannot approve it")
    if person in draft.approver_persons:
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"person {person} already approved {a.draft_id}")
    approvers = sorted([*draft.approvers, approver])
    del draft.approvers[:]
    draft.approvers.extend(approvers)
    persons = sorted([*draft.approver_persons, person])
    del draft.approver_persons[:]
    draft.approver_persons.extend(persons)
    if len(persons) >= draft.approvals_required:
        policy = _policy(state, draft.draft.organization_gln)
        if policy is None:
            raise TxRejected(ResultCode.FAILED_PRECONDITION, "the guardrail policy is gone")
        # The limits in force now, not at submission: a tightened policy or a changed price binds.
        if draft.draft.HasField("promotion"):
            _check_promotion(state, draft.draft.promotion, policy)
        else:
            _order_total(state, draft.draft, policy)
        _approve(state, ctx, draft, policy)
    write(state, "drafts", a.draft_id, draft)


def reject_draft(state: Overlay, ctx: TxContext, a: txpb.RejectDraft) -> None:
    draft = _pending_draft(state, ctx, a.draft_id)
    draft.status = st.DRAFT_STATUS_REJECTED
    draft.rejected_by = ctx.signer.agent_id
    draft.reject_reason = _text(a.reason, "reason", 512, required=False)
    write(state, "drafts", a.draft_id, draft)
