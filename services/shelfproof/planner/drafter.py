"""Drafting: prompts from the policy's candidates, schema-constrained calls to the language model,
and the model's answers parsed into proposals. No data access: the planner service gathers the
inputs and bounds and commits the result; this part only talks to the model.

On Ray Serve it runs as the ``Drafter`` deployment and reaches the model through a deployment handle
(``ServeLanguageModel``); tests may give it any ``LanguageModel``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import jsonschema

from shelfproof.planner import prompts
from shelfproof.planner.guard import PriceFacts, RestockCandidate


@dataclass(frozen=True)
class EngineInfo:
    model: str
    weights_digest: str
    engine: str
    engine_version: str
    # The weights' number format the engine computed in (bfloat16 or float32 by CPU, see planner.llm):
    # greedy output depends on it, so replay must use the recorded one.
    dtype: str = ""


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters, recorded with every draft. Greedy by default, so a replay on the same engine
    can reproduce the output; the seed is recorded for engines that sample."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def canonical_json(self) -> str:
        return prompts.canonical_json(asdict(self)).decode()


@dataclass(frozen=True)
class Generation:
    text: str
    completion_tokens: int
    finish_reason: str


class LanguageModel(Protocol):
    async def info(self) -> EngineInfo: ...

    async def generate(self, messages: list[dict[str, str]], json_schema: dict, sampling: Sampling) -> Generation: ...


@dataclass
class ModelCall:
    """One request to the model and its answer, as the decision record keeps them."""

    messages: list[dict[str, str]]
    schema: str  # "restock" or "promotion"
    sampling: Sampling
    generation: Generation
    parsed: Any = None  # the JSON answer when it is valid against the schema
    error: str = ""


@dataclass
class DraftOutput:
    info: EngineInfo
    calls: list[ModelCall] = field(default_factory=list)

    @property
    def generated_tokens(self) -> int:
        return sum(c.generation.completion_tokens for c in self.calls)

    @property
    def schema_valid(self) -> int:
        return sum(1 for c in self.calls if c.parsed is not None)

    def prompt_document(self) -> bytes:
        return prompts.canonical_json([{"messages": c.messages, "schema": c.schema, "sampling": asdict(c.sampling)} for c in self.calls])

    def output_document(self) -> bytes:
        return prompts.canonical_json([asdict(c.generation) for c in self.calls])


SCHEMAS = {"restock": prompts.RESTOCK_SCHEMA, "promotion": prompts.PROMOTION_SCHEMA}
_VALIDATORS = {name: jsonschema.Draft202012Validator(schema) for name, schema in SCHEMAS.items()}


def parse(schema: str, text: str) -> tuple[Any, str]:
    """(the answer, "") when ``text`` is JSON valid against the schema, else (None, why)."""
    try:
        value = json.loads(text)
    except ValueError as err:
        return None, f"not JSON: {err}"
    problem = next(iter(_VALIDATORS[schema].iter_errors(value)), None)
    return (None, f"schema: {problem.message}") if problem else (value, "")


def schemas_sha256() -> str:
    return prompts.sha256_hex(prompts.canonical_json(SCHEMAS))


def template_sha256() -> str:
    """Everything that shapes a prompt: the system text, both templates, the line formats and how much
    of a name a line shows (a prompt cannot change while its recorded template hash stays the same)."""
    return prompts.sha256_hex(prompts.canonical_json([
        prompts.SYSTEM, prompts.RESTOCK_TEMPLATE, prompts.PROMOTION_TEMPLATE, prompts.RESTOCK_LINE, prompts.PROMOTION_LINE,
        prompts.LINE_NAME_CHARS, prompts.LINES_PER_REQUEST,
    ]))


# What a decision record names when the model was not asked (the planner's autonomous runs go on with
# the policy's quantities when the model is unavailable): no model, no weights, no prompt.
POLICY_ONLY = EngineInfo("none", hashlib.sha256(b"").hexdigest(), "policy-only", "1")


def _line(c: RestockCandidate) -> str:
    return prompts.RESTOCK_LINE.format(**{**asdict(c), "name": c.name[: prompts.LINE_NAME_CHARS]})


class Drafter:
    def __init__(self, llm: LanguageModel, *, urgent_lines: int = 50) -> None:
        self.llm = llm
        self.urgent_lines = urgent_lines

    async def _call(self, schema: str, user: str, max_tokens: int) -> ModelCall:
        messages = prompts.messages(user)
        sampling = Sampling(max_tokens=max_tokens)
        generation = await self.llm.generate(messages, SCHEMAS[schema], sampling)
        parsed, error = parse(schema, generation.text)
        return ModelCall(messages, schema, sampling, generation, parsed, error)

    async def restock(
        self, location_gln: str, candidates: list[RestockCandidate], budget_left_minor: int, currency: str
    ) -> tuple[DraftOutput, dict[str, tuple[int, str]]]:
        """The model's ``{gtin: (quantity, reason)}`` for the most urgent ordering lines."""
        ordering = sorted((c for c in candidates if c.quantity > 0), key=lambda c: -c.urgency)[: self.urgent_lines]
        chunks = [ordering[i : i + prompts.LINES_PER_REQUEST] for i in range(0, len(ordering), prompts.LINES_PER_REQUEST)]
        calls = await asyncio.gather(*(
            self._call(
                "restock",
                prompts.RESTOCK_TEMPLATE.format(
                    location=location_gln, budget_left=budget_left_minor, currency=currency, lines="\n".join(map(_line, chunk))
                ),
                prompts.RESTOCK_MAX_TOKENS,
            )
            for chunk in chunks
        ))
        proposals: dict[str, tuple[int, str]] = {}
        for call in calls:
            for line in (call.parsed or {}).get("lines", []):
                proposals.setdefault(line["gtin"], (int(line["quantity"]), line["reason"]))
        return DraftOutput(await self.llm.info(), list(calls)), proposals

    async def promotion(
        self, location_gln: str, products: list[PriceFacts], *, max_discount_bps: int, margin_floor_bps: int
    ) -> tuple[DraftOutput, dict | None]:
        listing = "\n".join(
            prompts.PROMOTION_LINE.format(**{**asdict(p), "name": p.name[: prompts.LINE_NAME_CHARS]}) for p in products[:20]
        )
        call = await self._call(
            "promotion",
            prompts.PROMOTION_TEMPLATE.format(
                location=location_gln, max_discount_bps=max_discount_bps, margin_floor_bps=margin_floor_bps, products=listing
            ),
            prompts.PROMOTION_MAX_TOKENS,
        )
        return DraftOutput(await self.llm.info(), [call]), call.parsed
