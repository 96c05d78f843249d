"""The planner's Serve applications as a Ray cluster runs them (KubeRay's RayService, infra/k8s/):
import paths for ``serveConfigV2``, whose ``args`` are checked against the typed configs here.

``shelfproof.planner.cluster:llm_app`` takes ``LLMConfig`` fields (model folder, dtype, tensor
parallelism, max model length, ...); a key ``LLMConfig`` does not have is an error, not silently
ignored, so a misspelt engine argument in a manifest fails the deployment (and tests/unit). ``drafter_app``
takes ``urgent_lines``. Locally, ``start_local_llm`` and ``start_drafter`` run the same two applications.
"""

from __future__ import annotations

from typing import Any

from shelfproof.planner.llm import LLMConfig, build_llm_app


def llm_config_from_args(args: dict[str, Any]) -> LLMConfig:
    unknown = sorted(set(args) - set(LLMConfig.model_fields))
    if unknown:
        raise ValueError(f"not LLMConfig fields: {unknown}")
    return LLMConfig.model_validate(args)


def llm_app(args: dict[str, Any]):
    return build_llm_app(llm_config_from_args(args))


def drafter_app(args: dict[str, Any]):
    from shelfproof.planner.app import DrafterDeployment

    unknown = sorted(set(args) - {"urgent_lines"})
    if unknown:
        raise ValueError(f"unknown drafter arguments: {unknown}")
    return DrafterDeployment.bind(int(args.get("urgent_lines", 50)))
