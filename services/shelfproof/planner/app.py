"""The planner on Ray Serve: the model application (``llm.py``: ``LLMServer`` behind an OpenAI-compatible
ingress) and the drafting application, whose ``Drafter`` deployment builds prompts from the policy's
candidates and calls ``LLMServer`` through a deployment handle. The gRPC service reaches the drafter
through its handle too (``ServeDrafter``).
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from shelfproof.planner.drafter import Drafter, EngineInfo, Generation, Sampling
from shelfproof.planner.guard import PriceFacts, RestockCandidate
from shelfproof.planner.llm import APP_NAME as LLM_APP

DRAFTER_APP = "planner-drafter"


class EngineModel:
    """The drafter's ``LanguageModel`` over the engine: an ``LLMServer`` handle (``via_handle``) or a bare
    ``LanguageEngine`` (replay, the benchmark's baseline)."""

    def __init__(self, target: Any, *, via_handle: bool) -> None:
        self.target = target
        self.via_handle = via_handle
        self._info: EngineInfo | None = None

    async def _call(self, method: str, *args: Any) -> Any:
        if self.via_handle:
            return await getattr(self.target, method).remote(*args)
        result = getattr(self.target, method)(*args)
        return await result if hasattr(result, "__await__") else result

    async def info(self) -> EngineInfo:
        if self._info is None:
            d = await self._call("info")
            # The ledger records bare hex digests.
            self._info = EngineInfo(
                d["model"], d["weights_digest"].removeprefix("sha256:"), d["engine"], d["engine_version"], d.get("dtype", "")
            )
        return self._info

    async def generate(self, messages: list[dict[str, str]], json_schema: dict, sampling: Sampling) -> Generation:
        sampled = {"max_tokens": sampling.max_tokens, "temperature": sampling.temperature, "top_p": sampling.top_p, "seed": sampling.seed}
        answer = await self._call("generate", messages, json_schema, sampled)
        return Generation(answer["text"], int(answer["completion_tokens"]), answer["finish_reason"])


@serve.deployment(name="Drafter", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=32, graceful_shutdown_wait_loop_s=0.5)
class DrafterDeployment:
    def __init__(self, urgent_lines: int = 50) -> None:
        llm = serve.get_deployment_handle("LLMServer", app_name=LLM_APP)
        self.drafter = Drafter(EngineModel(llm, via_handle=True), urgent_lines=urgent_lines)

    async def restock(self, location_gln: str, candidates: list[RestockCandidate], budget_left_minor: int, currency: str):
        return await self.drafter.restock(location_gln, candidates, budget_left_minor, currency)

    async def promotion(self, location_gln: str, products: list[PriceFacts], *, max_discount_bps: int, margin_floor_bps: int):
        return await self.drafter.promotion(location_gln, products, max_discount_bps=max_discount_bps, margin_floor_bps=margin_floor_bps)


class ServeDrafter:
    """The planner service's drafting backend: the ``Drafter`` deployment through its handle."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self.handle = handle

    async def restock(self, location_gln: str, candidates: list[RestockCandidate], budget_left_minor: int, currency: str):
        return await self.handle.restock.remote(location_gln, candidates, budget_left_minor, currency)

    async def promotion(self, location_gln: str, products: list[PriceFacts], *, max_discount_bps: int, margin_floor_bps: int):
        return await self.handle.promotion.remote(location_gln, products, max_discount_bps=max_discount_bps, margin_floor_bps=margin_floor_bps)


def start_drafter(urgent_lines: int = 50) -> ServeDrafter:
    """Run the drafting application next to the model application (already started); no HTTP route."""
    serve.run(DrafterDeployment.bind(urgent_lines), name=DRAFTER_APP, route_prefix=None)
    return served_drafter()


def served_drafter() -> ServeDrafter:
    """The drafting application already running on the connected Ray (a planner's, from another driver)."""
    return ServeDrafter(serve.get_deployment_handle("Drafter", app_name=DRAFTER_APP))
