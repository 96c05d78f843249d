"""The planner's gRPC service over the real ledger and PostgreSQL, with a scripted model standing in
for vLLM (tests/e2e/test_planner_llm.py runs the real engine): quantities from the forecast and
policy, bounds over the model's proposals, a complete decision record, approval by people."""

from __future__ import annotations

import asyncio
import hashlib
import json

import grpc
import pytest

from shelfproof.ledger.v1 import ledger_pb2 as lpb
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.planner.drafter import Drafter, EngineInfo, Generation, schemas_sha256, template_sha256
from shelfproof.planner.v1 import planner_pb2 as pb
from tests.integration.planner_harness import RETAILER, STORE, PlannerStack, policy

pytestmark = pytest.mark.integration


class ScriptedModel:
    """Proposes absurd quantities and discounts, so the bounds are what decides (a fake: see module doc)."""

    async def info(self) -> EngineInfo:
        return EngineInfo("scripted", "a" * 64, "scripted", "1")

    async def generate(self, messages, json_schema, sampling) -> Generation:
        prompt = messages[-1]["content"]
        if "promotion" in prompt:
            gtins = [line.split(",")[0] for line in prompt.splitlines() if line[:1].isdigit() and "," in line][:3]
            answer = {"gtins": gtins, "discount_bps": 9500, "start_in_days": 1, "duration_days": 7,
                      "customer_copy": "Everything must go", "rationale": "slow movers"}
        else:
            gtins = [line.split(",")[0] for line in prompt.splitlines() if line[:1].isdigit() and "," in line]
            answer = {"lines": [{"gtin": g, "quantity": 10_000 if n % 2 else 7, "reason": "demand is steady"} for n, g in enumerate(gtins)]}
        return Generation(json.dumps(answer), 40, "stop")


async def _decide(stack: PlannerStack, who: int | str, draft_id: str, approve: bool = True) -> bytes:
    """A person's approval (or rejection), signed with that person's key and next nonce."""
    body = (
        txpb.TransactionBody(approve_draft=txpb.ApproveDraft(draft_id=draft_id)) if approve
        else txpb.TransactionBody(reject_draft=txpb.RejectDraft(draft_id=draft_id, reason="not now"))
    )
    # An int is a service agent (admin-N); "person-N" is a person signing with an approvals key.
    signer = stack.signer(RETAILER, who) if isinstance(who, int) else stack.person(RETAILER, int(who.rsplit("-", 1)[1]))
    agent = await stack.ledger.Query(lpb.QueryRequest(store="agents", key=signer.agent_id.encode()), timeout=5)
    signer.next_nonce = st.AgentRecord.FromString(agent.value).nonce + 1
    return signer.sign(body)


async def _content(stack: PlannerStack, digest_hex: str) -> bytes:
    reply = await stack.ledger.GetContent(lpb.GetContentRequest(sha256=bytes.fromhex(digest_hex)), timeout=10)
    assert hashlib.sha256(reply.content).hexdigest() == digest_hex
    return reply.content


async def test_restock_is_bounded_recorded_and_approved_by_a_quorum(tmp_path, database_dsn):
    async with PlannerStack(tmp_path, database_dsn, Drafter(ScriptedModel())) as stack:
        await stack.set_up_store()
        reply = await stack.stub.DraftRestock(pb.DraftRestockRequest(location_gln=STORE, request_id="r1"), timeout=60)
        draft = reply.draft
        assert draft.kind == pb.DRAFT_KIND_RESTOCK_ORDER and draft.order_lines
        bounds = {i: (12, 600, 6) for i in stack.gtins}
        for line in draft.order_lines:  # whatever the model said, every line is orderable
            low, high, pack = bounds[line.gtin]
            assert low <= line.quantity <= high and line.quantity % pack == 0
        assert draft.adjustments and any("10000" in a for a in draft.adjustments)
        assert draft.total.amount_minor == sum(l.quantity * l.unit_cost.amount_minor for l in draft.order_lines)

        # The decision record on the ledger is complete and its hashes check against the content store.
        record = st.DraftRecord.FromString((await stack.ledger.Query(lpb.QueryRequest(store="drafts", key=draft.draft_id.encode()), timeout=5)).value)
        dr = record.draft.decision_record
        assert (dr.model, dr.engine, dr.weights_digest) == ("scripted", "scripted", "a" * 64)
        assert dr.json_schema_sha256 == schemas_sha256() and dr.prompt_template_sha256 == template_sha256()
        prompts_doc = json.loads(await _content(stack, dr.prompt_sha256))
        snapshot = json.loads(await _content(stack, dr.input_snapshot_sha256))
        outputs = json.loads(await _content(stack, dr.output_sha256))
        assert len(prompts_doc) == len(outputs) >= 1 and prompts_doc[0]["schema"] == "restock"
        assert {c["gtin"] for c in snapshot["candidates"]} == set(stack.gtins)
        assert json.loads(dr.sampling_params_json)["temperature"] == 0.0
        assert draft.decision_record_hash == hashlib.sha256(dr.SerializeToString(deterministic=True)).hexdigest()

        # A retry with the same request id finds the same draft.
        again = await stack.stub.DraftRestock(pb.DraftRestockRequest(location_gln=STORE, request_id="r1"), timeout=60)
        assert again.draft.draft_id == draft.draft_id

        # Above the quorum threshold: two people approve; the submitter cannot.
        if draft.total.amount_minor >= policy().quorum_threshold_minor:
            assert draft.approvals_required == 2
        waiting = await stack.stub.ListDrafts(pb.ListDraftsRequest(approver_agent_id=f"{RETAILER}/person-0"), timeout=10)
        assert [d.draft_id for d in waiting.drafts] == [draft.draft_id]
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stack.stub.ApproveDraft(pb.ApproveDraftRequest(draft_id=draft.draft_id, signed_transaction=await _decide(stack, 1, draft.draft_id)), timeout=20)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as wrong:  # a signed approval of another draft is refused here
            await stack.stub.ApproveDraft(pb.ApproveDraftRequest(draft_id=draft.draft_id, signed_transaction=await _decide(stack, "person-0", "other")), timeout=20)
        assert wrong.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        first = await stack.stub.ApproveDraft(pb.ApproveDraftRequest(draft_id=draft.draft_id, signed_transaction=await _decide(stack, "person-0", draft.draft_id)), timeout=20)
        expected = pb.DRAFT_STATE_PENDING_APPROVAL if draft.approvals_required == 2 else pb.DRAFT_STATE_APPROVED
        assert first.draft.state == expected and list(first.draft.approvers) == [f"{RETAILER}/person-0"]
        if expected == pb.DRAFT_STATE_PENDING_APPROVAL:
            second = await stack.stub.ApproveDraft(pb.ApproveDraftRequest(draft_id=draft.draft_id, signed_transaction=await _decide(stack, "person-1", draft.draft_id)), timeout=20)
            assert second.draft.state == pb.DRAFT_STATE_APPROVED
        approved = await stack.stub.ListDrafts(pb.ListDraftsRequest(state=pb.DRAFT_STATE_APPROVED), timeout=10)
        assert draft.draft_id in [d.draft_id for d in approved.drafts]
        assert not (await stack.stub.ListDrafts(pb.ListDraftsRequest(approver_agent_id=f"{RETAILER}/person-0"), timeout=10)).drafts


async def test_small_drafts_are_approved_on_submission(tmp_path, database_dsn):
    async with PlannerStack(tmp_path, database_dsn, Drafter(ScriptedModel()), products=2) as stack:
        await stack.set_up_store(policy(auto_approve_below_minor=10_000_000, draft_ttl_s=2))
        small = (await stack.stub.DraftRestock(pb.DraftRestockRequest(location_gln=STORE), timeout=60)).draft
        assert small.state == pb.DRAFT_STATE_APPROVED and small.approvals_required == 1 and not small.approvers


async def test_drafts_are_rejected_or_expire(tmp_path, database_dsn):
    async with PlannerStack(tmp_path, database_dsn, Drafter(ScriptedModel()), products=2) as stack:
        await stack.set_up_store(policy(auto_approve_below_minor=0, draft_ttl_s=3))
        rejected = (await stack.stub.DraftRestock(pb.DraftRestockRequest(location_gln=STORE, request_id="a"), timeout=60)).draft
        reply = await stack.stub.RejectDraft(pb.RejectDraftRequest(draft_id=rejected.draft_id, signed_transaction=await _decide(stack, "person-0", rejected.draft_id, approve=False)), timeout=20)
        assert reply.draft.state == pb.DRAFT_STATE_REJECTED
        expiring = (await stack.stub.DraftRestock(pb.DraftRestockRequest(location_gln=STORE, request_id="b"), timeout=60)).draft
        assert expiring.state == pb.DRAFT_STATE_PENDING_APPROVAL
        await asyncio.sleep(3.5)
        assert (await stack.stub.GetDraft(pb.GetDraftRequest(draft_id=expiring.draft_id), timeout=5)).draft.state == pb.DRAFT_STATE_EXPIRED
        expired = await stack.stub.ListDrafts(pb.ListDraftsRequest(state=pb.DRAFT_STATE_EXPIRED), timeout=10)
        assert [d.draft_id for d in expired.drafts] == [expiring.draft_id]
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await stack.stub.ApproveDraft(pb.ApproveDraftRequest(draft_id=expiring.draft_id, signed_transaction=await _decide(stack, "person-0", expiring.draft_id)), timeout=20)
        assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_promotion_discount_is_cut_to_the_margin_floor_and_approval_creates_it(tmp_path, database_dsn):
    async with PlannerStack(tmp_path, database_dsn, Drafter(ScriptedModel()), products=4) as stack:
        await stack.set_up_store(policy(auto_approve_below_minor=0))
        draft = (await stack.stub.DraftPromotion(pb.DraftPromotionRequest(location_gln=STORE), timeout=60)).draft
        terms = draft.promotion
        assert draft.kind == pb.DRAFT_KIND_PROMOTION and 1 <= terms.discount_bps <= 3000 and terms.gtins
        assert any("9500" in a for a in draft.adjustments)
        assert terms.customer_copy == "Everything must go" and terms.end_time.seconds > terms.start_time.seconds
        approved = await stack.stub.ApproveDraft(pb.ApproveDraftRequest(draft_id=draft.draft_id, signed_transaction=await _decide(stack, "person-0", draft.draft_id)), timeout=20)
        assert approved.draft.state == pb.DRAFT_STATE_APPROVED
        promotion = await stack.ledger.Query(lpb.QueryRequest(store="promotions", key=draft.draft_id.encode()), timeout=5)
        assert st.PromotionRecord.FromString(promotion.value).promotion.draft_id == draft.draft_id


async def test_bad_requests_get_clear_statuses(tmp_path, database_dsn):
    async with PlannerStack(tmp_path, database_dsn, Drafter(ScriptedModel()), products=2) as stack:
        cases = [
            (stack.stub.DraftRestock(pb.DraftRestockRequest(location_gln="123"), timeout=10), grpc.StatusCode.INVALID_ARGUMENT),
            (stack.stub.DraftRestock(pb.DraftRestockRequest(location_gln=STORE), timeout=10), grpc.StatusCode.FAILED_PRECONDITION),
            (stack.stub.GetDraft(pb.GetDraftRequest(draft_id="nope"), timeout=10), grpc.StatusCode.NOT_FOUND),
            (stack.stub.ApproveDraft(pb.ApproveDraftRequest(draft_id="x", signed_transaction=b"\x01junk"), timeout=10), grpc.StatusCode.INVALID_ARGUMENT),
            (stack.stub.ListDrafts(pb.ListDraftsRequest(page_token="%%%"), timeout=10), grpc.StatusCode.INVALID_ARGUMENT),
        ]
        for pending, code in cases:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await pending
            assert caught.value.code() == code, caught.value.details()


async def test_replay_reproduces_the_recorded_output_and_notices_a_different_one(tmp_path, database_dsn):
    from shelfproof.planner.replay import replay

    async with PlannerStack(tmp_path, database_dsn, Drafter(ScriptedModel()), products=3) as stack:
        await stack.set_up_store()
        draft = (await stack.stub.DraftRestock(pb.DraftRestockRequest(location_gln=STORE), timeout=60)).draft
        same = await replay(stack.ledger, draft.draft_id, ScriptedModel())
        assert same["output_matches"] and same["same_engine"] and same["calls"] >= 1

        class Drifted(ScriptedModel):
            async def generate(self, messages, json_schema, sampling):
                generation = await super().generate(messages, json_schema, sampling)
                return Generation(generation.text.replace("steady", "sTeady"), generation.completion_tokens, "stop")

        drifted = await replay(stack.ledger, draft.draft_id, Drifted())
        assert not drifted["output_matches"] and drifted["recorded_output_sha256"] == same["recorded_output_sha256"]
